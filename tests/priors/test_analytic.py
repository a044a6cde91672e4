"""The shapes world's closed-form prior (docs/design.md section 5)."""

import math

import pytest
import torch

from psd_gs.scene.cameras import make_cameras, sample_orbit
from psd_gs.priors.analytic import MASK, AnalyticPrior, PoseGrid
from psd_gs.priors.shapes_world import ShapesWorld


@pytest.fixture(scope="module")
def prior():
    return AnalyticPrior(n_per_object=150)


def test_prompt_selects_objects_by_words(prior):
    world = prior.world
    names = lambda idx: sorted(world.objects[k].name for k in idx)  # noqa: E731
    assert names(world.select("a red cube")) == ["red cube"]
    assert names(world.select("A CUBE")) == ["blue cube", "green cube", "red cube", "yellow cube"]
    assert names(world.select("blue shapes")) == ["blue cone", "blue cube", "blue sphere"]
    assert len(world.select("a shape")) == len(world) == 12
    e = prior.encode_prompt("a cube")
    cubes = [k for k, o in enumerate(world.objects) if o.shape == "cube"]
    assert e.shape == (1, 12) and (e[0, cubes] == 0).all()
    assert (e[0, [k for k in range(12) if k not in cubes]] == MASK).all() and torch.isfinite(e).all()
    assert (prior.encode_prompt("") == 0).all()  # unconditional: every object
    with pytest.raises(ValueError, match="does not know.*dog"):
        prior.encode_prompt("a dog")
    with pytest.raises(ValueError, match="no object"):
        prior.encode_prompt("a purple cube")


def test_noise_prediction_is_the_mixture_score(prior, generator):
    """eps = -sqrt(1 - a_t) grad log p_t(z_t) for the Gaussian mixture, checked with autograd."""
    cams = sample_orbit(2, 32, 32, generator=generator)
    mu_views = prior.views(cams)
    D = mu_views.shape[-1]
    e = prior.encode_prompt("a cube").expand(4, -1)
    t = torch.tensor([50, 300, 700, 950, 50, 300, 700, 950][:4])
    z = (mu_views[torch.arange(4) % 2, 1] + 0.3 * torch.randn(4, D, generator=generator, dtype=torch.float64))
    z = z.view(4, 3, 8, 8).requires_grad_(True)
    a = prior.alphas_cumprod[t].double()
    v = a * prior.data_std ** 2 + 1 - a
    mu = mu_views[torch.arange(4) % 2]  # [4, K, D]
    d2 = (z.reshape(4, 1, D) - a.sqrt()[:, None, None] * mu).square().sum(-1)
    logp = torch.logsumexp(torch.log_softmax(e.double(), -1) - d2 / (2 * v[:, None]), -1)
    (grad,) = torch.autograd.grad(logp.sum(), z)
    expected = -(1 - a).sqrt()[:, None, None, None] * grad
    eps = prior.predict_noise(z.detach().float(), t, e, cams)
    assert torch.allclose(eps.double(), expected, atol=2e-4, rtol=1e-4)


def test_prediction_is_differentiable_in_the_embedding(prior, generator):
    cams = sample_orbit(1, 32, 32, generator=generator)
    e = torch.zeros(2, 12, requires_grad=True)
    z = torch.randn(2, 3, 8, 8, generator=generator)
    prior.predict_noise(z, torch.tensor([800, 800]), e, cams).square().sum().backward()
    assert e.grad.abs().sum() > 0


def test_encoder_pools_and_decoder_upsamples(prior, generator):
    x = torch.rand(2, 3, 32, 32, generator=generator)
    z = prior.encode_images(x)
    assert z.shape == (2, 3, 8, 8) and z.min() >= -1 and z.max() <= 1
    assert torch.allclose(z[0, :, 0, 0], 2 * x[0, :, :4, :4].mean((1, 2)) - 1, atol=1e-6)
    y = prior.decode_latents(z)
    assert y.shape == x.shape and torch.allclose(prior.encode_images(y), z, atol=1e-6)


def test_grid_table_equals_rendering_and_is_cached(tmp_path, monkeypatch):
    p = AnalyticPrior(n_per_object=150)
    p.precompute((0.0, 30.0), (2, 4), 2.0, 49.1, 32, cache_dir=str(tmp_path))
    assert len(list(tmp_path.glob("shapes-mu-*.pt"))) == 1 and len(p.table) == 8
    cams = make_cameras(30.0, -90.0, 2.0, 49.1, 32, 32)  # on the grid (azimuth 270 = -90)
    from_table = p.views(cams).clone()
    p.table.clear()
    p._last = ((), None)  # forget the reused views, so the next call renders
    assert torch.allclose(from_table, p.views(cams), atol=1e-6)
    q = AnalyticPrior(n_per_object=150)
    monkeypatch.setattr(q, "latents_of_objects", lambda c: (_ for _ in ()).throw(AssertionError("re-rendered")))
    q.precompute((0.0, 30.0), (2, 4), 2.0, 49.1, 32, cache_dir=str(tmp_path))  # loads, does not render
    assert len(q.table) == 8


def test_world_objects_are_deterministic_and_distinct():
    w = ShapesWorld()
    a, b = w.build(0, 200), w.build(0, 200)
    assert torch.equal(a.means, b.means) and torch.equal(a.sh0, b.sh0)
    assert len({o.name for o in w.objects}) == len(w) >= 8
    assert len({o.shape for o in w.objects}) >= 4 and len({o.color for o in w.objects}) >= 4
    for k in range(len(w)):
        m = w.build(k, 200).means.detach()
        assert 0.3 < m.norm(dim=-1).max() < 0.65  # every object about the same size, centred
        assert m.mean(0).abs().max() < 0.1 or w.objects[k].shape == "cone"
    assert math.isclose(w.area(4), 4 * math.pi * 0.45 ** 2)


def test_prepare_registers_the_pose_grid_and_poses_render_when_reached(tmp_path, monkeypatch):
    from psd_gs.config import preset

    monkeypatch.setenv("PSD_GS_CACHE", str(tmp_path))
    cfg = preset("shapes")
    cfg.camera.resolution = ((0.0, 32),)
    p = AnalyticPrior(n_per_object=150, pose_grid=(2, 4))
    p.prepare(cfg)
    assert len(p.table) == 0 and "0/8 poses" in p.status()  # nothing rendered before the first step
    on_grid = make_cameras(cfg.camera.elevation[1], 90.0, cfg.camera.radius[0], cfg.camera.fovy[0], 32, 32)
    off_grid = make_cameras(10.0, 33.0, cfg.camera.radius[0], cfg.camera.fovy[0], 32, 32)
    z = torch.zeros(1, 3, 8, 8)
    e = p.encode_prompt("a red cube")
    a = p.predict_noise(z, torch.tensor([500]), e, on_grid)
    assert len(p.table) == 1 and "1/8 poses" in p.status()  # the pose reached, and only it
    b = p.predict_noise(z, torch.tensor([500]), e, off_grid)  # rendered on the spot, a different view
    assert not torch.allclose(a, b) and len(p.table) == 1  # off the grid: not kept
    assert torch.equal(p.predict_noise(z, torch.tensor([500]), e, on_grid), a)  # the same cameras, the same answer


def test_a_lazily_filled_grid_equals_the_precomputed_one_and_survives_a_restart(tmp_path, monkeypatch):
    """Poses rendered one by one as cameras reach them are bit for bit the poses of a full precompute (a
    cold cache and a warm one give the same runs); the disk cache keeps what was rendered, partial or
    whole, and a new process renders only the rest."""
    from psd_gs.scene.cameras import orbit_grid

    monkeypatch.setattr(PoseGrid, "SAVE_EVERY", 0.0)  # save after every pose
    args = ((0.0, 30.0), (2, 4), 2.0, 49.1, 32)
    full = AnalyticPrior(n_per_object=150)
    full.precompute(*args, cache_dir=str(tmp_path / "full"))
    lazy = AnalyticPrior(n_per_object=150)
    lazy._grid(*args, cache_dir=str(tmp_path / "lazy"))
    el, az = orbit_grid((0.0, 30.0), 2, 4)
    for i in (5, 2, 7):  # out of order, one at a time
        lazy.views(make_cameras(el[i:i + 1], az[i:i + 1], 2.0, 49.1, 32, 32))
    assert len(lazy.table) == 3
    assert all(torch.equal(lazy.table[k], full.table[k]) for k in lazy.table)
    again = AnalyticPrior(n_per_object=150)
    rendered = []
    original = again.latents_of_objects
    monkeypatch.setattr(again, "latents_of_objects", lambda c: rendered.append(len(c)) or original(c))
    again.precompute(*args, cache_dir=str(tmp_path / "lazy"))  # the 3 saved poses load; 5 render
    assert rendered == [1] * 5 and len(again.table) == 8
    assert all(torch.equal(again.table[k], full.table[k]) for k in full.table)


def test_cancel_stops_a_precompute_between_poses_and_keeps_what_was_done(tmp_path):
    import threading

    p, cancel, seen = AnalyticPrior(n_per_object=150), threading.Event(), []

    def progress(done, total):
        seen.append((done, total))
        if done == 3:
            cancel.set()

    p.precompute((0.0, 30.0), (2, 4), 2.0, 49.1, 32, cache_dir=str(tmp_path), progress=progress, cancel=cancel)
    assert seen == [(1, 8), (2, 8), (3, 8)] and len(p.table) == 3
    q = AnalyticPrior(n_per_object=150)
    q._grid((0.0, 30.0), (2, 4), 2.0, 49.1, 32, cache_dir=str(tmp_path))
    assert len(q.table) == 3  # saved on the way out


def test_an_unreadable_pose_cache_is_rendered_again(tmp_path):
    p = AnalyticPrior(n_per_object=150)
    g = p._grid((0.0, 30.0), (1, 2), 2.0, 49.1, 32, cache_dir=str(tmp_path))
    g.path.parent.mkdir(parents=True, exist_ok=True)
    g.path.write_bytes(b"not a torch file")
    q = AnalyticPrior(n_per_object=150)
    q.precompute((0.0, 30.0), (1, 2), 2.0, 49.1, 32, cache_dir=str(tmp_path))
    assert len(q.table) == 2 and torch.load(g.path, weights_only=True)["done"].all()
