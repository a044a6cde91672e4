"""Many objects on many GPUs: a batch of jobs as Ray tasks, written under one folder by the driver.

``run_batch(jobs, out_dir)`` runs every job (``psd_gs.batch.jobs``) as one Ray task (``psd_gs.batch.worker.run_job``, on
a ``JobRunner`` actor) and writes what each returns under ``out_dir``::

    out_dir/index.json               every job: its spec, status, attempts, errors, time, metrics, folder
    out_dir/runs/<job id>/           scene.ply, config.json, metrics.json, logs.json, mesh.glb, preview.png
                                     (turntable.mp4 with turntable=True)
    out_dir/summary.md, contact_sheet.png   written at the end (``psd_gs.batch.report``)

Ray: without ``address`` it starts inside this process on this machine (``ray.init``, nothing to set
up); ``address="auto"`` or ``"ray://host:10001"`` joins a running cluster, whose nodes need psd-gs
installed. There is one runner per slot, an actor that asks for one GPU where the cluster has GPUs
(eight GPUs, eight objects at once) and for ``cpus_per_job`` CPUs otherwise, and keeps its models
between jobs. Each runner has one job at a time, so the running count is true and a cancel leaves
nothing queued.

Nothing is lost, nothing is done twice: index.json is rewritten atomically at every change of a
job's status; a job already "done" (its folder complete) is skipped by a re-run, a "failed" one only
with ``retry_failed``. A failure (an exception in the job, a run that stopped on NaN or out of
memory, a runner process that died, Ray's out-of-memory kill) is retried up to ``retries`` times (a dead
runner is replaced),
then recorded as failed with every attempt's error (and a stopped run's last good scene is kept);
it never stops the other jobs. Cancel (Ctrl-C, or ``cancel.set()``) kills the runners in flight,
records them "cancelled" (a re-run runs them) and leaves the index consistent.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..run.export import write_json
from .jobs import Job
from .worker import FILES

INDEX = "index.json"
RUNS = "runs"
STATUSES = ("pending", "running", "done", "failed", "cancelled")
METRIC_KEYS = ("steps_done", "steps", "seconds", "seconds_per_step", "n_gaussians", "nan_steps_skipped")


class BatchIndex:
    """index.json of a batch folder: {"jobs": {id: entry}}, each entry the job's spec and its state
    ("status" one of STATUSES, "attempts", "errors" [one line per failed attempt], "seconds", "metrics",
    "folder" relative to the batch folder, "worker")."""

    def __init__(self, out_dir: Path):
        import json

        self.out_dir = Path(out_dir)
        self.path = self.out_dir / INDEX
        self.jobs: Dict[str, Dict[str, Any]] = {}
        if self.path.is_file():
            try:
                self.jobs = json.loads(self.path.read_text())["jobs"]
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{self.path} is not a batch index ({err}); move it away, or pick another "
                                 f"--out folder") from None

    def add(self, job: Job) -> Dict[str, Any]:
        """The entry of ``job`` (made "pending" when new)."""
        return self.jobs.setdefault(job["id"], {"job": {k: v for k, v in job.items() if k != "id"},
                                                "status": "pending", "attempts": 0, "errors": []})

    def is_done(self, job_id: str) -> bool:
        """Done and its folder still has its scene (a folder deleted by hand is run again)."""
        entry = self.jobs.get(job_id, {})
        return entry.get("status") == "done" and (self.out_dir / entry.get("folder", "-") / "scene.ply").is_file()

    def set(self, job_id: str, **fields) -> None:
        """Update one entry and write the index atomically."""
        self.jobs[job_id].update(fields)
        self.save()

    def save(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.path, {"version": 1, "jobs": self.jobs})

    def counts(self) -> Dict[str, int]:
        return {s: sum(e["status"] == s for e in self.jobs.values()) for s in STATUSES}


def write_run(out_dir: Path, job_id: str, files: Dict[str, bytes]) -> str:
    """Write a job's files into out_dir/runs/<job id>/ (complete or not at all: a hidden temporary folder
    renamed into place); only names in ``worker.FILES``. Returns the folder relative to ``out_dir``."""
    unknown = set(files) - set(FILES)
    if unknown:
        raise ValueError(f"job {job_id} returned unexpected files {sorted(unknown)}")
    runs = out_dir / RUNS
    runs.mkdir(parents=True, exist_ok=True)
    final, tmp = runs / job_id, runs / f".{job_id}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return f"{RUNS}/{job_id}"


def error_line(err: BaseException) -> str:
    """"Type: first line" of a failed task: the job's own exception for a RayTaskError, else Ray's (a
    worker that died, Ray's out-of-memory kill)."""
    from ..run.export import failure_line

    cause = getattr(err, "cause", None)
    return failure_line(cause if isinstance(cause, BaseException) else err)


def task_options(resources: Dict[str, float], cpus_per_job: float) -> Dict[str, Any]:
    """Ray options of one runner: a GPU where the cluster has GPUs, else ``cpus_per_job`` CPUs. No restarts
    and no retries by Ray (``max_restarts=0``, ``max_task_retries=0``): retries are the driver's, so the
    index sees each attempt, and a dead runner is replaced by a new one."""
    if resources.get("GPU", 0) >= 1:
        return {"num_gpus": 1, "num_cpus": 1, "max_restarts": 0, "max_task_retries": 0}
    return {"num_cpus": cpus_per_job, "max_restarts": 0, "max_task_retries": 0}


def slots(resources: Dict[str, float], options: Dict[str, Any]) -> int:
    """How many jobs fit on the cluster at once."""
    if options.get("num_gpus"):
        return max(1, int(resources.get("GPU", 0) // options["num_gpus"]))
    return max(1, int(resources.get("CPU", 1) // options["num_cpus"]))


class JobRunner:
    """The Ray actor that runs jobs, one per slot: its process keeps its models (``worker.MODELS``) and, on a
    GPU node, its one GPU for its whole life. Plain tasks would not do: Ray starts a GPU task in a fresh
    process by default, and a task process kept for reuse (``max_calls=0``) keeps the CUDA context of the
    first GPU it was given while Ray may assign it another (ray-project/ray#29624)."""

    def __init__(self, task: Optional[Callable[..., Dict[str, Any]]] = None):
        import ray
        import torch

        from .worker import run_job

        self.task = task or run_job
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        if cpus:  # Ray sets OMP_NUM_THREADS for the process; torch's own pool follows the runner's CPUs too
            torch.set_num_threads(max(1, int(cpus)))
        self.gpus = [str(i) for i in ray.get_gpu_ids()]

    def run(self, job: Job, turntable: bool) -> Dict[str, Any]:
        """The task's result with this runner's GPU ids added to its "worker" entry."""
        out = self.task(job, turntable)
        out["worker"]["gpus"] = self.gpus
        return out


def start_ray(address: Optional[str], num_cpus: Optional[int]) -> bool:
    """Connect to Ray (a cluster at ``address``, or a local instance in this process); returns whether this
    call started it (and so must shut it down)."""
    import logging

    import ray

    if ray.is_initialized():
        return False
    quiet = dict(logging_level=logging.WARNING, log_to_driver=False)
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
    return True


def run_batch(jobs: Sequence[Job], out_dir: str | Path, *, address: Optional[str] = None,
              num_cpus: Optional[int] = None, cpus_per_job: float = 1, retries: int = 2, retry_failed: bool = False,
              turntable: bool = False, cancel: Optional[threading.Event] = None, progress: bool = True,
              task: Optional[Callable[..., Dict[str, Any]]] = None) -> BatchIndex:
    """Run ``jobs`` on Ray into ``out_dir`` (module docstring); returns the index. ``task`` replaces
    ``worker.run_job`` (same signature: tests inject failures with it). KeyboardInterrupt is re-raised after
    the index is made consistent; a set ``cancel`` returns early the same way."""
    # 1. The index: new jobs pending, finished ones skipped
    import ray
    from tqdm import tqdm

    if retries < 0:
        raise ValueError(f"retries {retries}: must be >= 0")
    out_dir = Path(out_dir)
    index = BatchIndex(out_dir)
    todo = []
    for job in jobs:
        entry = index.add(job)
        if index.is_done(job["id"]) or (entry["status"] == "failed" and not retry_failed):
            continue
        entry.update(status="pending", attempts=0, errors=[])
        todo.append(job)
    index.save()

    # 2. Ray, and one runner per slot
    started = start_ray(address, num_cpus)
    cancel = cancel or threading.Event()
    in_flight: Dict[Any, tuple] = {}  # task ref -> (job, runner)
    idle: List[Any] = []
    try:
        resources = ray.cluster_resources()
        options = task_options(resources, cpus_per_job)
        if options["num_cpus"] > resources.get("CPU", 0):
            raise ValueError(f"cpus_per_job {cpus_per_job} is more than the {resources.get('CPU', 0):g} "
                             f"CPUs Ray has: no job could start; lower --cpus-per-job")
        runner_cls = ray.remote(**options)(JobRunner)
        idle += [runner_cls.remote(task) for _ in range(min(slots(resources, options), len(todo)))]
        queue = list(todo)

        # 3. A job on every idle runner; write each result as it arrives
        with tqdm(total=len(todo), unit="job", disable=not progress, dynamic_ncols=True) as bar:
            while (queue or in_flight) and not cancel.is_set():
                while queue and idle:
                    job, runner = queue.pop(0), idle.pop()
                    entry = index.jobs[job["id"]]
                    entry.update(status="running", attempts=entry["attempts"] + 1, started=time.time())
                    in_flight[runner.run.remote(job, turntable)] = (job, runner)
                index.save()
                bar.set_postfix(running=len(in_flight), failed=index.counts()["failed"], refresh=False)
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
                for ref in ready:
                    job, runner = in_flight.pop(ref)
                    over, runner_died = _finish(index, job, ref, retries)
                    idle.append(runner_cls.remote(task) if runner_died else runner)
                    if over:
                        bar.update(1)
                    else:
                        queue.insert(0, job)  # retried at once, ahead of the rest
                bar.set_postfix(running=len(in_flight), failed=index.counts()["failed"])
    except KeyboardInterrupt:
        cancel.set()
        raise
    finally:
        # 4. Cancelled (or interrupted): the jobs in flight are recorded so; every runner goes (its resources
        # back to a cluster that outlives the batch). Every entry still "running" counts, not only those in
        # flight: a Ctrl-C can land between marking a job running and submitting it, or between taking its
        # result and recording it (seen once in CI: exit 130 with a job left "running")
        for entry in index.jobs.values():
            if entry["status"] == "running":
                entry.update(status="cancelled")
        index.save()
        for runner in idle + [runner for _, runner in in_flight.values()]:
            ray.kill(runner)
        if started:
            ray.shutdown()
    return index


def _finish(index: BatchIndex, job: Job, ref, retries: int) -> tuple:
    """Record a finished task; returns (whether the job is over: done, or failed for good; whether its runner
    died and must be replaced)."""
    import ray

    entry = index.jobs[job["id"]]
    died = False
    try:
        out = ray.get(ref)
    except Exception as err:  # noqa: BLE001 - a RayError, or the job's own: any failure of one job is that job's
        out, error, died = None, error_line(err), isinstance(err, ray.exceptions.RayActorError)
    else:
        error = out["error"]
    if error is not None:
        entry["errors"].append(error)
        if entry["attempts"] <= retries:
            entry["status"] = "pending"
            index.save()
            return False, died
    fields: Dict[str, Any] = {"status": "failed" if error else "done", "finished": time.time()}
    if out is not None:
        folder = write_run(index.out_dir, job["id"], out["files"])
        metrics = out["metrics"]
        fields.update(folder=folder, seconds=out["seconds"], worker=out["worker"],
                      metrics={k: metrics[k] for k in METRIC_KEYS if k in metrics}
                      | {"reward": metrics.get("reward_views", {}).get("mean"),
                         "evaluation": {k: v for k, v in metrics.get("evaluation", {}).items()
                                        if isinstance(v, (bool, int, float, str))}})
    index.set(job["id"], **fields)
    return True, died


def batch_jobs(index: BatchIndex, status: str = "done") -> List[Dict[str, Any]]:
    """The index's entries with ``status``, each with its "id", in the index's order."""
    return [entry | {"id": key} for key, entry in index.jobs.items() if entry["status"] == status]
