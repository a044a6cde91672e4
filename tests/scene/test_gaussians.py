"""GaussianScene: shapes, activations, random init, devices, parameter groups."""

import math

import pytest
import torch

from psd_gs.scene.gaussians import PARAM_NAMES, GaussianScene, rgb_to_sh0, sh0_to_rgb


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_random_init_shapes_and_values(degree, generator):
    scene = GaussianScene.random(500, radius=0.7, sh_degree=degree, generator=generator)
    n = 500
    assert scene.means.shape == (n, 3) and scene.quats.shape == (n, 4)
    assert scene.log_scales.shape == (n, 3) and scene.opacity_logits.shape == (n,)
    assert scene.sh0.shape == (n, 1, 3) and scene.shN.shape == (n, (degree + 1) ** 2 - 1, 3)
    assert scene.sh.shape == (n, (degree + 1) ** 2, 3)
    assert scene.means.norm(dim=-1).max() <= 0.7 + 1e-6
    assert scene.means.norm(dim=-1).mean() > 0.7 * 0.6  # uniform in the ball, not clumped at the centre
    assert torch.allclose(scene.opacities, torch.full((n,), 0.1))
    assert scene.scales.max() < 0.1 and scene.scales.min() > 0
    assert torch.allclose(scene.rotations.norm(dim=-1), torch.ones(n))
    rgb = sh0_to_rgb(scene.sh0)
    assert rgb.min() >= 0 and rgb.max() <= 1 and rgb.std() > 0.2
    assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in scene.params.values())


def test_random_init_is_seeded():
    a = GaussianScene.random(50, generator=torch.Generator().manual_seed(1))
    b = GaussianScene.random(50, generator=torch.Generator().manual_seed(1))
    c = GaussianScene.random(50, generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(a.params[k], b.params[k]) for k in PARAM_NAMES)
    assert not torch.equal(a.means, c.means)


def test_activations():
    scene = GaussianScene(
        means=torch.zeros(2, 3), quats=torch.tensor([[2.0, 0, 0, 0], [0, 0, 3.0, 0]]),
        log_scales=torch.log(torch.tensor([[0.1, 0.2, 0.3], [1.0, 1.0, 1.0]])),
        opacity_logits=torch.tensor([0.0, math.log(3.0)]), sh0=rgb_to_sh0(torch.full((2, 1, 3), 0.25)))
    assert torch.allclose(scene.scales[0], torch.tensor([0.1, 0.2, 0.3]))
    assert torch.allclose(scene.opacities, torch.tensor([0.5, 0.75]))
    assert torch.allclose(scene.rotations, torch.tensor([[1.0, 0, 0, 0], [0, 0, 1.0, 0]]))
    assert torch.allclose(sh0_to_rgb(scene.sh0), torch.full((2, 1, 3), 0.25))
    assert scene.shN.shape == (2, 0, 3) and len(scene) == 2


def test_to_copies_and_changes_dtype(generator):
    scene = GaussianScene.random(10, sh_degree=2, generator=generator)
    other = scene.to("cpu", torch.float64)
    assert other.means.dtype == torch.float64 and other.sh_degree == 2
    with torch.no_grad():
        other.params["means"].add_(1.0)
    assert not torch.allclose(other.means.float(), scene.means)  # a copy, not a view


def test_param_groups_need_every_learning_rate(generator):
    scene = GaussianScene.random(10, generator=generator)
    lrs = {"means": 1e-3, "quats": 1e-3, "scales": 5e-3, "opacities": 5e-2, "sh0": 1e-2, "shN": 5e-4}
    groups = scene.param_groups(lrs)
    assert [g["name"] for g in groups] == list(PARAM_NAMES)
    assert [g["lr"] for g in groups] == [lrs[k] for k in PARAM_NAMES]
    assert groups[2]["params"][0] is scene.params["scales"]
    del lrs["opacities"]
    with pytest.raises(ValueError, match="opacities"):
        scene.param_groups(lrs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=0), "positive"), (dict(n=5, radius=0.0), "radius"), (dict(n=5, init_opacity=1.0), "init_opacity"),
    (dict(n=5, sh_degree=4), "sh_degree"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianScene.random(**kwargs)


def test_wrong_shapes_are_named():
    with pytest.raises(ValueError, match="sh0"):
        GaussianScene(torch.zeros(3, 3), torch.zeros(3, 4), torch.zeros(3, 3), torch.zeros(3), torch.zeros(3, 3))


def test_a_colour_below_zero_gets_no_gradient_until_floored():
    """The renderer clamps colours at 0 (as gsplat): a channel pushed below 0 is dead; floor_colors_
    lifts it to COLOR_FLOOR, where a loss that wants it brighter moves it again."""
    from psd_gs.scene.cameras import turntable
    from psd_gs.scene.gaussians import COLOR_FLOOR
    from psd_gs.render import rasterize

    scene = GaussianScene(means=torch.zeros(1, 3), quats=torch.tensor([[1.0, 0, 0, 0]]),
                          log_scales=torch.full((1, 3), math.log(0.3)), opacity_logits=torch.full((1,), 3.0),
                          sh0=rgb_to_sh0(torch.tensor([[[0.5, -0.2, 0.5]]])), shN=torch.zeros(1, 0, 3))
    cams = turntable(1, 16, 16, elevation=0.0, radius=2.0)

    def grad():
        scene.params["sh0"].grad = None
        rasterize(scene, cams, 0.0).rgb[..., :2].sum().neg().backward()  # wants more red and green
        return scene.params["sh0"].grad[0, 0]

    assert grad()[1] == 0 and grad()[0] < 0  # green is dead, red is alive
    scene.floor_colors_()
    rgb = sh0_to_rgb(scene.sh0.detach())[0, 0]
    assert rgb[1] == pytest.approx(COLOR_FLOOR, abs=1e-6) and rgb[0] == pytest.approx(0.5, abs=1e-6)  # only below the floor moves
    assert grad()[1] < 0  # green alive: a descent step raises it
