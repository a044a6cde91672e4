"""The generation loop on the shapes preset: events, outputs, determinism, resume, cancel, NaN, OOM."""

import json
import shutil
from pathlib import Path

import pytest
import torch

import psd_gs.run.loop as gen
import psd_gs.run.folders as runs
from psd_gs.config import PRESETS, preset
from psd_gs.registry import METHODS
from psd_gs.scene.gaussians import PARAM_NAMES
from psd_gs.run.loop import CancelToken, GenerationError, Progress, Result, generate, run
from psd_gs.scene.ply import load_ply
from tests.run.cut import cut_at


@pytest.fixture(autouse=True)
def shapes_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PSD_GS_CACHE", str(tmp_path_factory.getbasetemp() / "psd_gs_cache"))


def small(tmp_path, **overrides):
    cfg = preset("shapes", prompt="a cube", steps=16, seed=3, out_dir=str(tmp_path / "runs"), preview_every=5,
                 turntable_views=2)
    cfg.camera.resolution = ((0.0, 32),)
    cfg.scene.n_init = 300
    cfg.mesh_resolution = 32  # the mesh step runs in every test run; its own tests are in test_mesh.py
    cfg.guidance.method = "psd"
    cfg.guidance.neg_lr, cfg.guidance.neg_every = 0.05, 4  # the learned negative on (off in the preset)
    for key, value in overrides.items():
        obj, name = (cfg, key) if "." not in key else (getattr(cfg, key.split(".")[0]), key.split(".")[1])
        setattr(obj, name, value)
    return cfg


def scene_tensors(scene):
    return [scene.params[k].detach().clone() for k in PARAM_NAMES]


def same_scene(a, b) -> bool:
    """Bitwise equal. Only meaningful under ``one_thread``: with several threads, CPU reductions split
    the work by memory alignment and round differently from run to run (seen: 2e-6 in quaternions after
    16 steps at 4 threads, between two straight runs), which says nothing about resume or seeding."""
    return all(torch.equal(x, y) for x, y in zip(scene_tensors(a), scene_tensors(b)))


def test_events_and_outputs(tmp_path):
    events = list(generate(small(tmp_path)))
    progress, result = events[:-1], events[-1]
    assert isinstance(result, Result) and all(isinstance(e, Progress) for e in progress)
    assert [e.step for e in progress] == list(range(1, 17)) and progress[-1].total == 16
    assert [e.step for e in progress if e.preview is not None] == [5, 10, 15, 16]
    assert progress[4].preview.shape == (32, 32, 3) and progress[4].preview.dtype.name == "uint8"
    # logs become floats in batches, at the preview steps: every step's logs arrive exactly once
    assert [e.step for e in progress if e.history] == [5, 10, 15, 16]
    history = [h for e in progress for h in e.history]
    assert [h["step"] for h in history] == list(range(1, 17))
    assert "loss_sds" in history[0] and "gap" in history[0]  # step 0 is in the pair window
    assert all(isinstance(v, float) for h in history for v in h.values())
    assert progress[4].logs == {k: v for k, v in history[4].items() if k != "step"} and progress[3].logs == {}
    out = result.out_dir
    assert out.parent == tmp_path / "runs" and "a-cube-psd-seed3" in out.name
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "logs.json", "mesh.glb", "metrics.json",
                                                     "scene.ply", "turntable.mp4"]
    assert result.mesh_path == out / "mesh.glb" and json.loads((out / "metrics.json").read_text())["mesh"]["faces"] > 0
    assert [h["step"] for h in json.loads((out / "logs.json").read_text())] == list(range(1, 17))
    assert json.loads((out / "config.json").read_text())["prompt"] == "a cube"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps_done"] == 16 and not metrics["cancelled"] and metrics["n_gaussians"] == 300
    loaded = load_ply(result.ply_path)
    assert all(torch.equal(a, b) for a, b in zip(scene_tensors(loaded), scene_tensors(result.scene)))
    assert (out / "turntable.mp4").stat().st_size > 1000


def test_same_seed_same_scene_and_other_seed_differs(tmp_path, one_thread):
    a = run(small(tmp_path)).scene
    b = run(small(tmp_path)).scene
    c = run(small(tmp_path, seed=4)).scene
    assert same_scene(a, b)
    assert (a.means - c.means).abs().max() > 1e-2


def test_resume_continues_exactly(tmp_path, one_thread):
    straight = run(small(tmp_path, checkpoint_every=8)).scene
    first = cut_at(small(tmp_path, checkpoint_every=8), 8)
    assert first.cancelled and first.metrics["steps_done"] == 8
    resumed = run(None, resume=first.out_dir)
    assert resumed.metrics["steps_done"] == 16 and resumed.out_dir == first.out_dir
    assert same_scene(resumed.scene, straight)


def test_colour_floor_runs_after_every_step_unless_turned_off(tmp_path, monkeypatch):
    """scene.color_floor (on in every preset) projects the colours after each optimiser step (what the
    projection does: tests/scene/test_gaussians.py); off, never."""
    from psd_gs.scene.gaussians import GaussianScene

    calls = []
    original = GaussianScene.floor_colors_
    monkeypatch.setattr(GaussianScene, "floor_colors_", lambda self: calls.append(len(self)) or original(self))
    run(small(tmp_path, steps=4))
    assert calls == [300] * 4
    calls.clear()
    run(small(tmp_path, steps=4, **{"scene.color_floor": False}))
    assert calls == []
    assert all(PRESETS[name]().scene.color_floor for name in PRESETS)


def test_the_mesh_can_be_turned_off_and_a_failed_one_loses_nothing(tmp_path, monkeypatch):
    import psd_gs.mesh.extract as mesh

    off = run(small(tmp_path, steps=2, mesh=False))
    assert off.mesh_path is None and not (off.out_dir / "mesh.glb").exists() and "mesh" not in off.metrics

    def transparent(*args, **kwargs):
        raise mesh.MeshError("no Gaussian has opacity >= 0.05: the scene is empty or transparent")

    monkeypatch.setattr(mesh, "extract_mesh", transparent)
    failed = run(small(tmp_path, steps=2))
    saved = json.loads((failed.out_dir / "metrics.json").read_text())
    assert failed.mesh_path is None and saved["mesh_error"].startswith("MeshError: no Gaussian")
    assert failed.ply_path.is_file() and (failed.out_dir / "turntable.mp4").is_file()
    assert not (failed.out_dir / "mesh.glb").exists() and not (failed.out_dir / runs.INCOMPLETE).exists()


def test_cancel_keeps_what_exists(tmp_path):
    cancel = CancelToken()
    steps = []
    for event in generate(small(tmp_path, steps=50), cancel=cancel):
        if isinstance(event, Progress):
            steps.append(event.step)
            if event.step == 3:
                cancel.set()
        else:
            result = event
    assert steps == [1, 2, 3] and result.cancelled and result.metrics["steps_done"] == 3
    assert load_ply(result.ply_path).means.shape == (300, 3)


def test_nan_steps_are_skipped_then_stop_the_run(tmp_path, monkeypatch):
    from psd_gs.guidance.psd import PSDGuidance

    original = PSDGuidance.step

    def flaky(self, render, cams, step, total):
        out = original(self, render, cams, step, total)
        if step in (2, 3) or step >= 6:
            out.losses["sds"] = out.losses["sds"] * float("nan")
        return out

    monkeypatch.setattr(PSDGuidance, "step", flaky)
    logs = []
    with pytest.raises(GenerationError, match="not finite for 5 steps") as err:
        for event in generate(small(tmp_path, steps=40, preview_every=1)):
            logs.extend(event.history)
    assert [l.get("skipped_nan", 0.0) for l in logs[:6]] == [0, 0, 1, 1, 0, 0]
    run_dir = next((tmp_path / "runs").iterdir())
    assert str(run_dir) in str(err.value)
    scene = load_ply(run_dir / "scene.ply")  # the last good scene, finite
    assert all(torch.isfinite(t).all() for t in scene_tensors(scene))


def test_out_of_memory_is_a_clear_error(tmp_path, monkeypatch):
    real = gen.rasterize

    def oom_at_step_two(scene, cams, bg):
        oom_at_step_two.calls += 1
        if oom_at_step_two.calls == 3:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(scene, cams, bg)

    oom_at_step_two.calls = 0
    monkeypatch.setattr(gen, "rasterize", oom_at_step_two)
    with pytest.raises(GenerationError, match="out of memory at step 2.*lower camera.batch"):
        run(small(tmp_path))
    assert (next((tmp_path / "runs").iterdir()) / "scene.ply").exists()


def test_densification_and_our_opacity_reset_run_in_the_loop(tmp_path, monkeypatch):
    resets = []
    real_reset = gen.reset_opa
    monkeypatch.setattr(gen, "reset_opa", lambda *a, **k: (resets.append(1), real_reset(*a, **k)))
    cfg = small(tmp_path, steps=30)
    cfg.scene.densify, cfg.scene.densify_from, cfg.scene.densify_until = True, 0.1, 0.9
    cfg.scene.densify_every, cfg.scene.grow_grad2d, cfg.scene.opacity_reset_every = 5, 1e-7, 10
    counts = [e.n_gaussians for e in generate(cfg) if isinstance(e, Progress)]
    assert counts[0] == 300 and max(counts) > 300  # grew by clone/split
    assert len(resets) == 2  # steps 10 and 20, below refine_stop_iter 27
    events = gen.schedule_events(cfg)  # the schedule the loop reports is the one it ran
    assert events["opacity_reset"] == [10, 20] and events["densify"] == [5, 10, 15, 20, 25]
    grown = [i for i in range(1, len(counts)) if counts[i] != counts[i - 1]]
    assert set(grown) <= set(events["densify"])  # event i (0-based) shows the size after step i


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("method", METHODS)
def test_every_scheduled_event_of_every_preset_fires(name, method):
    cfg = preset(name)
    cfg.guidance.method = method
    assert gen.schedule_problems(cfg) == []
    events = gen.schedule_events(cfg)
    assert all(events[f"resolution:{res}"] for _, res in cfg.camera.resolution)
    if cfg.scene.densify:
        assert events["densify"] and (events["opacity_reset"] or not cfg.scene.opacity_reset_every)


def test_a_schedule_event_that_never_fires_is_named():
    cfg = preset("sd")
    cfg.scene.opacity_reset_every = 700  # densification stops at step 600
    assert gen.schedule_problems(cfg) == [
        "opacity_reset never happens in 1000 steps (check its settings against the run length)"]


@pytest.mark.parametrize("field, value, match", [
    ("prompt", "   ", "prompt is empty"), ("prompt", "a cube " * 60, "characters"),
    ("steps", 0, "steps"), ("prior.name", "dalle", "prior 'dalle' is unknown"),
    ("reward", "imagereward", "reward 'imagereward' is unknown"),
    ("reward", "hpsv2", "does not score the shapes prior's images"), ("guidance.method", "dpo", "method 'dpo'"),
])
def test_bad_config_fails_before_any_folder_exists(tmp_path, field, value, match):
    with pytest.raises(ValueError, match=match):
        run(small(tmp_path, **{field: value}))
    assert not (tmp_path / "runs").exists()


def test_unknown_words_in_the_shapes_world_fail_before_any_folder_exists(tmp_path):
    with pytest.raises(ValueError, match="does not know"):
        run(small(tmp_path, prompt="a dog"))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_shapes_metrics_include_the_evaluation(tmp_path):
    result = run(small(tmp_path))
    ev = json.loads(result.metrics_path.read_text())["evaluation"]
    assert ev["judged_by"] == "shapes-warm" and ev["preferred"] == "red cube"
    assert ev["nearest"] in ev["psnr_per_object"] and set(ev["psnr_per_object"]) == {
        "red cube", "yellow cube", "green cube", "blue cube"}
    assert -1.0 < ev["reward"] < 1.0 and ev["psnr"] == max(ev["psnr_per_object"].values())


def test_clean_old_runs_removes_only_old_run_folders(tmp_path):
    import os
    import time as _time

    from psd_gs.run.folders import clean_old_runs

    old = tmp_path / "20260101-000000-a-cube-psd-seed0-0123456789abcdef"
    new = tmp_path / "20261125-120000-a-cube-sds-seed1-fedcba9876543210"
    other = tmp_path / "my-notes"
    for d in (old, new, other):
        d.mkdir()
        (d / "config.json").write_text("{}")
    past = _time.time() - 3 * 3600
    os.utime(old, (past, past))
    os.utime(other, (past, past))
    assert clean_old_runs(tmp_path, 3600) == [old]
    assert not old.exists() and new.exists() and other.exists()


def test_out_of_memory_frees_the_step_and_keeps_scene_and_metrics_when_the_turntable_fails(tmp_path, monkeypatch):
    import gc
    import weakref

    import psd_gs.run.export as export

    real, renders, alive_at_export = gen.rasterize, [], []

    def oom_at_step_two(scene, cams, bg):
        if len(renders) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        render = real(scene, cams, bg)
        renders.append(weakref.ref(render.rgb))
        return render

    def turntable_oom(scene, cams, bg):
        gc.collect()
        alive_at_export.append(sum(ref() is not None for ref in renders))
        raise torch.OutOfMemoryError("CUDA out of memory (fake, turntable)")

    monkeypatch.setattr(gen, "rasterize", oom_at_step_two)
    monkeypatch.setattr(export, "rasterize", turntable_oom)
    with pytest.raises(GenerationError, match="out of memory at step 2"):
        run(small(tmp_path))
    assert alive_at_export == [0]  # no render of the failed run's steps was alive during the export
    run_dir = next((tmp_path / "runs").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["error"] == "out of memory" and metrics["step"] == 2
    assert "OutOfMemoryError" in metrics["turntable_error"]
    assert load_ply(run_dir / "scene.ply").means.shape == (300, 3)
    assert not (run_dir / "turntable.mp4").exists()


def test_checkpoints_carry_the_cuda_generator_that_gsplat_splits_with(monkeypatch):
    saved, restored = torch.arange(8, dtype=torch.uint8), []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": saved)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append(state))
    gens = {"camera": torch.Generator().manual_seed(1)}
    cuda = torch.device("cuda", 0)
    states = gen.rng_states(gens, cuda)
    assert torch.equal(states["cuda"], saved)
    gens["camera"].manual_seed(99)
    gen.restore_rng_states(states, gens, cuda)
    assert len(restored) == 1 and torch.equal(restored[0], saved)
    assert torch.equal(gens["camera"].get_state(), torch.Generator().manual_seed(1).get_state())
    assert "cuda" not in gen.rng_states(gens, torch.device("cpu"))


def test_a_step_waits_for_the_device_once(tmp_path, monkeypatch):
    """Host syncs asked for by the loop and the guidance, counted by call site: per step only the
    stacked finiteness check (and t, an int drawn from a CPU generator: no device involved); the
    logs become floats in one batch at the preview step."""
    import collections
    import sys

    import psd_gs.guidance.base as base
    import psd_gs.guidance.psd as psd

    ours = {gen.__file__, base.__file__, psd.__file__}
    sites = collections.Counter()
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            caller = sys._getframe(1).f_code
            if caller.co_filename in ours:
                sites[caller.co_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    cfg = small(tmp_path, steps=12, preview_every=12)  # PSD: pair every step, e_n update every 4
    progress, during_steps = [], None
    for event in generate(cfg):
        if isinstance(event, Progress):
            progress.append(event)
            if event.step == 12:
                during_steps = collections.Counter(sites)  # the export after the last step is not a step
    sites = during_steps
    assert len(progress) == 12 and len(progress[-1].history) == 12
    n_negative_updates = 3  # steps 0, 4, 8, each drawing one t'
    assert sites["all_finite"] == 12
    assert sites["sample_t"] == 12 + n_negative_updates
    assert sites["logs_to_floats"] <= 2  # one .cpu().tolist() for the whole batch
    assert set(sites) <= {"all_finite", "sample_t", "logs_to_floats"}, sites


def test_a_runs_folder_this_user_cannot_write_is_refused_with_the_fix(tmp_path):
    """As in Docker: a root-owned folder and a non-root app. Real permissions: as root the check runs
    with the effective uid of "nobody"; otherwise the folder is made read-only."""
    import os
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="psd-gs-root-owned-"))  # mode 0700, owned by us
    try:
        if os.geteuid() == 0:
            os.seteuid(65534)
            try:
                with pytest.raises(runs.RunFolderError) as err:
                    runs.check_runs_root(root)
            finally:
                os.seteuid(0)
        else:
            root.chmod(0o555)
            with pytest.raises(runs.RunFolderError) as err:
                runs.check_runs_root(root)
        message = str(err.value)
        assert "cannot create run folders" in message and "chown" in message and "named volume" in message
        assert list(root.iterdir()) == []  # nothing left behind
        assert runs.check_runs_root(root) == root  # and a writable one passes
    finally:
        root.chmod(0o755)
        shutil.rmtree(root)


def test_generate_and_the_app_refuse_an_unusable_runs_folder_up_front(tmp_path):
    import app

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(runs.RunFolderError, match="cannot create run folders"):
        run(small(tmp_path, out_dir=str(blocker)))
    with pytest.raises(SystemExit, match="psd-gs: cannot create run folders"):
        app.main(["--runs", str(blocker)])
