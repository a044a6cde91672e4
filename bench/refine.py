"""Refine a splat (issue 26): from objects a preference does not like, does each method move them its way, and
how far from the input?

    .venv/bin/python bench/refine.py                        # warm and cool, 200 steps, writes .cache/bench-refine/
    .venv/bin/python bench/refine.py --rewards shapes-warm --references "green cube,blue sphere" --sds-seeds 0
    .venv/bin/python bench/refine.py --picture docs/refine-before-after.png   # the README's before/after

Inputs, per reward (``shapes-warm``, ``shapes-cool``): the shapes world's reference objects that the reward does
not prefer among the objects their shape allows (the green cube under warm: "a cube" allows the red one), as
psd-gs writes them (``ShapesWorld.build``), and the SDS results (``--sds-prompts`` x ``--sds-seeds``, 400
steps, made once and kept in the work folder) whose object is not the reward's preferred one. Each input is
refined with the prompt naming its shape ("a cube"), in its own units (``scene.frame = own``: they are psd-gs
results), by sds, psd, psd with ``scene.keep = geometry`` and reward_grad, ``--steps`` steps, seed 0.

Per run (metrics.json's refine record): the reward before and after over 8 orbit views, the change to the
input (PSNR of the renders, silhouette IoU), and whether what ``keep`` keeps is bit for bit the input's.
Table per reward: inputs whose reward rose by more than ``RAISED`` (0.01, the reward's spread between two
renders of one object), mean rise (sd), PSNR to the input, IoU (mean, lowest, share >= 0.9), kept bit for bit.
Every run's numbers go to ``--json``; a rerun skips the runs already there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Dict, List

import torch

from psd_gs.config import preset
from psd_gs.priors.shapes_world import ShapesWorld
from psd_gs.run.models import ModelCache
from psd_gs.run.loop import run
from psd_gs.run.refine import refine_config
from psd_gs.scene.ply import save_ply

METHODS = {"sds": ("sds", "none"), "psd": ("psd", "none"), "psd_keep_geometry": ("psd", "geometry"),
           "reward_grad": ("reward_grad", "none")}
RAISED = 0.01
SHAPES = ("cube", "sphere", "torus", "cone")


def shape_prompt(name: str) -> str:
    """"a cube" for "green cube"."""
    return "a " + next(s for s in SHAPES if name.endswith(s))


def preferred(world: ShapesWorld, prompt: str, reward) -> str:
    """The object among those ``prompt`` allows that ``reward`` scores highest on its reference render (the shapes
    report's own judgement, as ``bench/shapes_psd.py``'s)."""
    from psd_gs.run.evaluate import eval_cameras, shapes_report

    return shapes_report(world.build(world.select(prompt)[0]), prompt, reward, eval_cameras(8, 64), world)["preferred"]


def sds_results(work: Path, prompts: List[str], seeds: List[int], cache: ModelCache) -> List[dict]:
    """SDS runs (400 steps) of each prompt and seed, made once: [{"prompt", "seed", "ply", "nearest"}]."""
    made = []
    for prompt in prompts:
        for seed in seeds:
            folder = work / "sds" / f"{prompt.replace(' ', '_')}-{seed}"
            if not (folder / "made.json").exists():
                cfg = preset("shapes", prompt=prompt, seed=seed, out_dir=str(folder), turntable=False, mesh=False,
                             preview_every=0)
                cfg.guidance.method = "sds"
                prior, reward = cache.for_run(cfg)
                result = run(cfg, prior=prior, reward=reward or cache.reward(cfg.reward, torch.device("cpu")))
                save_ply(result.scene, folder / "scene.ply")
                (folder / "made.json").write_text(json.dumps({"nearest": result.metrics["evaluation"]["nearest"]}))
            made.append({"prompt": prompt, "seed": seed, "ply": str(folder / "scene.ply"),
                         **json.loads((folder / "made.json").read_text())})
    return made


def refine_once(ply: str, prompt: str, reward: str, method: str, steps: int, cache: ModelCache, tmp: str) -> dict:
    guidance, keep = METHODS[method]
    cfg = preset("shapes", prompt=prompt, reward=reward, out_dir=tmp, turntable=False, mesh=False, preview_every=0)
    cfg.guidance.method = guidance
    cfg.scene.frame = "own"
    refine_config(cfg, ply, keep)
    cfg.steps = steps
    prior, model = cache.for_run(cfg)
    t0 = time.perf_counter()
    result = run(cfg, prior=prior, reward=model or cache.reward(reward, torch.device("cpu")))
    r = result.metrics["refine"]
    return {"reward_before": r["reward_before"], "reward_after": r["reward_after"], "psnr": r["psnr_to_input"],
            "iou": r["silhouette_iou"], "kept": r["kept_unchanged"], "keep": keep,
            "nearest_after": result.metrics["evaluation"]["nearest"], "seconds": time.perf_counter() - t0,
            "out": str(result.out_dir)}


def fidelity(row: dict) -> float:
    """PSNR (dB) of the refined scene to the world object it is nearest to (the run's shapes report)."""
    return json.loads((Path(row["out"]) / "metrics.json").read_text())["evaluation"]["psnr"]


def table(rows: List[dict], title: str) -> str:
    lines = [f"\n{title}", "| method | inputs raised | mean rise (sd) | PSNR to input dB (lowest) | IoU mean (lowest) | "
             "IoU >= 0.9 | now the preferred object | its PSNR to that object dB | kept bit for bit | s/run |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for method in METHODS:
        rs = [r for r in rows if r["method"] == method]
        if not rs:
            continue
        rise = [r["reward_after"] - r["reward_before"] for r in rs]
        psnr, iou = [min(r["psnr"], 99.0) for r in rs], [r["iou"] for r in rs]
        sd = statistics.stdev(rise) if len(rise) > 1 else 0.0
        kept = f"{sum(r['kept'] for r in rs)}/{len(rs)}" if rs[0]["keep"] != "none" else "-"
        became = [fidelity(r) for r in rs if r["nearest_after"] == r["preferred"]]
        close = f"{statistics.mean(became):.1f} ({min(became):.1f})" if became else "-"
        lines.append(f"| {method} | {sum(x > RAISED for x in rise)}/{len(rs)} | {statistics.mean(rise):+.3f} ({sd:.3f}) | "
                     f"{statistics.mean(psnr):.1f} ({min(psnr):.1f}) | {statistics.mean(iou):.3f} ({min(iou):.3f}) | "
                     f"{sum(x >= 0.9 for x in iou)}/{len(rs)} | {len(became)}/{len(rs)} | {close} | {kept} | {statistics.mean(r['seconds'] for r in rs):.1f} |")
    return "\n".join(lines)


def picture(path: str, rows: List[dict]) -> None:
    """Rows: the input, then each method's result (the first input under the first reward), 4 orbit views."""
    import imageio.v3 as iio
    import numpy as np

    from psd_gs.run.evaluate import eval_cameras
    from psd_gs.run.export import to_uint8
    from psd_gs.run.evaluate import render_views
    from psd_gs.scene.ply import load_ply

    first = rows[0]
    chosen = [r for r in rows if r["input"] == first["input"] and r["reward"] == first["reward"]]
    cams = eval_cameras(4, 128, 2.0)
    scenes = [load_ply(first["ply"])] + [load_ply(Path(r["out"]) / "scene.ply") for r in chosen]
    grid = [np.concatenate(list(to_uint8(render_views(s, cams))), 1) for s in scenes]
    iio.imwrite(path, np.concatenate(grid, 0))
    print(f"wrote {path}: rows input, {', '.join(r['method'] for r in chosen)} ({first['input']}, {first['reward']})")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rewards", default="shapes-warm,shapes-cool")
    p.add_argument("--references", default="", help="comma-separated object names (default: every one the reward "
                                                     "does not prefer)")
    p.add_argument("--sds-prompts", default="a cube,a sphere,a torus")
    p.add_argument("--sds-seeds", default="0,1,2,3", help="comma-separated; '' for none")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--work", default=".cache/bench-refine", help="the SDS inputs and the refined runs")
    p.add_argument("--json", default="", help="every run's numbers (default: WORK/runs.json); reruns skip what is there")
    p.add_argument("--picture", default="", help="write the before/after picture of the first input here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    world, cache, work = ShapesWorld(), ModelCache(), Path(args.work)
    (work / "refs").mkdir(parents=True, exist_ok=True)
    out = Path(args.json or work / "runs.json")
    rows: List[dict] = json.loads(out.read_text()) if out.exists() else []
    done = {(r["input"], r["reward"], r["method"]) for r in rows}
    seeds = [int(s) for s in args.sds_seeds.split(",") if s.strip()]
    sds = sds_results(work, [s.strip() for s in args.sds_prompts.split(",")], seeds, cache) if seeds else []
    methods = [m.strip() for m in args.methods.split(",")]
    names = [s.strip() for s in args.references.split(",") if s.strip()] or [o.name for o in world.objects]
    for reward in [r.strip() for r in args.rewards.split(",")]:
        model = cache.reward(reward, torch.device("cpu"))
        inputs: List[Dict[str, str]] = []
        for name in names:
            prompt = shape_prompt(name)
            pref = preferred(world, prompt, model)
            if pref != name:
                ply = work / "refs" / f"{name.replace(' ', '_')}.ply"
                if not ply.exists():
                    save_ply(world.build([o.name for o in world.objects].index(name)), ply)
                inputs.append({"input": name, "group": "reference", "ply": str(ply), "prompt": prompt, "preferred": pref})
        for s in sds:
            pref = preferred(world, s["prompt"], model)
            if s["nearest"] != pref:
                inputs.append({"input": f"SDS {s['prompt']} seed {s['seed']} ({s['nearest']})", "group": "SDS result",
                               "ply": s["ply"], "prompt": s["prompt"], "preferred": pref})
        for item in inputs:
            for method in methods:
                if (item["input"], reward, method) in done:
                    continue
                row = item | {"reward": reward, "method": method} | refine_once(
                    item["ply"], item["prompt"], reward, method, args.steps, cache, str(work / "runs"))
                rows.append(row)
                out.write_text(json.dumps(rows, indent=1))
                print(json.dumps({k: row[k] for k in ("input", "reward", "method", "reward_before", "reward_after",
                                                     "psnr", "iou")}), flush=True)
    print(f"\n{args.steps} steps; inputs the reward does not prefer; rise = reward after - before over 8 orbit views")
    for reward in dict.fromkeys(r["reward"] for r in rows):
        for group in ("reference", "SDS result"):
            rs = [r for r in rows if r["reward"] == reward and r["group"] == group]
            if rs:
                print(table(rs, f"{reward}, {group} inputs ({len({r['input'] for r in rs})})"))
        print(table([r for r in rows if r["reward"] == reward], f"{reward}, all inputs"))
    print(table(rows, "both rewards, all inputs"))
    if args.picture:
        picture(args.picture, [r for r in rows if Path(r["out"]).exists()])


if __name__ == "__main__":
    main()
