"""The CPU rasteriser against a float64 brute-force reference and gsplat's own torch functions."""

import math

import pytest
import torch
import torch.nn.functional as F
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci, _spherical_harmonics

from psd_gs.scene.cameras import make_cameras, sample_orbit
from psd_gs.scene.gaussians import PARAM_NAMES, GaussianScene
from psd_gs.render import rasterize
from psd_gs.render.projection import project
from psd_gs.render.reference import rasterize_reference
from psd_gs.render.torch_backend import rasterize_torch


def random_scene(n, degree, generator, dtype=torch.float64, radius=0.6):
    """A scene with non-trivial rotations, anisotropic scales, opacities over the full range, SH."""
    scene = GaussianScene.random(n, radius=radius, sh_degree=degree, generator=generator, dtype=dtype)
    with torch.no_grad():
        scene.params["quats"].copy_(torch.randn(n, 4, generator=generator, dtype=dtype))
        scene.params["scales"].add_(0.6 * torch.randn(n, 3, generator=generator, dtype=dtype))
        scene.params["opacities"].copy_(3.0 * torch.randn(n, generator=generator, dtype=dtype))
        scene.params["shN"].copy_(0.3 * torch.randn(scene.shN.shape, generator=generator, dtype=dtype))
    return scene


def with_tensors(scene, tensors):
    """A scene whose raw tensors are ``tensors`` themselves (not copies), so autograd sees through it."""
    out = GaussianScene.__new__(GaussianScene)
    out.sh_degree = scene.sh_degree
    out.params = dict(zip(PARAM_NAMES, tensors))
    return out


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_matches_brute_force_reference(degree, generator):
    scene = random_scene(300, degree, generator)
    cams = sample_orbit(3, 40, 32, radius=(1.8, 3.0), generator=generator, dtype=torch.float64)
    bg = torch.tensor([[0.2, 0.3, 0.4], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    ours, ref = rasterize_torch(scene, cams, bg), rasterize_reference(scene, cams, bg)
    assert ours.info["n_pairs"] > 5000 and ref.alpha.max() > 0.9  # a real, overlapping image
    for name in ("rgb", "alpha", "depth"):
        assert torch.allclose(getattr(ours, name), getattr(ref, name), atol=1e-5, rtol=0), name


def test_float32_scene_matches_float64_reference(generator):
    scene = random_scene(400, 1, generator)
    cams = sample_orbit(2, 48, 48, generator=generator, dtype=torch.float64)
    ref = rasterize_reference(scene, cams, 0.5)
    ours = rasterize_torch(scene.to("cpu", torch.float32), cams.to("cpu", torch.float32), 0.5)
    for name in ("rgb", "alpha"):
        assert (getattr(ours, name).double() - getattr(ref, name)).abs().max() < 1e-5, name
    assert (ours.depth.double() - ref.depth).abs().max() < 1e-4  # depths ~2.5, float32 eps ~ 2e-7 relative


def test_opaque_pixels_stop_at_transmittance_cutoff():
    # Ten opaque Gaussians stacked along the view axis: compositing stops before T <= 1e-4, so the
    # far ones (red) never show and alpha stays 1 - (1 - 0.999)^k for the first k that fit.
    n = 10
    means = torch.zeros(n, 3, dtype=torch.float64)
    means[:, 2] = torch.linspace(0.5, -0.5, n, dtype=torch.float64)  # front (nearer +z camera) first
    sh0 = torch.zeros(n, 1, 3, dtype=torch.float64)
    sh0[5:, 0, 0] = 1.0 / 0.28209479177387814  # back half red-ish
    scene = GaussianScene(means, torch.tensor([[1.0, 0, 0, 0]] * n, dtype=torch.float64),
                          torch.full((n, 3), math.log(0.3), dtype=torch.float64),
                          torch.full((n,), 20.0, dtype=torch.float64), sh0)
    cams = make_cameras(0.0, 0.0, 3.0, 40.0, 9, 9, dtype=torch.float64)
    r = rasterize_torch(scene, cams, 0.0)
    centre = r.rgb[0, 4, 4]
    assert torch.allclose(centre, torch.full((3,), 0.5, dtype=torch.float64), atol=1e-3)  # grey front only
    assert abs(r.alpha[0, 4, 4, 0].item() - (1 - 0.001 ** 1)) < 1e-9  # one Gaussian, then T=1e-3; next would cut


def test_projection_and_sh_match_gsplat_torch_impl(generator):
    scene = random_scene(200, 3, generator)
    cams = sample_orbit(4, 64, 48, elevation=(-30, 80), radius=(1.2, 3.0), fovy=(30, 70),
                        generator=generator, dtype=torch.float64)
    p = project(scene, cams)
    covars, _ = _quat_scale_to_covar_preci(scene.quats, scene.scales, compute_covar=True, compute_preci=False,
                                           triu=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(scene.means, covars, cams.viewmats, cams.Ks, 64, 48)
    assert torch.allclose(p.means2d, means2d, atol=1e-9)
    assert torch.allclose(p.depths, depths, atol=1e-12)
    assert torch.allclose(p.conics, conics, rtol=1e-7, atol=1e-9)
    # radii: gsplat's CUDA kernel (ProjectionEWA3DGSFused.cu) shrinks the torch impl's 3.33-sigma box to
    # the alpha >= 1/255 ellipse's box, and culls opacity < 1/255; rebuild that from the torch impl's output
    o = scene.opacities.expand(4, -1)
    extend = torch.sqrt(2 * torch.log((255 * o).clamp_min(1.0))).clamp_max(3.33)
    cov_diag = torch.stack([conics[..., 2], conics[..., 0]], -1) / (conics[..., 0] * conics[..., 2] - conics[..., 1] ** 2)[..., None]
    box = torch.ceil(extend[..., None] * cov_diag.sqrt())
    inside = ((means2d + box > 0) & (means2d - box < torch.tensor([64.0, 48.0], dtype=torch.float64))).all(-1)
    expected = torch.where(((radii > 0).all(-1) & inside & (o >= 1 / 255))[..., None], box, 0).int()
    assert torch.equal(p.radii, expected)
    assert ((p.radii > 0).all(-1) & (radii > 0).all(-1) & (p.radii < radii).any(-1)).any()  # the rule matters
    assert ((p.radii == 0).all(-1) & (radii > 0).all(-1)).any()  # faint Gaussians culled
    dirs = scene.means[None] - cams.centers[:, None]
    for degree in range(4):
        theirs = _spherical_harmonics(degree, dirs, scene.sh.expand(4, -1, -1, -1))
        from psd_gs.render.projection import sh_basis
        ours = torch.einsum("cnk,nkd->cnd", sh_basis(F.normalize(dirs, dim=-1), degree),
                            scene.sh[:, : (degree + 1) ** 2])
        assert torch.allclose(ours, theirs, atol=1e-12), degree
    assert torch.allclose(p.colors, torch.clamp_min(theirs + 0.5, 0.0), atol=1e-12)


def test_near_plane_and_offscreen_gaussians_are_culled():
    means = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 3.0], [50.0, 0.0, 0.0]], dtype=torch.float64)
    scene = GaussianScene(means, torch.tensor([[1.0, 0, 0, 0]] * 3, dtype=torch.float64),
                          torch.full((3, 3), math.log(0.05), dtype=torch.float64),
                          torch.zeros(3, dtype=torch.float64), torch.zeros(3, 1, 3, dtype=torch.float64))
    cams = make_cameras(0.0, 0.0, 2.5, 50.0, 16, 16, dtype=torch.float64)  # Gaussian 1 is behind
    r = rasterize_torch(scene, cams)
    assert r.info["radii"][0, 0].min() > 0
    assert (r.info["radii"][0, 1:] == 0).all()


def test_gradcheck_tiny_float64_scene(generator):
    scene = random_scene(6, 1, generator, radius=0.4)
    with torch.no_grad():
        scene.params["opacities"].copy_(torch.linspace(-1.0, 2.0, 6, dtype=torch.float64))
        scene.params["scales"].copy_(torch.log(torch.full((6, 3), 0.15, dtype=torch.float64))
                                     + 0.3 * torch.randn(6, 3, generator=generator, dtype=torch.float64))
    cams = sample_orbit(2, 10, 8, generator=generator, dtype=torch.float64)
    inputs = [scene.params[k].detach().clone().requires_grad_(True) for k in PARAM_NAMES]

    def render(*tensors):
        r = rasterize_torch(with_tensors(scene, tensors), cams, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64),
                            retain_means2d_grad=False)
        return r.rgb, r.alpha, r.depth

    assert render(*inputs)[1].max() > 0.3
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-5)


def test_gradients_reach_every_parameter_and_means2d(generator):
    scene = random_scene(100, 2, generator, dtype=torch.float32)
    cams = sample_orbit(2, 32, 32, generator=generator)
    r = rasterize(scene, cams, 1.0)
    (r.rgb.square().sum() + r.depth.sum()).backward()
    for name, p in scene.params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert r.info["means2d"].grad is not None and r.info["means2d"].grad.shape == (2, 100, 2)
    assert r.info["width"] == 32 and r.info["n_cameras"] == 2 and r.info["radii"].shape == (2, 100, 2)


def test_empty_view_is_background(generator):
    scene = random_scene(20, 0, generator, dtype=torch.float32)
    with torch.no_grad():
        scene.params["means"].add_(100.0)  # everything far off-screen
    cams = make_cameras(0.0, 0.0, 2.5, 50.0, 12, 10)
    r = rasterize_torch(scene, cams, torch.tensor([0.1, 0.2, 0.3]))
    assert r.rgb.shape == (1, 10, 12, 3) and r.alpha.abs().max() == 0
    assert torch.allclose(r.rgb, torch.tensor([0.1, 0.2, 0.3]).expand(1, 10, 12, 3))
    assert r.depth.abs().max() == 0


def test_background_shape_is_checked(generator):
    scene = random_scene(5, 0, generator, dtype=torch.float32)
    with pytest.raises(ValueError, match="background"):
        rasterize_torch(scene, make_cameras(0.0, 0.0, 2.5, 50.0, 8, 8), torch.zeros(2, 2))


def test_mask_renders_each_camera_with_its_own_gaussians(generator):
    a, b = random_scene(50, 1, generator), random_scene(60, 1, generator)
    both = GaussianScene(*[torch.cat([a.params[k], b.params[k]]) for k in PARAM_NAMES], sh_degree=1)
    cams = sample_orbit(2, 24, 24, generator=generator, dtype=torch.float64)
    mask = torch.zeros(2, 110, dtype=torch.bool)
    mask[0, :50] = True
    mask[1, 50:] = True
    r = rasterize_torch(both, cams, 0.3, mask=mask)
    assert torch.allclose(r.rgb[0], rasterize_torch(a, cams[0], 0.3).rgb[0], atol=1e-12)
    assert torch.allclose(r.rgb[1], rasterize_torch(b, cams[1], 0.3).rgb[0], atol=1e-12)
