"""The project's own paper table: does PSD raise reward and hit rate over SDS while keeping fidelity?

    .venv/bin/python bench/shapes_psd.py                                  # warm reward, 3 prompts x 8 seeds
    .venv/bin/python bench/shapes_psd.py --reward shapes-cool --methods sds,psd
    .venv/bin/python bench/shapes_psd.py --prompts "a cube" --seeds 2 --steps 100   # a quick look

Every run is a real ``generate`` of the ``shapes`` preset (the offline closed-form world), evaluated
on 8 orbit views off the training grid (the report ``generate`` writes into metrics.json, from
``psd_gs.evaluate.shapes_report``): mean reward over the views, fidelity
(PSNR to the nearest object the prompt allows), and hit (that nearest object is the one the reward
prefers among those the prompt allows). Methods: sds, psd, psd_no_neg (neg_lr = 0), psd_no_pair
(lambda_p = 0) and reward_grad. Prints a table per prompt and overall, and writes every run's numbers
to --json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from psd_gs.config import preset
from psd_gs.generate import run

METHODS = {
    "sds": dict(method="sds"),
    "psd": dict(method="psd"),
    "psd_no_neg": dict(method="psd", neg_lr=0.0),
    "psd_no_pair": dict(method="psd", lambda_p=0.0),
    "reward_grad": dict(method="reward_grad"),
}


def one_run(prompt: str, method: str, seed: int, reward: str, steps: int, out_dir: str) -> dict:
    cfg = preset("shapes", prompt=prompt, seed=seed, steps=steps, reward=reward, out_dir=out_dir,
                 preview_every=0, turntable_views=4)
    for field, value in METHODS[method].items():
        setattr(cfg.guidance, field, value)
    t0 = time.perf_counter()
    result = run(cfg)
    seconds = time.perf_counter() - t0
    rep = result.metrics["evaluation"]  # generate's own shapes report: 8 orbit views, judged by `reward`
    return {"prompt": prompt, "method": method, "seed": seed, "reward": rep["reward"], "psnr": rep["psnr"], "nearest": rep["nearest"], "preferred": rep["preferred"], "hit": rep["hit"],
            "sec_per_step": result.metrics["seconds_per_step"], "seconds": seconds}


def table(rows: list, title: str) -> str:
    lines = [f"\n{title}", "| method | reward | fidelity PSNR dB | hit rate | s/step | runs |", "|---|---:|---:|---:|---:|---:|"]
    for method in METHODS:
        rs = [r for r in rows if r["method"] == method]
        if not rs:
            continue
        lines.append(f"| {method} | {statistics.mean(r['reward'] for r in rs):.3f} | "
                     f"{statistics.mean(r['psnr'] for r in rs):.1f} | {sum(r['hit'] for r in rs)}/{len(rs)} | "
                     f"{statistics.mean(r['sec_per_step'] for r in rs):.3f} | {len(rs)} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", default="a cube,a sphere,a torus", help="comma-separated; each must allow several objects")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated from {list(METHODS)}")
    p.add_argument("--reward", default="shapes-warm", help="shapes-warm or shapes-cool")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--json", default="", help="write every run's numbers here")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    prompts = [s.strip() for s in args.prompts.split(",") if s.strip()]
    methods = [m.strip() for m in args.methods.split(",")]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for prompt in prompts:
            for seed in range(args.seeds):
                for method in methods:
                    r = one_run(prompt, method, seed, args.reward, args.steps, tmp)
                    rows.append(r)
                    print(json.dumps(r), flush=True)
    print(f"\nreward {args.reward}, {args.steps} steps, seeds 0..{args.seeds - 1}")
    for prompt in prompts:
        print(table([r for r in rows if r["prompt"] == prompt], f"prompt {prompt!r}"))
    print(table(rows, "all prompts"))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
