"""The project's own paper table: does PSD raise reward and hit rate over SDS while keeping fidelity?

    .venv/bin/python bench/shapes_psd.py                                  # warm reward, 3 prompts x 8 seeds
    .venv/bin/python bench/shapes_psd.py --reward shapes-cool --methods sds,psd
    .venv/bin/python bench/shapes_psd.py --prompts "a cube" --seeds 2 --steps 100   # a quick look
    .venv/bin/python bench/shapes_psd.py --methods psd --set guidance.n_candidates=8   # a variant
    .venv/bin/python bench/shapes_psd.py --preset learned --methods sds,psd,reward_grad  # the SD path, trained here

Every run is a real ``generate`` of the ``shapes`` preset (the offline closed-form world; ``--preset learned``:
the same world through the small SD trained here), evaluated
on 8 orbit views off the training grid (the report ``generate`` writes into metrics.json, from
``psd_gs.run.evaluate.shapes_report``): mean reward over the views, fidelity (PSNR to the nearest object
the prompt allows), and hit (that nearest object formed and is the one the reward prefers among those
the prompt allows). Methods (``METHODS``): sds, the preset's psd, one ablation per part of PSD, and
reward_grad, the hacking baseline; sds_preferred (SDS with the prompt naming the preferred object, e.g.
"a red cube" for "a cube") is no method but the fidelity that object allows. ``--set`` applies
overrides to every PSD variant (not to sds or reward_grad).

Per method: mean reward and its standard deviation over runs, mean and lowest PSNR, hits, s/step.
The pair diagnostic (PSD variants): at each pair step, whether the candidates' one-step guesses name
different objects (nearest reference latent among the allowed ones, from the prior's own table), and
whether the winner's names the preferred object; by t. ``--jobs 2`` runs two runs at a time, one
thread each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List

import torch

from psd_gs.config import apply_overrides, preset

# name -> guidance overrides on the shapes preset. "psd" is the preset's PSD; each ablation turns one part
# of it off (psd_n8 adds candidates, psd_with_neg the learned negative); "psd_prev" is PSD as it was before
# issue 13 (t from the whole range, lambda_p 4, the learned negative on); the *_no_floor rows let colour
# channels die at the renderer's clamp (scene.color_floor off), as every run did before issue 13.
BEFORE_32 = {"guidance.method": "psd", "guidance.n_candidates": 2, "guidance.guess_steps": 1,
             "guidance.guess_space": "latent", "guidance.keep_winner": False, "guidance.rank_by": "scene",
             "guidance.pair_t_min": 0.6, "guidance.pair_window": (0.0, 0.4), "guidance.sds_tail": 1.0}
METHODS: Dict[str, dict] = {
    "sds": {"guidance.method": "sds"},
    "psd": {"guidance.method": "psd"},
    # PSD before issue 24: the pair's gap in the reward's own units, full weight at a gap of 0.3 (set on the warm
    # reward's gaps); the preset's rule measures gaps in units of the run's median gap (tau 3 = 0.3 / 0.1)
    "psd_abs": {"guidance.method": "psd", "guidance.pair_scale": "none", "guidance.tau": 0.3},
    "psd_no_pair": {"guidance.method": "psd", "guidance.lambda_p": 0.0},
    # the pair ranks and the step follows the winner's noise, but the bracket is weighed ~0: selection alone
    "psd_select_only": {"guidance.method": "psd", "guidance.lambda_p": 1e-6},
    "psd_with_neg": {"guidance.method": "psd", "guidance.neg_lr": 0.05},  # the learned negative, off in the preset
    "psd_n8": {"guidance.method": "psd", "guidance.n_candidates": 8},
    "psd_all_t": {"guidance.method": "psd", "guidance.pair_t_min": 0.0},
    # issue 32, through a diffusion network: the variants measured on the way, each on PSD as it was before issue 32
    # (BEFORE_32: the shapes preset's PSD, which the learned preset had too): the candidates' guesses as K-step DDIM
    # samples (guess_steps), the pair term in x0 space, more candidates
    "psd_ms4": {**BEFORE_32, "guidance.guess_steps": 4},
    "psd_ms4_x0": {**BEFORE_32, "guidance.guess_steps": 4, "guidance.pair_space": "x0"},
    "psd_ms4_gs": {**BEFORE_32, "guidance.guess_steps": 4, "guidance.guess_sds": True, "guidance.pair_t_min": 0.8},
    "psd_ms4_n4": {**BEFORE_32, "guidance.guess_steps": 4, "guidance.n_candidates": 4},
    # the learned preset's PSD (issue 32) without each of its parts, and as it was before
    "psd_latent_pull": {"guidance.method": "psd", "guidance.guess_space": "latent", "guidance.guess_sds": True},
    "psd_by_scene": {"guidance.method": "psd", "guidance.rank_by": "scene"},
    "psd_no_keep": {"guidance.method": "psd", "guidance.keep_winner": False},
    "psd_before_32": BEFORE_32,
    "psd_prev": {"guidance.method": "psd", "guidance.n_candidates": 2, "guidance.pair_t_min": 0.0,
                 "guidance.lambda_p": 4.0, "guidance.neg_lr": 0.05},
    "psd_no_floor": {"guidance.method": "psd", "scene.color_floor": False},  # colours may die at the clamp
    "sds_no_floor": {"guidance.method": "sds", "scene.color_floor": False},
    "reward_grad": {"guidance.method": "reward_grad"},
    # a fidelity reference, not a method: SDS told the preferred object by name ("a red cube" for "a cube")
    "sds_preferred": {"guidance.method": "sds"},
}
T_BINS = (0, 200, 400, 600, 800, 1000)


_RECORD: Dict[str, object] = {}  # this process's current run: its prompt and its pair log


def record_pairs(prompt: str, log: List[dict], every: int = 0) -> None:
    """Log, per pair step of this process's next run, t and the objects that the candidates' guesses
    are nearest to (among those ``prompt`` allows), and the winner's. Wraps PSDGuidance.build_pair once.
    The closed-form prior: every pair step, by its own latent table. A learned prior (no table): every
    ``every``-th pair step (0: never), the decoded guesses against the objects' renders from the same
    cameras, by pixel MSE (a decode and a render of every object: it slows the run)."""
    from psd_gs.guidance.psd import PSDGuidance

    _RECORD.update(prompt=prompt, log=log, every=every, count=0)
    if "original" in _RECORD:
        return
    original = _RECORD["original"] = PSDGuidance.build_pair

    def build_pair(self, z0, t, cams):
        pair = original(self, z0, t, cams)
        _RECORD["count"] += 1
        if hasattr(self.prior, "views"):
            allowed = self.prior.world.select(_RECORD["prompt"])
            mu = self.prior.views(cams)[:, allowed].float()  # [B, A, D]
            guesses = pair.x0.flatten(2)
        elif _RECORD["every"] and _RECORD["count"] % _RECORD["every"] == 0:
            from psd_gs.priors.analytic import AnalyticPrior

            world = _RECORD.setdefault("analytic", AnalyticPrior())
            allowed = world.world.select(_RECORD["prompt"])
            mu = world.render_objects(cams)[:, allowed].flatten(2).float()  # [B, A, H W 3]
            images = self.prior.decode_latents(pair.x0.flatten(0, 1)).permute(0, 2, 3, 1)  # [N B, H, W, 3]
            guesses = images.reshape(*pair.x0.shape[:2], -1)
        else:
            return pair
        nearest = torch.cdist(guesses.transpose(0, 1), mu).argmin(-1).T  # [N, B]
        win = nearest.gather(0, pair.win[None])[0]
        objects = (self.prior if hasattr(self.prior, "views") else _RECORD["analytic"]).world.objects
        for b in range(nearest.shape[1]):
            _RECORD["log"].append({"t": t, "distinct": len(set(nearest[:, b].tolist())), "gap": float(pair.gap[b]),
                                   "winner": objects[allowed[int(win[b])]].name,
                                   "named": [objects[allowed[int(i)]].name for i in nearest[:, b]]})
        return pair

    PSDGuidance.build_pair = build_pair


def preferred_prompt(prompt: str, reward: str) -> str:
    """"a <object>" for the object among those ``prompt`` allows that ``reward`` prefers (the evaluation's
    own judgement, on a reference object's report)."""
    from psd_gs.run.evaluate import eval_cameras, shapes_report
    from psd_gs.priors.shapes_world import ShapesWorld
    from psd_gs.rewards import load_reward

    world = ShapesWorld()
    report = shapes_report(world.build(world.select(prompt)[0]), prompt, load_reward(reward), eval_cameras(8, 64))
    return f"a {report['preferred']}"


def one_run(prompt: str, method: str, seed: int, reward: str, steps: int, out_dir: str, overrides: dict,
            threads: int, preset_name: str = "shapes", scale: float = 1.0, judge: str = "",
            reward_weights: str = "", diagnose: int = 0) -> dict:
    from psd_gs.rewards import load_reward
    from psd_gs.rewards.base import Affine
    from psd_gs.rewards.learned import load_learned_hps
    from psd_gs.run.evaluate import eval_cameras, shapes_report
    from psd_gs.run.loop import run

    torch.set_num_threads(threads)
    asked = preferred_prompt(prompt, reward) if method == "sds_preferred" else prompt
    cfg = preset(preset_name, prompt=asked, seed=seed, steps=steps, reward=reward, out_dir=out_dir,
                 preview_every=0, turntable_views=4)
    apply_overrides(cfg, METHODS[method])
    if method.startswith("psd"):
        apply_overrides(cfg, overrides)
        apply_overrides(cfg, METHODS[method])  # the ablation's own setting wins over --set
    pairs: List[dict] = []
    record_pairs(prompt, pairs, diagnose)
    t0 = time.perf_counter()
    given = load_learned_hps(weights=reward_weights) if reward_weights else load_reward(reward)
    result = run(cfg, reward=Affine(given, scale) if scale != 1.0 else given)
    seconds = time.perf_counter() - t0
    rep = result.metrics["evaluation"]  # generate's own shapes report: 8 orbit views, judged by `reward`
    row = {"prompt": prompt, "method": method, "seed": seed, "reward": rep["reward"] / scale, "psnr": rep["psnr"],
           "nearest": rep["nearest"], "preferred": rep["preferred"], "hit": rep["hit"], "scale": scale,
           "pair": result.metrics.get("pair"),
           "sec_per_step": result.metrics["seconds_per_step"], "seconds": seconds, "pairs": pairs}
    if judge:  # the same scene under another reward (the rule a learned reward imitates): its score and hit
        other = shapes_report(result.scene, prompt, load_reward(judge), eval_cameras(8, cfg.camera.resolution[-1][1]))
        row.update(judge=judge, judge_reward=other["reward"], judge_hit=other["hit"], judge_preferred=other["preferred"])
    return row


def table(rows: list, title: str) -> str:
    judged = any("judge" in r for r in rows)  # --judge: the rule's reward and hits beside the trained reward's
    extra = " rule reward (sd) | rule hits |" if judged else ""
    lines = [f"\n{title}", "| method | reward (sd) | PSNR dB (sd) | lowest PSNR | hits |" + extra + " pairs informative | "
                         "mean k | s/step | runs |", "|---|---:|---:|---:|---:|" + "---:|" * (2 * judged) + "---:|---:|---:|---:|"]
    for method in METHODS:
        rs = [r for r in rows if r["method"] == method]
        if not rs:
            continue
        rew, psnr = [r["reward"] for r in rs], [r["psnr"] for r in rs]
        sd = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)
        pairs = [r["pair"] for r in rs if r.get("pair")]  # PSD's own record (runs from before issue 24: none)
        share = f"{statistics.mean(p['informative_share'] for p in pairs):.0%}" if pairs else "-"
        k = f"{statistics.mean(p['mean_k'] for p in pairs):.2f}" if pairs else "-"
        rule = ""
        if judged:
            jr = [r["judge_reward"] for r in rs]
            rule = f" {statistics.mean(jr):.3f} ({sd(jr):.3f}) | {sum(r['judge_hit'] for r in rs)}/{len(rs)} |"
        lines.append(f"| {method} | {statistics.mean(rew):.3f} ({sd(rew):.3f}) | {statistics.mean(psnr):.1f} "
                     f"({sd(psnr):.1f}) | {min(psnr):.1f} | {sum(r['hit'] for r in rs)}/{len(rs)} |{rule} {share} | {k} | "
                     f"{statistics.mean(r['sec_per_step'] for r in rs):.3f} | {len(rs)} |")
    return "\n".join(lines)


def diagnostic(rows: list) -> str:
    """Per PSD variant and t bin: pair steps, the share whose candidates name different objects, and the
    share whose winner names the preferred object."""
    lines = ["\npair diagnostic: share of pair steps whose candidates name different objects "
             "(and whose winner names the preferred one), by t",
             "| method | " + " | ".join(f"t {lo}-{hi - 1}" for lo, hi in zip(T_BINS, T_BINS[1:])) + " | all |",
             "|---|" + "---:|" * len(T_BINS)]
    for method in METHODS:
        steps = [(p, r["preferred"]) for r in rows if r["method"] == method for p in r["pairs"]]
        if not steps:
            continue
        cells = []
        for lo, hi in list(zip(T_BINS, T_BINS[1:])) + [(0, 1000)]:
            inside = [(p, pref) for p, pref in steps if lo <= p["t"] < hi]
            if not inside:
                cells.append("-")
                continue
            differ = sum(p["distinct"] > 1 for p, _ in inside) / len(inside)
            preferred = sum(p["winner"] == pref for p, pref in inside) / len(inside)
            cells.append(f"{differ:.0%} ({preferred:.0%}) of {len(inside)}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", default="a cube,a sphere,a torus", help="comma-separated; each must allow several objects")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--methods", default=",".join(m for m in METHODS if m != "sds_preferred"),
                   help=f"comma-separated from {list(METHODS)}")
    p.add_argument("--reward", default="shapes-warm", help="a reward of the shapes world: shapes-warm, shapes-cool, "
                                                           "shapes-size, shapes-low")
    p.add_argument("--judge", default="", help="also score each result with this reward (e.g. shapes-warm, the rule "
                                               "learned-hps imitates): its reward and hits in two more columns")
    p.add_argument("--reward-weights", default="",
                   help="with --reward learned-hps: another trained folder (e.g. .cache/train-reward/hps_clean)")
    p.add_argument("--reward-scale", type=float, default=1.0,
                   help="train with the reward times this (> 0; the table shows rewards in its own units)")
    p.add_argument("--preset", default="shapes", help="a preset of the shapes world: shapes (the closed-form prior) or "
                                                      "learned (the small SD trained here)")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="an override for every PSD variant, e.g. guidance.n_candidates=8 (repeatable)")
    p.add_argument("--diagnose", type=int, default=0, metavar="K",
                   help="a learned prior: name the objects of the candidates' guesses every K-th pair step (slower)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (threads per run: 2 / jobs)")
    p.add_argument("--json", default="", help="write every run's numbers here")
    p.add_argument("--from-json", default="", metavar="FILES",
                   help="comma-separated --json files of earlier invocations: print their tables together, run nothing")
    args = p.parse_args(argv)
    if args.from_json:
        rows = [r for f in args.from_json.split(",") for r in json.loads(Path(f).read_text())]
        report(rows, sorted({r["prompt"] for r in rows}, key=lambda x: [r["prompt"] for r in rows].index(x)),
               f"runs from {args.from_json}")
        return
    prompts = [s.strip() for s in args.prompts.split(",") if s.strip()]
    methods = [m.strip() for m in args.methods.split(",")]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    overrides = dict(item.split("=", 1) for item in args.set)
    threads = max(1, 2 // args.jobs)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [(prompt, method, seed) for prompt in prompts for seed in seeds for method in methods]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(one_run, prompt, method, seed, args.reward, args.steps, tmp, overrides, threads,
                               args.preset, args.reward_scale, args.judge, args.reward_weights, args.diagnose)
                   for prompt, method, seed in jobs]
        for future in futures:
            r = future.result()
            rows.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "pairs"}), flush=True)
    extra = f", --set {' '.join(args.set)}" if args.set else ""
    extra += f", preset {args.preset}" if args.preset != "shapes" else ""
    extra += f", reward x{args.reward_scale:g}" if args.reward_scale != 1.0 else ""
    extra += f", reward weights {args.reward_weights}" if args.reward_weights else ""
    extra += f", judged also by {args.judge}" if args.judge else ""
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    report(rows, prompts, f"reward {args.reward}, {args.steps} steps, seeds {seeds.start}..{seeds.stop - 1}{extra}")


def report(rows: list, prompts: List[str], heading: str) -> None:
    """Print the per-prompt tables, the all-prompts table and the pair diagnostic of ``rows``."""
    print(f"\n{heading}")
    for prompt in prompts:
        print(table([r for r in rows if r["prompt"] == prompt], f"prompt {prompt!r}"))
    print(table(rows, "all prompts"))
    print(diagnostic(rows))


if __name__ == "__main__":
    main()
