"""Run folders: complete or absent, whatever happens to the run (psd_gs/run/folders.py and the loop)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from psd_gs.config import preset
from psd_gs.run.loop import Progress, generate
from psd_gs.run.folders import INCOMPLETE, RUN_DIR_PATTERN, is_run_dir, new_run_dir, recover_runs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def shapes_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PSD_GS_CACHE", str(tmp_path_factory.getbasetemp() / "psd_gs_cache"))


def small(tmp_path, steps=30):
    cfg = preset("shapes", prompt="a cube", steps=steps, out_dir=str(tmp_path / "runs"), preview_every=5,
                 turntable_views=2)
    cfg.camera.resolution = ((0.0, 32),)
    cfg.scene.n_init = 300
    return cfg


def test_names_are_not_guessable_and_a_new_folder_is_marked_incomplete(tmp_path):
    a, b = (new_run_dir(tmp_path, "a cube", "psd", 0) for _ in range(2))
    assert a != b and RUN_DIR_PATTERN.match(a.name) and is_run_dir(a)
    assert (a / INCOMPLETE).exists()


def test_a_consumer_that_goes_away_leaves_a_complete_folder(tmp_path):
    """A closed page or a cancelled request closes the generator: the partial result is written."""
    events = generate(small(tmp_path, steps=200))
    for event in events:
        if isinstance(event, Progress) and event.step == 3:
            break
    events.close()
    (folder,) = (tmp_path / "runs").iterdir()
    assert not (folder / INCOMPLETE).exists()
    assert {"config.json", "scene.ply", "metrics.json", "logs.json", "turntable.mp4"} <= {p.name for p in folder.iterdir()}
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["cancelled"] and metrics["steps_done"] == 3
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_a_killed_run_is_removed_at_the_next_start_and_cut_writes_are_cleaned(tmp_path):
    """SIGKILL mid-run leaves the INCOMPLETE marker: recover_runs (the app at start-up) removes the folder;
    a temporary of an atomic write left in a complete folder goes too."""
    out = tmp_path / "runs"
    env = dict(os.environ, PSD_GS_CACHE=os.environ["PSD_GS_CACHE"])
    proc = subprocess.Popen([sys.executable, "-m", "psd_gs", "generate", "a cube", "--steps", "5000",
                             "--resolution", "32", "--out", str(out), "--quiet"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and any(out.iterdir())) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    (killed,) = out.iterdir()
    assert (killed / INCOMPLETE).exists() and not (killed / "metrics.json").exists()

    done = new_run_dir(out, "a sphere", "sds", 1)
    (done / "config.json").write_text("{}")
    (done / INCOMPLETE).unlink()
    (done / ".scene.ply.abc123.tmp").write_bytes(b"half a file")
    (done / ".turntable.mp4.tmp.mp4").write_bytes(b"half a video")
    (done / "scene.ply").write_bytes(b"ply")
    (out / "notes").mkdir()
    assert recover_runs(out) == [killed]
    assert not killed.exists() and done.exists() and (out / "notes").exists()
    assert sorted(p.name for p in done.iterdir()) == ["config.json", "scene.ply"]


def test_metrics_come_before_the_turntable_and_the_turntable_is_written_atomically(tmp_path, monkeypatch):
    import psd_gs.run.export as export

    seen = []
    real = export.save_turntable

    def spy(scene, cfg, path, res):
        seen.append(sorted(p.name for p in path.parent.iterdir()))
        return real(scene, cfg, path, res)

    monkeypatch.setattr(export, "save_turntable", spy)
    result = None
    for event in generate(small(tmp_path, steps=4)):
        result = event
    assert "metrics.json" in seen[0] and "scene.ply" in seen[0] and "turntable.mp4" not in seen[0]
    assert INCOMPLETE in seen[0]  # still marked until the video is there
    assert not (result.out_dir / INCOMPLETE).exists()
