"""The learned prior's 2D model alone: does the small SD trained here draw what its prompt allows?

    .venv/bin/python bench/learned_prior.py                        # DDIM 50, guidance 1.5 and 7.5
    .venv/bin/python bench/learned_prior.py --scales 1,1.5,3,7.5 --steps 50

48 samples per guidance scale from ``StableDiffusionPipeline.from_pretrained(psd_gs/assets/learned_prior)``
(every object prompt with seeds 0, 1, 2, and twelve partial prompts, ``psd_gs.train.samples.eval_prompts``),
each judged by its nearest reference render over the 12 objects x 120 poses of the shapes preset's training
grid: the share whose nearest object is one the prompt allows (goal: at least 90%), split into object
prompts and partial prompts, the mean PSNR to that nearest render, and the seconds per sample.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main(argv=None) -> None:
    from diffusers import StableDiffusionPipeline

    from psd_gs.priors.shapes_world import ShapesWorld
    from psd_gs.train import SHIPPED_PRIOR
    from psd_gs.train.samples import eval_prompts, judge, reference_renders, sample

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(SHIPPED_PRIOR))
    p.add_argument("--scales", default="1.5,7.5", help="comma-separated guidance scales")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    args = p.parse_args(argv)
    world = ShapesWorld()
    pipe = StableDiffusionPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    refs = reference_renders(64)
    pairs = eval_prompts(world)
    prompts, seeds = [q for q, _ in pairs], [s for _, s in pairs]
    print(f"model {args.model}, DDIM {args.steps} steps, {len(prompts)} samples per scale")
    print("| guidance scale | allowed (all) | object prompts | partial prompts | mean PSNR to nearest (dB) | s/sample |")
    print("|---:|---:|---:|---:|---:|---:|")
    for scale in [float(s) for s in args.scales.split(",")]:
        t0 = time.perf_counter()
        images = sample(pipe, prompts, seeds, steps=args.steps, guidance_scale=scale)
        seconds = (time.perf_counter() - t0) / len(prompts)
        res = judge(images, prompts, refs, world)
        rows = res["samples"]
        full, partial = rows[:36], rows[36:]
        share = (lambda rs: f"{sum(r['allowed'] for r in rs)}/{len(rs)}")
        print(f"| {scale:g} | {share(rows)} ({res['share']:.0%}) | {share(full)} | {share(partial)} | "
              f"{statistics.mean(r['psnr'] for r in rows):.1f} | {seconds:.2f} |", flush=True)
        missed = [f"{r['prompt']!r} -> {r['nearest']}" for r in rows if not r["allowed"]]
        if missed:
            print(f"  missed at {scale:g}: " + "; ".join(missed))


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
