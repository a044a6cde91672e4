"""The shipped learned rewards (``python -m psd_gs train-reward``): they load through the registry (the real
HPS v2.1 and CLIP loaders), the preference reward agrees with its hidden rule on fixed pairs, the CLIP judge
names the world's objects, and a short PSD run steers by it."""

import pytest
import torch

from psd_gs.config import preset
from psd_gs.priors.shapes_world import ShapesWorld
from psd_gs.render import rasterize
from psd_gs.rewards import load_reward
from psd_gs.train import SHIPPED_REWARDS
from psd_gs.run.loop import run
from psd_gs.scene.cameras import turntable


@pytest.fixture(scope="module")
def views():
    world = ShapesWorld()
    cams = turntable(3, 64, 64, radius=2.0)
    with torch.no_grad():
        return world, {world.objects[k].name: rasterize(world.build(k), cams, 1.0).rgb.permute(0, 3, 1, 2)
                       for k in range(len(world))}


def test_the_shipped_files_are_the_real_formats():
    hps = torch.load(SHIPPED_REWARDS / "hps" / "HPS_v2.1_compressed.pt", weights_only=True)
    assert set(hps) == {"state_dict"} and "visual.conv1.weight" in hps["state_dict"]
    assert (SHIPPED_REWARDS / "clip" / "open_clip_model.safetensors").is_file()
    size = sum(f.stat().st_size for f in SHIPPED_REWARDS.rglob("*") if f.is_file())
    assert size < 25e6  # issue 25: both under 25 MB


def test_learned_hps_prefers_what_the_rule_prefers(views):
    world, v = views
    hps = load_reward("learned-hps", device="cpu")
    assert hps.name == "learned-hps"
    faded = 0.4 * v["red cube"] + 0.6
    for prompt, better, worse in (("a cube", v["red cube"], v["blue cube"]), ("a cube", v["yellow cube"], v["green cube"]),
                                  ("a sphere", v["orange sphere"], v["blue sphere"]),
                                  ("a torus", v["red torus"], v["purple torus"]),
                                  ("a red cube", v["red cube"], faded)):
        assert hps.score(better, prompt).mean() > hps.score(worse, prompt).mean(), prompt


def test_learned_clip_names_the_objects(views):
    world, v = views
    judge = load_reward("learned-clip", device="cpu")
    names = [f"a {o.name}" for o in world.objects]
    text = judge.text_features(names)
    right = sum(int((judge.image_features(v[o.name]) @ text.T).mean(0).argmax()) == k
                for k, o in enumerate(world.objects))
    assert right >= 11, right


def test_a_short_psd_run_with_the_learned_reward_completes(tmp_path, monkeypatch):
    monkeypatch.setenv("PSD_GS_CACHE", str(tmp_path / "cache"))
    cfg = preset("shapes", prompt="a cube", steps=20, reward="learned-hps", out_dir=str(tmp_path / "runs"),
                 turntable_views=2, mesh_resolution=32)
    cfg.camera.resolution = ((0.0, 32),)
    result = run(cfg)
    assert result.metrics["steps_done"] == 20 and result.metrics["pair"]["steps"] == 8
    assert result.metrics["evaluation"]["judged_by"] == "learned-hps" and result.ply_path.is_file()


def test_the_suites_judge_agrees_with_the_exact_answer():
    """R-precision in the shapes world is measured by the CLIP judge trained here (``learned_clip_retrieval``);
    ``shapes_retrieval`` (PSNR to the objects each prompt allows) is the exact answer it stands in for: on every
    reference object of the suite's three shape prompts, seen from the suite's views, both name its prompt."""
    from psd_gs.batch.suite import learned_clip_retrieval, r_precision
    from psd_gs.run.evaluate import eval_cameras, render_views, shapes_retrieval

    world, cams = ShapesWorld(), eval_cameras(4, 64)
    prompts = ["a cube", "a sphere", "a torus"]
    for own, prompt in enumerate(prompts):
        for k in world.select(prompt):
            views = render_views(world.build(k), cams, world.background)
            exact = r_precision(shapes_retrieval(views, cams, prompts, world=world), own)
            judged = r_precision(learned_clip_retrieval(views, cams, prompts, load_reward), own)
            assert exact == 1.0 and judged == exact, (world.objects[k].name, judged)
