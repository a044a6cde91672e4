"""The shapes world's colour-preference reward."""

import itertools

import pytest
import torch

from psd_gs.scene.cameras import turntable
from psd_gs.priors.shapes_world import ShapesWorld
from psd_gs.render import rasterize
from psd_gs.rewards import load_reward


@pytest.fixture(scope="module")
def object_views():
    world = ShapesWorld()
    cams = turntable(4, 32, 32, radius=2.0)
    with torch.no_grad():
        views = {k: rasterize(world.build(k, 200), cams, 1.0).rgb.permute(0, 3, 1, 2) for k in range(len(world))}
    return world, views


def test_warm_and_cool_rank_colours_as_named(object_views):
    world, views = object_views
    warm, cool = load_reward("shapes-warm"), load_reward("shapes-cool")
    by_name = {world.objects[k].name: (warm.score(v, "").mean().item(), cool.score(v, "").mean().item())
               for k, v in views.items()}
    assert by_name["red cube"][0] > by_name["yellow cube"][0] > by_name["green cube"][0]
    assert by_name["blue cube"][1] > by_name["green cube"][1] > by_name["red cube"][1]


@pytest.mark.parametrize("name", ["shapes-warm", "shapes-cool"])
def test_no_two_objects_a_prompt_allows_tie(object_views, name):
    world, views = object_views
    reward = load_reward(name)
    for prompt in ("a cube", "a sphere", "a torus", "a cone"):
        scores = [reward.score(views[k], prompt).mean().item() for k in world.select(prompt)]
        for a, b in itertools.combinations(scores, 2):
            assert abs(a - b) > 0.02, (prompt, scores)
    # across shapes, only objects of the same colour may come close (a colour preference cannot
    # tell a yellow cube from a yellow torus)
    for j, k in itertools.combinations(range(len(world)), 2):
        if world.objects[j].color != world.objects[k].color:
            gap = abs(reward.score(views[j], "").mean().item() - reward.score(views[k], "").mean().item())
            assert gap > 0.02, (world.objects[j].name, world.objects[k].name)


def test_background_counts_for_nothing_and_gradient_flows():
    reward = load_reward("shapes-warm")
    white = torch.ones(1, 3, 16, 16)
    assert reward.score(white, "").item() == 0.0
    img = torch.ones(2, 3, 16, 16)
    img[:, :, 4:12, 4:12] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    img[1, :, :2, :2] = torch.tensor([0.1, 0.1, 0.9])[:, None, None]
    img.requires_grad_(True)
    s = reward.score(img, ["", ""])
    assert s[0].item() == pytest.approx(0.8, abs=1e-5) and s[1].item() < s[0].item()
    s.sum().backward()
    assert img.grad.abs().sum() > 0


def test_unknown_preference_is_named():
    from psd_gs.rewards.shapes import ShapesReward

    with pytest.raises(ValueError, match="warm"):
        ShapesReward("hot")


def test_shape_preferences_rank_silhouettes_not_colours(object_views):
    """size: the bigger silhouette (cube > sphere > torus, cone); low: the mass lower in the view (the cone's,
    then the torus's); neither can tell two colours of one shape apart, and neither ties two shapes that a
    colour-word prompt allows (the prompts the bench asks them with)."""
    world, views = object_views
    size, low = load_reward("shapes-size"), load_reward("shapes-low")
    by_name = {world.objects[k].name: (size.score(v, "").mean().item(), low.score(v, "").mean().item())
               for k, v in views.items()}
    assert by_name["blue cube"][0] > by_name["blue sphere"][0] > by_name["blue cone"][0]
    assert by_name["red cube"][0] > by_name["red torus"][0]
    assert by_name["blue cone"][1] > by_name["blue cube"][1] > by_name["blue sphere"][1]
    assert by_name["red torus"][1] > by_name["red cube"][1]
    for reward in (0, 1):
        assert abs(by_name["blue cube"][reward] - by_name["red cube"][reward]) < 0.01  # colour does not count
    for prompt in ("a blue shape", "an orange shape", "a red shape"):
        for reward in (size, low):
            scores = [reward.score(views[k], prompt).mean().item() for k in world.select(prompt)]
            # the smallest gap: red cube against red torus under low, about 0.005 here (warm's are 0.2-0.8)
            assert all(abs(a - b) > 0.003 for a, b in itertools.combinations(scores, 2)), (prompt, reward.name)
    white = torch.ones(1, 3, 16, 16)
    assert size.score(white, "").item() == 0.0 and low.score(white, "").item() == 0.0
