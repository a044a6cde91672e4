"""One batch job on a Ray worker: ``run_job(job) -> dict`` with the run's files as bytes.

A worker may sit on another machine, so it never writes the driver's disk: the run goes into a
temporary folder on the worker, its files are read back as bytes (``FILES``), the folder is removed,
and the driver (``psd_gs.batch.runner``) writes them under the batch folder. Models stay loaded between
jobs: ``MODELS`` is this process's ``ModelCache``, and the process is a ``batch.JobRunner`` actor's,
which lives as long as the batch.

A run that had to stop (repeated NaN, out of memory: ``GenerationError``) still returns what it
wrote, with the error; anything else raises, and Ray hands the exception to the driver.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional

from .jobs import Job, job_config

# What a job hands back, by name: the driver writes nothing else. turntable.mp4 only when asked.
FILES = ("scene.ply", "config.json", "metrics.json", "logs.json", "mesh.glb", "preview.png", "turntable.mp4")
PREVIEW_PX = 256  # the front view of the contact sheet
TMP_PREFIX = "psd-gs-job-"

MODELS = None  # this worker's psd_gs.run.models.ModelCache, made on the first job


def clean_stale(root: Optional[str] = None) -> None:
    """Remove the temporary run folders of worker processes that died mid-job (a killed worker cannot
    clean up after itself); folders are named by their process id."""
    root = Path(root or tempfile.gettempdir())
    for path in root.glob(f"{TMP_PREFIX}*"):
        try:
            pid = int(path.name[len(TMP_PREFIX):].split("-")[0])
            os.kill(pid, 0)  # alive: leave it
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


def front_view(scene, cfg, px: int = PREVIEW_PX) -> bytes:
    """PNG bytes of the scene seen from the front (azimuth 0, elevation 20), white background."""
    import imageio.v3 as iio

    from ..run.export import preview_image

    return iio.imwrite("<bytes>", preview_image(scene, cfg, px, azimuth=0.0), extension=".png")


def run_job(job: Job, turntable: bool = False) -> Dict[str, Any]:
    """Run ``job`` (``psd_gs.batch.jobs``) here; returns {"files": {name: bytes}, "metrics": dict, "error": str or
    None, "seconds": float, "worker": {"host", "pid", "models_loaded", "device"}}. Knows nothing of Ray: the
    runner that calls it (``batch.JobRunner``) sets its threads and adds its GPU ids."""
    global MODELS
    from ..device import resolve_device
    from ..run.export import failure_line
    from ..run.loop import GenerationError, run
    from ..run.models import ModelCache
    from ..scene.ply import load_ply

    t0 = time.perf_counter()
    cfg = job_config(job)
    cfg.turntable = turntable and cfg.turntable
    if MODELS is None:
        clean_stale()
        MODELS = ModelCache()
    prior, reward = MODELS.for_run(cfg)  # validates; loads only what this worker does not hold yet
    with tempfile.TemporaryDirectory(prefix=f"{TMP_PREFIX}{os.getpid()}-") as tmp:
        cfg.out_dir = tmp
        error = None
        try:
            result = run(cfg, prior=prior, reward=reward)
            folder, scene = result.out_dir, result.scene
        except GenerationError as err:  # stopped (NaN, out of memory): its last good scene is written
            # its message names this temporary folder, which is about to go: the driver keeps the files
            error = failure_line(err).split(". The last good scene is in")[0] + "; the last good scene is kept"
            folder = next(p for p in Path(tmp).iterdir() if p.is_dir())  # generate made it before it raised
            scene = load_ply(folder / "scene.ply") if (folder / "scene.ply").is_file() else None
        if scene is not None:
            (folder / "preview.png").write_bytes(front_view(scene, cfg))
        files = {name: (folder / name).read_bytes() for name in FILES if (folder / name).is_file()}
    metrics = json.loads(files["metrics.json"]) if "metrics.json" in files else {}
    return {"files": files, "metrics": metrics, "error": error, "seconds": time.perf_counter() - t0,
            "worker": {"host": socket.gethostname(), "pid": os.getpid(), "models_loaded": MODELS.loads,
                       "device": str(resolve_device(cfg.device))}}

