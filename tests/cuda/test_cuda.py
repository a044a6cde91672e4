"""CUDA tests: skipped without a GPU (see conftest). They name the device, and compare with tolerances:
gsplat's backward accumulates with atomic adds, so two identical runs differ in the last bits."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from psd_gs.doctor import checks as doctor
from psd_gs.config import preset
from psd_gs.run.loop import run
from psd_gs.render import gsplat_backend, rasterize, torch_backend
from tests.run.cut import cut_at

pytestmark = pytest.mark.cuda
REPO = Path(__file__).resolve().parents[2]
CUDA = torch.device("cuda")


def small(tmp_path, **overrides):
    cfg = preset("shapes", prompt="a cube", steps=16, seed=3, out_dir=str(tmp_path / "runs"), preview_every=5,
                 turntable_views=2, device="cuda")
    cfg.camera.resolution = ((0.0, 32),)
    cfg.scene.n_init = 300
    cfg.guidance.neg_every = 4
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def close_scenes(a, b, atol):
    return all(torch.allclose(a.params[k], b.params[k], atol=atol, rtol=1e-3) for k in a.params)


@pytest.mark.parametrize("seed", [100, 101, 102])
def test_gsplat_matches_the_pytorch_rasteriser(seed):
    ok, why = gsplat_backend.kernels_status()
    assert ok, why
    row = doctor.compare_rasterisers(gsplat_backend.rasterize_gsplat, torch_backend.rasterize_torch, CUDA, seed)
    assert row.status == "pass", row


def test_the_fallback_renders_cuda_scenes_like_gsplat(monkeypatch):
    scene, g = doctor._random_scene(5, 2000, CUDA)
    from psd_gs.scene.cameras import sample_orbit

    cams = sample_orbit(2, 64, 64, generator=g).to(CUDA)
    with torch.no_grad():
        fast = rasterize(scene, cams, 1.0).rgb
        monkeypatch.setattr(gsplat_backend, "kernels_status", lambda: (False, "test"))
        slow = rasterize(scene, cams, 1.0).rgb
    assert slow.device.type == "cuda" and (fast - slow).abs().max() < doctor.MAX_RGB_DIFF


def test_runs_on_cuda_repeat_within_tolerance(tmp_path):
    a, b = run(small(tmp_path)), run(small(tmp_path))
    assert a.scene.device.type == "cuda" and a.metrics["nan_steps_skipped"] == 0
    assert close_scenes(a.scene, b.scene, atol=1e-3)


def test_resume_on_cuda_with_densification_continues(tmp_path):
    def cfg():
        c = small(tmp_path, steps=30, checkpoint_every=10)
        c.scene.densify, c.scene.densify_from, c.scene.densify_until, c.scene.densify_every = True, 0.1, 0.9, 5
        c.scene.grow_grad2d = 1e-7
        return c

    straight = run(cfg())
    first = cut_at(cfg(), 10)
    resumed = run(None, resume=first.out_dir)
    assert len(resumed.scene) == len(straight.scene)  # the split drew the same CUDA random numbers
    assert close_scenes(resumed.scene, straight.scene, atol=1e-2)


def test_doctor_passes_on_this_gpu(tmp_path):
    out = tmp_path / "doctor.json"
    proc = subprocess.run([sys.executable, "-m", "psd_gs", "doctor", "--device", "cuda", "--json", str(out)],
                          cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(out.read_text())["ok"]


def test_a_batch_gives_each_runner_one_gpu(tmp_path):
    """Two short shapes jobs through a local Ray on this GPU host: each runs on CUDA, on the one GPU its
    runner holds."""
    import ray

    from psd_gs.batch.runner import BatchIndex, run_batch
    from psd_gs.batch.jobs import read_jobs

    path = tmp_path / "prompts.txt"
    path.write_text("a red cube\na blue sphere\n")
    jobs = read_jobs(path, overrides={"steps": 16, "camera.resolution": [[0.0, 32]], "scene.n_init": 300,
                                      "mesh_resolution": 16, "device": "cuda"})
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        assert ray.cluster_resources().get("GPU", 0) >= 1
        run_batch(jobs, tmp_path / "batch", progress=False)
    finally:
        ray.shutdown()
    index = BatchIndex(tmp_path / "batch")
    assert index.counts()["done"] == 2, index.jobs
    for entry in index.jobs.values():
        assert entry["worker"]["device"].startswith("cuda") and len(entry["worker"]["gpus"]) == 1


def test_refine_on_gsplat_keeps_geometry_bit_for_bit_in_the_inputs_frame(tmp_path):
    """Issue 26 on the GPU path: a moved, scaled splat refined through gsplat's rasteriser with framed cameras;
    its geometry comes back bit for bit (learning rate 0 leaves it exactly) and its reward rises."""
    import math

    from psd_gs.priors.shapes_world import ShapesWorld
    from psd_gs.run.refine import refine_config
    from psd_gs.scene.gaussians import GaussianScene
    from psd_gs.scene.ply import load_ply, save_ply

    p = ShapesWorld().build(2).detached()
    moved = GaussianScene(p["means"] * 5.0 + torch.tensor([2.0, 0.5, -4.0]), p["quats"], p["scales"] + math.log(5.0),
                          p["opacities"], p["sh0"])
    ply = save_ply(moved, tmp_path / "in.ply")
    cfg = preset("shapes", prompt="a cube", out_dir=str(tmp_path / "runs"), device="cuda", turntable=False)
    refine_config(cfg, ply, "geometry")
    cfg.steps = 60
    result = run(cfg)
    out, original = load_ply(result.ply_path), load_ply(ply)
    assert all(torch.equal(out.params[k], original.params[k]) for k in ("means", "quats", "scales"))
    r = result.metrics["refine"]
    assert r["kept_unchanged"] and r["reward_after"] > r["reward_before"] + 0.02
