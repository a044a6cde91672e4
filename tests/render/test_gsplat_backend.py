"""The gsplat backend's mapping, checked on the CPU with a stand-in for ``gsplat.rasterization``.

gsplat's rasteriser only runs on CUDA, so these tests replace it with a recorder that returns
tensors of gsplat's shapes (differentiable in its inputs) and check what our backend passes in and
how it unpacks what comes out. The keyword names are also bound against the real signature.
"""

import inspect
import math

import pytest
import torch

from psd_gs.scene.cameras import make_cameras
from psd_gs.scene.gaussians import GaussianScene, num_sh_bases
from psd_gs.render import Render, gsplat_backend, rasterize
from psd_gs.render.gsplat_backend import rasterize_gsplat

W, H = 12, 8
RGB_VALUES = (0.1, 0.2, 0.3)
DEPTH_VALUE = 2.5
ALPHA_VALUE = 0.75


class FakeRasterization:
    """Records its keyword arguments; returns ([C,H,W,4], [C,H,W,1], info) like gsplat (packed=False).

    Every output value is fixed (RGB_VALUES, DEPTH_VALUE, ALPHA_VALUE) but carries a gradient of 1
    toward every element of every float input, via ``s - s.detach()`` (exactly 0 in value).
    """

    def __init__(self):
        self.kwargs = None

    def __call__(self, means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kwargs):
        self.kwargs = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
                           viewmats=viewmats, Ks=Ks, width=width, height=height, **kwargs)
        C, N = viewmats.shape[0], means.shape[0]
        s = means.sum() + quats.sum() + scales.sum() + opacities.sum() + colors.sum()
        zero_with_grad = s - s.detach()
        out = torch.tensor([*RGB_VALUES, DEPTH_VALUE]).expand(C, height, width, 4) + zero_with_grad
        alphas = torch.full((C, height, width, 1), ALPHA_VALUE) + zero_with_grad
        means2d = means[None, :, :2].expand(C, N, 2) * 1.0
        info = {
            "batch_ids": None, "camera_ids": None, "gaussian_ids": None,
            "radii": torch.ones(C, N, 2, dtype=torch.int32), "means2d": means2d,
            "depths": torch.ones(C, N), "conics": torch.ones(C, N, 3), "opacities": opacities.expand(C, N),
            "tile_width": math.ceil(width / 16), "tile_height": math.ceil(height / 16),
            "width": width, "height": height, "tile_size": 16, "n_batches": 1, "n_cameras": C,
        }
        return out, alphas, info


@pytest.fixture
def fake(monkeypatch) -> FakeRasterization:
    f = FakeRasterization()
    monkeypatch.setattr(gsplat_backend, "_gsplat_rasterization", lambda: f)
    return f


def _scene(generator, n=7, sh_degree=0) -> GaussianScene:
    s = GaussianScene.random(n, sh_degree=sh_degree, generator=generator)
    with torch.no_grad():  # distinct values everywhere, so a swapped or unactivated tensor shows
        for p in s.params.values():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return s


def _cams(n=2):
    return make_cameras(elevation=[10.0, 30.0][:n], azimuth=[0.0, 90.0][:n], radius=2.5, fovy=49.1,
                        width=W, height=H)


@pytest.mark.parametrize("sh_degree", [0, 1, 2, 3])
def test_scene_is_passed_activated(fake, generator, sh_degree):
    scene = _scene(generator, sh_degree=sh_degree)
    rasterize_gsplat(scene, _cams())
    kw = fake.kwargs
    assert kw["means"] is scene.params["means"]
    assert kw["quats"] is scene.params["quats"]  # raw: gsplat normalises internally
    torch.testing.assert_close(kw["scales"], torch.exp(scene.params["scales"]), rtol=0, atol=0)
    torch.testing.assert_close(kw["opacities"], torch.sigmoid(scene.params["opacities"]), rtol=0, atol=0)
    assert kw["colors"].shape == (len(scene), num_sh_bases(sh_degree), 3)
    torch.testing.assert_close(kw["colors"][:, :1], scene.params["sh0"], rtol=0, atol=0)
    torch.testing.assert_close(kw["colors"][:, 1:], scene.params["shN"], rtol=0, atol=0)
    assert kw["sh_degree"] == sh_degree


def test_cameras_and_fixed_options_forwarded(fake, generator):
    cams = _cams()
    rasterize_gsplat(_scene(generator), cams)
    kw = fake.kwargs
    assert kw["viewmats"] is cams.viewmats and kw["Ks"] is cams.Ks  # same device and dtype: no copy
    assert (kw["width"], kw["height"]) == (W, H)
    assert kw["render_mode"] == "RGB+ED"
    assert kw["packed"] is False
    assert kw["rasterize_mode"] == "classic"
    assert kw["eps2d"] == 0.3
    assert kw["near_plane"] == 0.01


def test_keywords_bind_to_the_real_gsplat_signature(fake, generator):
    from gsplat.rendering import rasterization

    rasterize_gsplat(_scene(generator), _cams())
    inspect.signature(rasterization).bind(**fake.kwargs)  # raises TypeError on a misspelt name


@pytest.mark.parametrize(
    "background, expected",
    [
        (None, [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
        (0.5, [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]),
        (torch.tensor([0.1, 0.2, 0.3]), [[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]]),
        (torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    ],
)
def test_background_is_forwarded_as_b_by_3(fake, generator, background, expected):
    rasterize_gsplat(_scene(generator), _cams(), background)
    bg = fake.kwargs["backgrounds"]
    assert bg.shape == (2, 3) and bg.dtype == torch.float32
    torch.testing.assert_close(bg, torch.tensor(expected))


def test_output_is_split_into_rgb_depth_alpha(fake, generator):
    out = rasterize_gsplat(_scene(generator), _cams())
    assert isinstance(out, Render)
    assert out.rgb.shape == (2, H, W, 3)
    assert out.depth.shape == (2, H, W, 1)
    assert out.alpha.shape == (2, H, W, 1)
    torch.testing.assert_close(out.rgb, torch.tensor(RGB_VALUES).expand(2, H, W, 3))
    torch.testing.assert_close(out.depth, torch.full((2, H, W, 1), DEPTH_VALUE))
    torch.testing.assert_close(out.alpha, torch.full((2, H, W, 1), ALPHA_VALUE))


def test_info_is_gsplats_with_the_strategy_keys(fake, generator):
    scene = _scene(generator)
    info = rasterize_gsplat(scene, _cams()).info
    for key in ("means2d", "radii", "width", "height", "n_cameras", "gaussian_ids", "depths"):
        assert key in info, key
    assert info["means2d"].shape == (2, len(scene), 2)
    assert info["radii"].shape == (2, len(scene), 2)
    assert (info["width"], info["height"], info["n_cameras"]) == (W, H, 2)
    assert info["gaussian_ids"] is None
    assert "tile_size" in info  # the rest of gsplat's dict passes through


def test_missing_info_keys_are_filled(monkeypatch, fake, generator):
    def sparse_info(*args, **kwargs):
        out, alphas, info = fake(*args, **kwargs)
        return out, alphas, {"means2d": info["means2d"], "radii": info["radii"]}

    monkeypatch.setattr(gsplat_backend, "_gsplat_rasterization", lambda: sparse_info)
    info = rasterize_gsplat(_scene(generator), _cams()).info
    assert (info["width"], info["height"], info["n_cameras"], info["gaussian_ids"]) == (W, H, 2, None)


def test_gradient_flows_through_the_mapping(fake, generator):
    scene = _scene(generator, sh_degree=1)
    out = rasterize_gsplat(scene, _cams())
    (out.rgb.sum() + out.depth.sum() + out.alpha.sum()).backward()
    # d(sum of outputs)/d(each gsplat input element) = number of output elements
    n_out = 2 * H * W * 5
    p = scene.params
    torch.testing.assert_close(p["means"].grad, torch.full_like(p["means"], n_out))
    torch.testing.assert_close(p["quats"].grad, torch.full_like(p["quats"], n_out))
    torch.testing.assert_close(p["scales"].grad, n_out * torch.exp(p["scales"].detach()))
    sig = torch.sigmoid(p["opacities"].detach())
    torch.testing.assert_close(p["opacities"].grad, n_out * sig * (1 - sig))
    torch.testing.assert_close(p["sh0"].grad, torch.full_like(p["sh0"], n_out))
    torch.testing.assert_close(p["shN"].grad, torch.full_like(p["shN"], n_out))


def test_rasterize_dispatches_cuda_scenes_to_gsplat(monkeypatch, generator):
    seen = []

    def stand_in(scene, cameras, background=None):
        seen.append((scene, cameras, background))
        return "gsplat"

    monkeypatch.setattr(gsplat_backend, "rasterize_gsplat", stand_in)
    monkeypatch.setattr(gsplat_backend, "kernels_status", lambda: (True, "fake kernels"))
    monkeypatch.setattr(GaussianScene, "device", property(lambda self: torch.device("cuda", 0)))
    scene, cams = _scene(generator), _cams()
    assert rasterize(scene, cams, 0.5) == "gsplat"
    assert seen == [(scene, cams, 0.5)]


def test_cuda_scenes_fall_back_to_the_torch_rasteriser_without_gsplat_kernels(monkeypatch, generator):
    """gsplat 1.5.3 without a CUDA toolkit leaves its extension None; rendering must not reach it."""
    import psd_gs.render as render_pkg
    from psd_gs.render import renderer_status, torch_backend

    calls = []
    monkeypatch.setattr(render_pkg, "_warned", set())
    monkeypatch.setattr(gsplat_backend, "kernels_status", lambda: (False, "no CUDA toolkit (fake)"))
    monkeypatch.setattr(gsplat_backend, "rasterize_gsplat", lambda *a: calls.append("gsplat"))
    monkeypatch.setattr(torch_backend, "rasterize_torch", lambda *a: calls.append("torch") or "torch")
    monkeypatch.setattr(GaussianScene, "device", property(lambda self: torch.device("cuda", 0)))
    scene, cams = _scene(generator), _cams()
    with pytest.warns(RuntimeWarning, match="PyTorch rasteriser.*no CUDA toolkit") as warned:
        assert rasterize(scene, cams, 1.0) == "torch"
        assert rasterize(scene, cams, 1.0) == "torch"
    assert calls == ["torch", "torch"] and len(warned) == 1  # warned once, gsplat never called
    status = renderer_status(torch.device("cuda", 0))
    assert "fallback" in status and "no CUDA toolkit (fake)" in status
    assert renderer_status(torch.device("cpu")) == "PyTorch rasteriser on the CPU"


def test_kernels_status_reports_a_disabled_gsplat(monkeypatch):
    """The real check against gsplat's module: ``_C is None`` (gsplat disabled itself) and a failed build."""
    import sys
    import types

    gsplat_backend.kernels_status.cache_clear()
    monkeypatch.setitem(sys.modules, "gsplat.cuda._backend", types.SimpleNamespace(_C=None))
    ok, why = gsplat_backend.kernels_status()
    assert not ok and "no CUDA toolkit" in why
    gsplat_backend.kernels_status.cache_clear()

    class Broken(types.ModuleType):
        def __getattr__(self, name):
            raise RuntimeError("Error building extension 'gsplat_cuda'")

    monkeypatch.setitem(sys.modules, "gsplat.cuda._backend", Broken("gsplat.cuda._backend"))
    ok, why = gsplat_backend.kernels_status()
    assert not ok and "failed to build or load" in why and "gsplat_cuda" in why
    gsplat_backend.kernels_status.cache_clear()
