"""Densification on the CPU: gsplat's ``DefaultStrategy`` fed by our torch rasteriser's ``info``.

The loop follows gsplat's simple_trainer: render, ``step_pre_backward`` (retains means2d's grad),
backward, optimizer steps, then ``step_post_backward`` (accumulates the screen-space gradient of
every Gaussian with radii > 0 and, every ``refine_every`` steps, clones / splits / prunes).

The scene has three groups: tiny opaque Gaussians (clone candidates), big ones (split candidates)
and faint ones with opacity below ``prune_opa`` (never drawn, so zero gradient; pruned).
"""

import math

import gsplat
import torch
from gsplat.strategy import DefaultStrategy
from gsplat.strategy.ops import reset_opa

from psd_gs.scene.cameras import make_cameras
from psd_gs.scene.gaussians import PARAM_NAMES, GaussianScene, rgb_to_sh0
from psd_gs.render import rasterize

N_TINY, N_BIG, N_FAINT = 80, 60, 60
TINY, BIG, FAINT = 0.004, 0.06, 0.03  # world std-devs; scene_scale 1, grow_scale3d 0.01 between
PRUNE_OPA = 0.005
LRS = {"means": 1e-3, "quats": 1e-3, "scales": 5e-3, "opacities": 5e-2, "sh0": 1e-2, "shN": 1e-3}
SIZE = 64


def _group(n, scale, opacity, g):
    means = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    means = means * 0.5 * torch.rand(n, 1, generator=g) ** (1 / 3)
    quats = torch.randn(n, 4, generator=g)
    log_scales = math.log(scale) + 0.1 * torch.randn(n, 3, generator=g)
    logits = torch.full((n,), math.log(opacity / (1 - opacity)))
    return means, quats, log_scales, logits, rgb_to_sh0(torch.rand(n, 1, 3, generator=g))


def _scene(generator) -> GaussianScene:
    groups = [_group(N_TINY, TINY, 0.9, generator), _group(N_BIG, BIG, 0.5, generator),
              _group(N_FAINT, FAINT, 0.002, generator)]
    return GaussianScene(*[torch.cat(parts) for parts in zip(*groups)])


def _cams():
    return make_cameras(elevation=[0.0, 30.0], azimuth=[0.0, 120.0], radius=2.5, fovy=49.1,
                        width=SIZE, height=SIZE)


def _optimizers(scene):
    return {group["name"]: torch.optim.Adam([group], eps=1e-15) for group in scene.param_groups(LRS)}


def _strategy(**overrides) -> DefaultStrategy:
    kw = dict(prune_opa=PRUNE_OPA, grow_grad2d=1.5e-3, grow_scale3d=0.01, refine_start_iter=0,
              refine_every=3, reset_every=10_000, refine_stop_iter=10_000,
              # keep state["radii"] too, but make its 2D-size split criterion unreachable
              refine_scale2d_stop_iter=10_000, grow_scale2d=float("inf"), verbose=False)
    kw.update(overrides)
    return DefaultStrategy(**kw)


def _forward_backward(scene, optimizers, strategy, state, step, cams):
    """Render, pre-backward hook, MSE to white, backward, Adam step. Returns the render's info."""
    out = rasterize(scene, cams)
    strategy.step_pre_backward(scene.params, optimizers, state, step, out.info)
    torch.nn.functional.mse_loss(out.rgb, torch.ones_like(out.rgb)).backward()
    for opt in optimizers.values():
        opt.step()
        opt.zero_grad(set_to_none=True)
    return out.info


def _screen_grad(info):
    """(summed norm, visible count) per Gaussian for one render, as DefaultStrategy accumulates them."""
    g = info["means2d"].grad.clone()
    g[..., 0] *= info["width"] / 2.0 * info["n_cameras"]
    g[..., 1] *= info["height"] / 2.0 * info["n_cameras"]
    seen = (info["radii"] > 0).all(-1)
    return (g.norm(dim=-1) * seen).sum(0), seen.sum(0).float()


def _assert_bookkeeping(scene, optimizers, state):
    n = len(scene)
    for key in PARAM_NAMES:
        opt = optimizers[key]
        param = scene.params[key]
        assert opt.param_groups[0]["params"][0] is param, key
        assert list(opt.state.keys()) == [param], key  # old parameter objects are gone
        assert opt.state[param]["exp_avg"].shape == param.shape, key
        assert opt.state[param]["exp_avg_sq"].shape == param.shape, key
        assert param.shape[0] == n
    for key in ("grad2d", "count", "radii"):
        assert state[key].shape == (n,), key


def test_default_strategy_clones_splits_and_prunes_on_cpu(generator):
    torch.manual_seed(0)  # split samples child offsets from the global generator
    scene, cams = _scene(generator), _cams()
    optimizers = _optimizers(scene)
    strategy = _strategy()
    strategy.check_sanity(scene.params, optimizers)
    state = strategy.initialize_state(scene_scale=1.0)
    grad_sum = torch.zeros(len(scene))
    count = torch.zeros(len(scene))

    for step in range(3):
        info = _forward_backward(scene, optimizers, strategy, state, step, cams)
        assert info["means2d"].shape == (2, len(scene), 2) and info["gaussian_ids"] is None
        s, c = _screen_grad(info)
        grad_sum, count = grad_sum + s, count + c
        strategy.step_post_backward(scene.params, optimizers, state, step, info)
        assert len(scene) == N_TINY + N_BIG + N_FAINT  # no refine before step 3
    # our accumulation of our info is exactly what the strategy keeps
    torch.testing.assert_close(state["grad2d"], grad_sum)
    torch.testing.assert_close(state["count"], count)
    assert (grad_sum[N_TINY + N_BIG:] == 0).all()  # faint Gaussians are never drawn: no gradient

    # step 3 refines: predict exactly what it does from the state it will see
    info = _forward_backward(scene, optimizers, strategy, state, 3, cams)
    s, c = _screen_grad(info)
    high = (grad_sum + s) / (count + c).clamp_min(1) > strategy.grow_grad2d
    before = {k: v.detach().clone() for k, v in scene.params.items()}
    small = before["scales"].exp().max(-1).values <= strategy.grow_scale3d
    dupli, split = high & small, high & ~small
    prune = torch.sigmoid(before["opacities"]) < PRUNE_OPA
    n0, n_dupli, n_split, n_prune = len(scene), int(dupli.sum()), int(split.sum()), int(prune.sum())
    assert n_dupli > 0 and n_split > 0  # both grow paths are exercised...
    assert n_dupli < N_TINY and n_split < N_BIG  # ...and the threshold really selects
    assert dupli[N_TINY:].sum() == 0  # clones come from the tiny group only
    assert split[:N_TINY].sum() == 0 and split[N_TINY + N_BIG:].sum() == 0  # splits from the big group
    assert torch.equal(prune.nonzero()[:, 0], torch.arange(N_TINY + N_BIG, n0))  # exactly the faint group

    strategy.step_post_backward(scene.params, optimizers, state, 3, info)

    assert len(scene) == n0 + n_dupli + n_split - n_prune  # +1 per clone, +1 per split, -1 per prune
    kept = ~split & ~prune
    n_kept = int(kept.sum())
    after = {k: v.detach() for k, v in scene.params.items()}
    for key in PARAM_NAMES:
        # layout: untouched originals, then clones (exact copies), then two children per split
        torch.testing.assert_close(after[key][:n_kept], before[key][kept], rtol=0, atol=0)
        torch.testing.assert_close(after[key][n_kept:n_kept + n_dupli], before[key][dupli], rtol=0, atol=0)
    children = slice(n_kept + n_dupli, None)
    torch.testing.assert_close(after["scales"][children],
                               (before["scales"][split].exp() / 1.6).log().repeat(2, 1))
    torch.testing.assert_close(after["opacities"][children], before["opacities"][split].repeat(2),
                               rtol=0, atol=0)
    offset = (after["means"][children] - before["means"][split].repeat(2, 1)).norm(dim=-1)
    assert (offset > 0).all() and (offset < 6 * BIG * 1.6).all()  # sampled from the parent's Gaussian
    assert (torch.sigmoid(after["opacities"]) >= PRUNE_OPA).all()
    _assert_bookkeeping(scene, optimizers, state)
    assert (state["grad2d"] == 0).all() and (state["count"] == 0).all()  # reset after refining
    # Adam moments: carried over for kept Gaussians, zero for new ones
    m = optimizers["means"].state[scene.params["means"]]["exp_avg"]
    assert (m[:n_kept].abs().sum(-1) > 0).any() and (m[n_kept:] == 0).all()

    # training goes on with the new tensors, and the next refine keeps everything consistent
    n1 = len(scene)
    for step in range(4, 7):
        info = _forward_backward(scene, optimizers, strategy, state, step, cams)
        assert info["means2d"].shape == (2, n1, 2)  # the refine at step 6 comes after this render
        strategy.step_post_backward(scene.params, optimizers, state, step, info)
        _assert_bookkeeping(scene, optimizers, state)
    assert all(torch.isfinite(p).all() for p in scene.params.values())


def test_gsplat_opacity_reset_never_fires_in_1_5_3(generator):
    """gsplat 1.5.3's DefaultStrategy never resets opacities; our loop must call ``reset_opa`` itself.

    ``default.py`` tests ``if step % self.reset_every == 0 & step > 0:``. ``&`` binds tighter than
    comparisons, so this is the chain ``step % reset_every == (0 & step) > 0``, i.e.
    ``(step % reset_every == 0) and (0 > 0)``: always False. If this test fails after a gsplat
    upgrade, the bug is fixed upstream and the explicit reset in the generation loop would reset twice.
    """
    assert gsplat.__version__ == "1.5.3"
    reset_every = 4
    assert not (reset_every % reset_every == 0 & reset_every > 0)  # the expression itself

    torch.manual_seed(0)
    scene, cams = _scene(generator), _cams()
    optimizers = _optimizers(scene)
    strategy = _strategy(reset_every=reset_every, refine_start_iter=1_000)  # no refining here
    state = strategy.initialize_state()
    for step in range(2 * reset_every + 1):
        info = _forward_backward(scene, optimizers, strategy, state, step, cams)
        opa_param = scene.params["opacities"]
        opa_before = opa_param.detach().clone()
        strategy.step_post_backward(scene.params, optimizers, state, step, info)
        assert scene.params["opacities"] is opa_param, step  # not even replaced
        assert torch.equal(scene.params["opacities"], opa_before), step
    assert (torch.sigmoid(scene.params["opacities"][:N_TINY]) > 0.5).all()  # never clamped to 0.01

    # the workaround: call reset_opa ourselves at step % reset_every == 0 and step > 0
    reset_opa(scene.params, optimizers, state, value=2 * strategy.prune_opa)
    opa = torch.sigmoid(scene.params["opacities"].detach())
    assert opa.max() <= 2 * strategy.prune_opa + 1e-6
    _assert_bookkeeping(scene, optimizers, state)
    assert (optimizers["opacities"].state[scene.params["opacities"]]["exp_avg"] == 0).all()


def test_cpu_info_has_what_default_strategy_asserts(generator):
    info = rasterize(_scene(generator), _cams()).info
    for key in ("means2d", "radii", "width", "height", "n_cameras", "gaussian_ids"):
        assert key in info, key
