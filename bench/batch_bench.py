"""Batch throughput: the same jobs through Ray (psd_gs.batch.runner) against one by one in a loop, and on paper for GPUs.

Command: `.venv/bin/python bench/batch_bench.py [--prompts assets/prompts/shapes.txt] [--methods psd,sds]
[--steps 400] [--cpus 2]` (about 6 minutes on the 2-core CPU at the defaults).

1. Measured here, in the shapes world (the `shapes` preset; every job writes scene.ply, mesh.glb, metrics and
   the preview, as a batch job does):
   - loop: `psd_gs.batch.worker.run_job` called for each job in turn in this process, torch on all --cpus threads,
     models loaded once (the loop's best case);
   - Ray, a job per CPU: `psd_gs.batch.runner.run_batch` on a local Ray instance with --cpus CPUs, 1 CPU per job;
   - Ray, one job at a time: the same with --cpus CPUs per job (Ray's own overhead, no parallelism).
   Wall time includes starting Ray and its workers' first imports, so it is what a user waits for.
2. On paper, for the `sd` preset on H100s: seconds per object = steps x views per step x FLOPs per view-step
   (`bench/step_cost.py`'s recorded call logs and component counts, at its 320 TFLOP/s effective, 40% of
   an H100's dense bf16), for SDS and PSD; objects per hour on 1 GPU and on 8 (one Ray task per GPU, no
   communication between them). A FLOP-bound time leaves out the rasteriser, the optimiser, memory-bound
   layers, the mesh and the export, so these are upper bounds on throughput.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def measured(jobs, cpus: int) -> list:
    from psd_gs.batch.runner import run_batch
    from psd_gs.batch.worker import run_job

    rows = []
    torch.set_num_threads(cpus)
    t0 = time.perf_counter()
    for job in jobs:
        out = run_job(job)
        assert out["error"] is None, out["error"]
    rows.append(("loop, one job after another", time.perf_counter() - t0))
    for label, per_job in ((f"Ray, {cpus} jobs at once (1 CPU each)", 1), (f"Ray, one job at a time ({cpus} CPUs)", cpus)):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            index = run_batch(jobs, tmp, num_cpus=cpus, cpus_per_job=per_job, progress=False)
            rows.append((label, time.perf_counter() - t0))
            assert index.counts()["done"] == len(jobs), index.counts()
    return rows


def on_paper(tflops: float) -> list:
    import call_logs  # bench/call_logs.py
    from step_cost import component_costs, compose

    from psd_gs.config import preset

    cfg = preset("sd")
    costs = component_costs("hpsv2")[1]
    logs = call_logs.recorded_logs(cfg.guidance.neg_every, tuple(cfg.guidance.pair_window))
    rows = []
    for label, key in (("SDS", "sds"), ("PSD (N = 2, averaged over a run)", "psd_run")):
        seconds = cfg.steps * cfg.camera.batch * compose(logs[key], costs) / (tflops * 1e12)
        rows.append((label, cfg.steps, cfg.camera.batch, seconds, 3600 / seconds, 8 * 3600 / seconds))
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", default=str(REPO / "assets" / "prompts" / "shapes.txt"))
    p.add_argument("--methods", default="psd,sds")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--tflops", type=float, default=320.0, help="effective TFLOP/s of one GPU (step_cost.py's)")
    p.add_argument("--paper-only", action="store_true", help="only the GPU estimate (seconds)")
    args = p.parse_args(argv)

    if not args.paper_only:
        from psd_gs.batch.jobs import read_jobs

        jobs = read_jobs(args.prompts, "shapes", args.methods.split(","), args.seeds, {"steps": args.steps})
        print(f"## Measured: {len(jobs)} shapes-world jobs ({args.steps} steps, {args.methods}), {args.cpus} CPUs\n")
        print("| how | wall s | jobs / min | x loop |")
        print("|---|---:|---:|---:|")
        rows = measured(jobs, args.cpus)
        for label, seconds in rows:
            print(f"| {label} | {seconds:.1f} | {len(jobs) * 60 / seconds:.2f} | {rows[0][1] / seconds:.2f} |")
    print(f"\n## On paper: the sd preset on H100s at {args.tflops:g} TFLOP/s effective (bench/step_cost.py)\n")
    print("| method | steps | views / step | s / object | objects / h, 1 GPU | objects / h, 8 GPUs |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, steps, views, seconds, one, eight in on_paper(args.tflops):
        print(f"| {label} | {steps} | {views} | {seconds:.0f} | {one:.0f} | {eight:.0f} |")


if __name__ == "__main__":
    main()
