"""The held-out suite in the image world, with tiny reward checkpoints: a batch folder of Stable Diffusion
runs (random scenes, the sd preset's configs) judged by the rewards they were not trained with, and CLIP
R-precision among their prompts."""

import json

import pytest
import torch

from psd_gs.config import preset
from psd_gs.run.evaluate import eval_cameras, render_views
from psd_gs.run.export import write_json
from psd_gs.scene.gaussians import GaussianScene
from psd_gs.scene.ply import save_ply
from psd_gs.batch.suite import clip_retrieval, evaluate_suite, r_precision
from tests.rewards.tiny import load_tiny

PROMPTS = ("a corgi wearing a crown", "a red sports car")


def sd_batch(root, methods=("psd", "sds")):
    """A batch folder as ``psd_gs.batch.runner`` writes it: index.json and runs/<id>/{scene.ply, config.json}."""
    jobs = {}
    for i, (prompt, method) in enumerate((p, m) for p in PROMPTS for m in methods):
        cfg = preset("sd", prompt=prompt, seed=i)
        cfg.guidance.method = method
        folder = root / "runs" / f"job{i}"
        folder.mkdir(parents=True)
        save_ply(GaussianScene.random(400, generator=torch.Generator().manual_seed(i), init_opacity=0.5),
                 folder / "scene.ply")
        (folder / "config.json").write_text(cfg.to_json())
        jobs[f"job{i}"] = {"job": {"prompt": prompt, "method": method, "seed": i}, "status": "done",
                           "attempts": 1, "errors": [], "folder": f"runs/job{i}"}
    jobs["job-failed"] = {"job": {"prompt": PROMPTS[0], "method": "psd", "seed": 9}, "status": "failed",
                          "attempts": 3, "errors": ["RuntimeError: x"] * 3}
    write_json(root / "index.json", {"version": 1, "jobs": jobs})
    return root


def test_the_suite_leaves_out_each_runs_own_reward_and_measures_r_precision(tmp_path, weights_dir):
    batch = sd_batch(tmp_path)
    report = evaluate_suite(batch, ["hpsv2", "pickscore", "aesthetic", "clip"], views=2, resolution=32,
                            device="cpu", load_reward=lambda name: load_tiny(name, weights_dir))
    assert len(report["runs"]) == 4  # the failed job is not judged
    assert report["retrieval"] == "psd_gs.batch.suite:clip_retrieval" and report["prompts"] == list(PROMPTS)
    for run in report["runs"]:
        assert run["trained_with"] == "hpsv2"  # the sd preset's reward
        assert set(run["scores"]) == {"pickscore", "aesthetic", "clip"}
        assert run["r_precision"] in (0.0, 0.5, 1.0)  # two views
    rows = {r["method"]: r for r in report["methods"]}
    assert rows["psd"]["hpsv2"] == "-" and "(2)" in rows["psd"]["clip"] and "R-precision" in rows["sds"]
    assert "| psd |" in (batch / "suite.md").read_text()
    assert json.loads((batch / "suite.json").read_text())["runs"] == report["runs"]


def test_clip_retrieval_is_the_clip_score_of_every_prompt(tmp_path, weights_dir):
    clip = load_tiny("clip", weights_dir)
    cams = eval_cameras(3, 32)
    views = render_views(GaussianScene.random(300, generator=torch.Generator().manual_seed(0), init_opacity=0.5), cams)
    matrix = clip_retrieval(views, cams, PROMPTS, lambda name: clip)
    assert matrix.shape == (3, len(PROMPTS))
    for j, prompt in enumerate(PROMPTS):
        expected = clip.score(views.permute(0, 3, 1, 2), prompt)
        assert torch.allclose(matrix[:, j], expected, atol=1e-5)


def test_r_precision_counts_the_views_whose_own_prompt_is_best():
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    assert r_precision(scores, 0) == pytest.approx(2 / 3)  # the tie counts
    assert r_precision(scores, 1) == pytest.approx(2 / 3)


def test_a_judge_of_another_world_is_refused(tmp_path):
    batch = sd_batch(tmp_path)
    with pytest.raises(ValueError, match="shapes-warm.*image"):
        evaluate_suite(batch, ["shapes-warm"], views=1, resolution=32, device="cpu")
