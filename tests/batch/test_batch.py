"""Batches on a local Ray instance (2 CPUs) in the shapes world: jobs, the index, retries, a killed worker,
re-runs, cancel, the report and the held-out suite.

One batch of seven short jobs runs once for the module (``batch``): six that finish (one of them on a
worker that is killed mid-job on its first attempt) and one that always raises. The other tests read
what it wrote; the cancel and re-run tests use tasks that do no optimisation.
"""

import json
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

from psd_gs.batch.runner import BatchIndex, run_batch, task_options, slots, write_run
from psd_gs.batch.jobs import job_id, read_jobs
from psd_gs.batch.worker import run_job

ray = pytest.importorskip("ray")

SHORT = {"steps": 12, "camera.resolution": [[0.0, 32]], "scene.n_init": 300, "mesh_resolution": 16,
         "preview_every": 0}
FAIL_PROMPT, KILL_PROMPT = "a blue cone", "a blue sphere"


@pytest.fixture(scope="module")
def local_ray():
    """Ray inside this process with 2 CPUs, for the whole module; the batch runner uses it as it is."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    # The tasks below are defined in this test module, which Ray's workers cannot import: send them by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


def faulty_task(marker_dir):
    """run_job, except that FAIL_PROMPT always raises and KILL_PROMPT's first attempt kills its own worker
    process (SIGKILL, as the kernel's OOM killer would) 0.3 s into the run."""

    def task(job, turntable=False):
        if job["prompt"] == FAIL_PROMPT:
            raise RuntimeError("injected failure for the test")
        marker = marker_dir / f"killed-{job['id']}"
        if job["prompt"] == KILL_PROMPT and job["method"] == "psd" and not marker.exists():
            marker.touch()
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGKILL)).start()
            run_job(job, turntable)
            time.sleep(60)  # never returns: the timer kills the process first
        return run_job(job, turntable)

    return task


def write_jobs(path, lines):
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


@pytest.fixture(scope="module")
def batch(local_ray, tmp_path_factory):
    """(batch folder, jobs, seconds): seven jobs, one always failing, one killed once, retries=1."""
    root = tmp_path_factory.mktemp("batch")
    lines = [{"prompt": p} for p in ("a red cube", KILL_PROMPT, "a yellow torus")] + \
        [{"prompt": FAIL_PROMPT, "method": "sds", "seed": 0}]
    jobs = read_jobs(write_jobs(root / "jobs.jsonl", lines), methods=["psd", "sds"], seeds=1, overrides=SHORT)
    t0 = time.perf_counter()
    run_batch(jobs, root / "out", retries=1, task=faulty_task(root), progress=False)
    return root / "out", jobs, time.perf_counter() - t0


def entry(out, prompt, method):
    index = BatchIndex(out)
    (found,) = [e for e in index.jobs.values() if e["job"]["prompt"] == prompt and e["job"]["method"] == method]
    return found


# ---- jobs ---------------------------------------------------------------------------------------------


def test_prompt_list_expands_by_methods_and_seeds(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# a comment\na red cube\n\na blue sphere\na red cube\n")
    jobs = read_jobs(path, methods=["psd", "sds"], seeds=3)
    assert len(jobs) == 2 * 2 * 3  # the repeated prompt is merged
    assert {(j["prompt"], j["method"], j["seed"]) for j in jobs} == \
        {(p, m, s) for p in ("a red cube", "a blue sphere") for m in ("psd", "sds") for s in range(3)}
    assert len({j["id"] for j in jobs}) == len(jobs)
    assert all(j["id"] == job_id(j) for j in jobs)  # stable: the same job gets the same id again


def test_jsonl_lines_keep_their_own_fields_and_overrides(tmp_path):
    path = write_jobs(tmp_path / "jobs.jsonl", [
        {"prompt": "a red cube", "method": "sds", "seed": 7, "guidance.cfg_scale": 2.0},
        {"prompt": "a cube", "reward": "shapes-cool", "steps": 30}])
    jobs = read_jobs(path, methods=["psd", "reward_grad"], seeds=2, overrides={"steps": "20"})
    first = [j for j in jobs if j["prompt"] == "a red cube"]
    assert [(j["method"], j["seed"]) for j in first] == [("sds", 7)]
    assert first[0]["set"] == {"steps": "20", "guidance.cfg_scale": 2.0}
    second = [j for j in jobs if j["prompt"] == "a cube"]
    assert {(j["method"], j["seed"]) for j in second} == {(m, s) for m in ("psd", "reward_grad") for s in range(2)}
    assert all(j["reward"] == "shapes-cool" and j["set"]["steps"] == 30 for j in second)  # the line's own wins


@pytest.mark.parametrize("line, words", [
    ("{not json", ["line 2", "not JSON"]),
    ('{"method": "psd"}', ["line 2", '"prompt"']),
    ('{"prompt": "a purple cube"}', ["line 2", "purple"]),
    ('{"prompt": "a cube", "guidance.nope": 1}', ["line 2", "guidance.nope"]),
    ('{"prompt": "a cube", "method": "dreamfusion"}', ["line 2", "dreamfusion"]),
    ('{"prompt": "a cube", "reward": "hpsv2"}', ["line 2", "hpsv2", "shapes"]),
])
def test_a_bad_line_is_named_before_anything_runs(tmp_path, line, words):
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"prompt": "a red cube"}\n' + line + "\n")
    with pytest.raises(ValueError) as err:
        read_jobs(path)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_an_empty_jobs_file_is_an_error(tmp_path):
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="no jobs"):
        read_jobs(tmp_path / "empty.txt")


def test_a_gpu_cluster_gives_each_runner_a_gpu():
    gpu = task_options({"CPU": 16, "GPU": 8}, cpus_per_job=4)
    assert gpu["num_gpus"] == 1 and gpu["max_restarts"] == 0 and gpu["max_task_retries"] == 0
    assert slots({"CPU": 16, "GPU": 8}, gpu) == 8
    cpu = task_options({"CPU": 8}, cpus_per_job=2)
    assert "num_gpus" not in cpu and cpu["num_cpus"] == 2 and slots({"CPU": 8}, cpu) == 4


def test_a_job_larger_than_the_cluster_is_refused(local_ray, tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("a red cube\n")
    with pytest.raises(ValueError, match="cpus_per_job 3 is more than the 2 CPUs"):
        run_batch(read_jobs(path), tmp_path / "out", cpus_per_job=3, progress=False)
    assert BatchIndex(tmp_path / "out").counts()["pending"] == 1  # recorded, not lost


def test_a_worker_cannot_write_outside_its_run_folder(tmp_path):
    with pytest.raises(ValueError, match="unexpected files"):
        write_run(tmp_path, "job", {"../../evil.sh": b"x"})
    assert list(tmp_path.rglob("evil.sh")) == []


# ---- the batch ----------------------------------------------------------------------------------------


def test_a_batch_writes_an_index_and_valid_runs(batch):
    from psd_gs.scene.ply import load_ply

    out, jobs, seconds = batch
    index = BatchIndex(out)
    assert set(index.jobs) == {j["id"] for j in jobs} and len(jobs) == 7
    assert index.counts() == {"pending": 0, "running": 0, "done": 6, "failed": 1, "cancelled": 0}
    for e in index.jobs.values():
        if e["status"] != "done":
            continue
        folder = out / e["folder"]
        assert {"scene.ply", "config.json", "metrics.json", "mesh.glb", "preview.png"} <= {p.name for p in folder.iterdir()}
        assert "turntable.mp4" not in {p.name for p in folder.iterdir()}  # only with turntable=True
        assert len(load_ply(folder / "scene.ply")) > 0
        assert json.loads((folder / "config.json").read_text())["prompt"] == e["job"]["prompt"]
        assert e["metrics"]["steps_done"] == 12 and np.isfinite(e["metrics"]["reward"])
        assert "psnr" in e["metrics"]["evaluation"]
    assert not list(out.glob("runs/.*"))  # no temporary folders left
    print(f"batch of 7 jobs (1 failing twice, 1 killed once) on 2 CPUs: {seconds:.1f} s")


def test_a_failing_job_is_retried_then_recorded_while_the_others_finish(batch):
    out, _, _ = batch
    failed = entry(out, FAIL_PROMPT, "sds")
    assert failed["status"] == "failed" and failed["attempts"] == 2  # retries=1
    assert len(failed["errors"]) == 2 and all("RuntimeError: injected failure" in e for e in failed["errors"])


def test_a_killed_worker_is_retried(batch):
    out, _, _ = batch
    killed = entry(out, KILL_PROMPT, "psd")
    assert killed["status"] == "done" and killed["attempts"] == 2
    assert len(killed["errors"]) == 1
    assert "ActorDiedError" in killed["errors"][0] and "died" in killed["errors"][0], killed["errors"]


def test_models_load_once_per_runner(batch):
    out, _, _ = batch
    per_worker = {}
    for e in BatchIndex(out).jobs.values():
        if e["status"] == "done":
            per_worker.setdefault(e["worker"]["pid"], []).append(e["worker"]["models_loaded"])
    busy = {pid: loads for pid, loads in per_worker.items() if len(loads) > 1}
    assert busy, per_worker  # some worker ran several jobs
    assert all(max(loads) == 2 for loads in busy.values()), busy  # the prior and the reward, once


def test_a_rerun_does_nothing_new(batch, tmp_path):
    out, jobs, _ = batch
    before = (out / "index.json").read_text()
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "index.json"}
    called = tmp_path / "called"

    def must_not_run(job, turntable=False):
        called.touch()
        raise AssertionError("a finished job ran again")

    run_batch(jobs, out, retries=0, task=must_not_run, progress=False)
    assert not called.exists()
    assert json.loads((out / "index.json").read_text()) == json.loads(before)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_the_summary_and_contact_sheet(batch, tmp_path):
    from imageio.v3 import imread

    from psd_gs.batch.report import TILE, contact_sheet, summary_rows

    out, _, _ = batch
    rows = {r["method"]: r for r in summary_rows(BatchIndex(out))}
    assert rows["psd"]["done"] == "3" and rows["sds"]["done"] == "3" and rows["sds"]["failed"] == "1"
    assert rows["psd"]["hits"].endswith("/3") and "±" in rows["psd"]["fidelity (dB)"]
    sheet = imread(contact_sheet(BatchIndex(out), tmp_path / "sheet.png"))
    assert sheet.shape[1] == TILE * 2  # a column per (method, seed)
    tiles = sheet.reshape(-1, sheet.shape[1], 3)
    assert (tiles < 200).any(axis=-1).mean() > 0.02  # objects and captions, not a blank page


def test_the_suite_judges_with_held_out_rewards(batch):
    from psd_gs.batch.suite import evaluate_suite

    out, _, _ = batch
    report = evaluate_suite(out, views=4)
    done = BatchIndex(out).counts()["done"]
    world = ["shapes-warm", "shapes-cool", "shapes-size", "shapes-low", "learned-hps", "learned-clip"]  # all the world's
    assert len(report["runs"]) == done and report["judges"] == world
    for run in report["runs"]:
        assert run["trained_with"] == "shapes-warm" and set(run["scores"]) == set(world[1:])  # never its own
        assert 0.0 <= run["r_precision"] <= 1.0
    table = (out / "suite.md").read_text()
    assert "| psd |" in table and "| sds |" in table and "R-precision" in table
    assert json.loads((out / "suite.json").read_text())["methods"] == report["methods"]


# ---- cancel and retry-failed, with tasks that do no optimisation -------------------------------------------


def fake_result(job, turntable=False):
    return {"files": {"scene.ply": b"ply", "config.json": json.dumps({"prompt": job["prompt"]}).encode()},
            "metrics": {"steps_done": 1}, "error": None, "seconds": 0.0,
            "worker": {"host": "test", "pid": os.getpid(), "models_loaded": 0}}


def slow_task(job, turntable=False):
    time.sleep(30)
    return fake_result(job)


def test_cancel_leaves_the_index_consistent_and_a_rerun_finishes(local_ray, tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("a red cube\na blue cube\na green cube\n")
    jobs = read_jobs(path, seeds=2)
    cancel = threading.Event()
    threading.Timer(1.5, cancel.set).start()
    t0 = time.perf_counter()
    run_batch(jobs, tmp_path / "out", cancel=cancel, task=slow_task, progress=False)
    assert time.perf_counter() - t0 < 15  # cancelled, not waited for
    counts = BatchIndex(tmp_path / "out").counts()
    assert counts["running"] == 0 and counts["done"] == 0
    assert counts["cancelled"] == 2 and counts["pending"] == 4  # two runners were busy
    run_batch(jobs, tmp_path / "out", task=fake_result, progress=False)
    assert BatchIndex(tmp_path / "out").counts()["done"] == 6


def test_retry_failed_runs_only_the_failed_jobs(local_ray, tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("a red cube\na blue cube\n")
    jobs = read_jobs(path)

    def fail_blue(job, turntable=False):
        if "blue" in job["prompt"]:
            raise ValueError("blue is out of stock")
        return fake_result(job)

    run_batch(jobs, tmp_path / "out", retries=0, task=fail_blue, progress=False)
    index = BatchIndex(tmp_path / "out")
    assert index.counts()["failed"] == 1 and index.counts()["done"] == 1
    done_at = {k: e.get("finished") for k, e in index.jobs.items()}
    run_batch(jobs, tmp_path / "out", task=fail_blue, progress=False)  # failed jobs stay failed by default
    assert BatchIndex(tmp_path / "out").counts()["failed"] == 1
    run_batch(jobs, tmp_path / "out", retry_failed=True, task=fake_result, progress=False)
    index = BatchIndex(tmp_path / "out")
    assert index.counts()["done"] == 2
    red = next(k for k, e in index.jobs.items() if "red" in e["job"]["prompt"])
    assert index.jobs[red]["finished"] == done_at[red]  # the finished one was left alone


def test_shapes_retrieval_finds_the_object_a_prompt_allows():
    from psd_gs.run.evaluate import eval_cameras, render_views, shapes_retrieval
    from psd_gs.priors.shapes_world import ShapesWorld
    from psd_gs.batch.suite import r_precision

    world, cams = ShapesWorld(), eval_cameras(3, 32)
    views = render_views(world.build(world.select("a red cube")[0]), cams, world.background)
    scores = shapes_retrieval(views, cams, ["a blue sphere", "a red cube", "a cube"], world=world)
    assert scores.shape == (3, 3) and (scores[:, 1] > 40).all()  # the object itself: near-exact
    assert r_precision(scores, 1) == 1.0 and r_precision(scores, 0) == 0.0
    assert r_precision(scores, 2) == 1.0  # "a cube" allows the red cube too: a tie counts


# ---- the command line -----------------------------------------------------------------------------------


def test_the_batch_and_suite_commands(local_ray, tmp_path, capsys):
    from psd_gs.cli.main import main

    jobs = tmp_path / "prompts.txt"
    jobs.write_text("a red cube\na blue sphere\n")
    sets = [a for key, value in SHORT.items() for a in ("--set", f"{key}={json.dumps(value)}")]
    assert main(["batch", str(jobs), "--out", str(tmp_path / "b"), "--methods", "psd,sds", "--quiet", *sets]) == 0
    out = capsys.readouterr().out
    assert "| psd | 2 | 2 | 0 |" in out and "| sds | 2 | 2 | 0 |" in out and "evaluate-suite" in out
    assert (tmp_path / "b" / "summary.md").read_text() in out
    assert (tmp_path / "b" / "contact_sheet.png").is_file()
    assert main(["evaluate-suite", str(tmp_path / "b"), "--views", "2"]) == 0
    out = capsys.readouterr().out
    assert "| psd | 2 |" in out and "shapes-cool" in out and (tmp_path / "b" / "suite.md").is_file()


@pytest.mark.parametrize("args, words", [
    (["--methods", "psd,dreamfusion"], ["dreamfusion", "--methods"]),
    (["--seeds", "0"], ["--seeds 0"]),
    (["--set", "guidance.nope=1"], ["guidance.nope"]),
    (["--set", "steps"], ["PATH=VALUE"]),
    (["--preset", "sd"], ["CUDA"]),
])
def test_batch_refuses_bad_input_before_ray_starts(tmp_path, capsys, args, words):
    from psd_gs.cli.main import main

    jobs = tmp_path / "prompts.txt"
    jobs.write_text("a red cube\n")
    if "sd" in args:
        jobs.write_text("a corgi\n")
    assert main(["batch", str(jobs), "--out", str(tmp_path / "b"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and all(w in err for w in words), err
    assert not (tmp_path / "b").exists()


def test_ctrl_c_cancels_a_batch_and_keeps_its_index(tmp_path):
    """The whole command in a process group of its own, interrupted as a terminal's Ctrl-C would (SIGINT
    to every process of the group, Ray's workers too) once its first job is done."""
    import subprocess

    jobs = tmp_path / "prompts.txt"
    jobs.write_text("a red cube\na blue sphere\na yellow torus\na green cube\n")
    sets = [a for key, value in (SHORT | {"steps": 150}).items() for a in ("--set", f"{key}={json.dumps(value)}")]
    proc = subprocess.Popen([sys.executable, "-m", "psd_gs", "batch", str(jobs), "--out", str(tmp_path / "b"),
                             "--cpus", "2", "--seeds", "2", "--quiet", *sets], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            # as from a terminal: a test run started in the background (`make test &`) has
                            # SIGINT ignored, the child inherits that and Python then never raises
                            # KeyboardInterrupt (CI runs started that way failed here twice)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if (tmp_path / "b" / "index.json").is_file() and BatchIndex(tmp_path / "b").counts()["done"] >= 1:
                break
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, output
    counts = BatchIndex(tmp_path / "b").counts()
    assert counts["running"] == 0 and counts["done"] >= 1 and counts["done"] < 8, counts
    assert "run the same command again" in output


def test_a_dead_workers_temporary_run_folder_is_removed(tmp_path):
    import subprocess

    from psd_gs.batch.worker import TMP_PREFIX, clean_stale

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = tmp_path / f"{TMP_PREFIX}{int(dead.stdout)}-abc"
    alive = tmp_path / f"{TMP_PREFIX}{os.getpid()}-def"
    other = tmp_path / "someone-elses"
    for folder in (gone, alive, other):
        folder.mkdir()
    clean_stale(str(tmp_path))
    assert not gone.exists() and alive.exists() and other.exists()


def test_a_run_stopped_by_nan_returns_its_last_good_scene_and_the_error(tmp_path, monkeypatch):
    """run_job in this process (no Ray): the run stops on NaN; the job hands back the error and its last good
    scene, not the worker's temporary folder, which is gone."""
    import tempfile

    from psd_gs.guidance.psd import PSDGuidance
    from psd_gs.scene.ply import load_ply

    original = PSDGuidance.step

    def nan_from_step_3(self, render, cams, step, total):
        out = original(self, render, cams, step, total)
        if step >= 3:
            out.losses["sds"] = out.losses["sds"] * float("nan")
        return out

    monkeypatch.setattr(PSDGuidance, "step", nan_from_step_3)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = tmp_path / "p.txt"
    path.write_text("a red cube\n")
    (job,) = read_jobs(path, overrides=SHORT)
    out = run_job(job)
    assert out["error"].startswith("GenerationError: the loss or its gradients were not finite")
    assert out["error"].endswith("the last good scene is kept") and "psd-gs-job" not in out["error"]
    assert {"scene.ply", "metrics.json", "preview.png"} <= set(out["files"])
    (tmp_path / "scene.ply").write_bytes(out["files"]["scene.ply"])
    assert len(load_ply(tmp_path / "scene.ply")) > 0
    assert not list(tmp_path.glob("psd-gs-job-*"))  # the temporary run folder is gone
