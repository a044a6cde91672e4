"""The memory estimate (psd_gs/run/memory.py) against the measured peak of real shapes-world runs.

    .venv/bin/python bench/memory_bench.py [--sizes 32,64,128] [--steps 60]

Each size runs in a fresh process (so its peak is its own): the pose grid is rendered first (into a
cache of its own, so the precompute's peak is part of the measurement), then a PSD run of ``--steps``
steps with its evaluation and turntable. Prints the process's resident memory before the run, the
estimate (before + the run's parts) and the measured peak (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = """
import json, os, resource, sys
import torch
from psd_gs.config import preset
from psd_gs.run.loop import run
from psd_gs.run.memory import GB, in_use, run_estimate
torch.set_num_threads(2)
res, steps, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cfg = preset("shapes", prompt="a sphere", steps=steps, out_dir=out, preview_every=10)
cfg.camera.resolution = ((0.0, res),)
before = in_use(torch.device("cpu"))
est = run_estimate(cfg)
run(cfg)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"res": res, "before": before / GB, "estimate": (before + est.total) / GB, "peak": peak / GB,
                  "parts": est.describe()}))
"""


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="32,64,128", help="resolutions, comma-separated (default: 32,64,128)")
    p.add_argument("--steps", type=int, default=60, help="steps per run (default: 60)")
    args = p.parse_args(argv)
    rows = []
    for res in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            env_cache = {"PSD_GS_CACHE": f"{tmp}/cache"}
            out = subprocess.run([sys.executable, "-c", CHILD, str(res), str(args.steps), f"{tmp}/runs"],
                                 capture_output=True, text=True, env=dict(os.environ, **env_cache), check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| px | in use before, GB | estimate, GB | measured peak, GB | estimate / peak | parts (GB) |")
    print("|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['res']} | {r['before']:.2f} | {r['estimate']:.2f} | {r['peak']:.2f} | "
              f"{r['estimate'] / r['peak']:.2f} | {r['parts']} |")


if __name__ == "__main__":
    main()
