"""FLOPs per optimisation step of SDS, PSD and the reward-gradient baseline on real SD 2.1 base.

Command: `.venv/bin/python bench/step_cost.py [--neg-every 8] [--window 0,0.5] [--reward hpsv2]
[--logs logs.json] [--tflops 320]` (about 10 s on a 2-core CPU; no GPU, no weights, no network).

Two parts:
1. Component costs (`bench/flops.py`): each network of the pipeline (SD 2.1 base UNet, its VAE
   encoder/decoder, TAESD, the OpenCLIP text encoder, the reward image towers) is built from config
   dicts on the meta device and run once per sample under `torch.utils.flop_counter.FlopCounterMode`
   at 512x512 image / 64x64 latent / 224x224 reward input. FlopCounterMode counts only matmuls,
   convolutions and attention, with a multiply-add as 2 FLOPs; norms, activations, softmax,
   elementwise ops and the reward resize/normalise are not counted (they are small in FLOPs, and
   memory-bound). Backward passes are with frozen weights (gradient to the input only).
2. Per-step costs: a *call log* is a dict `component name -> number of samples` for one step (batch
   of one view), with forward and backward as separate entries (`unet_fwd`, `unet_bwd_emb`,
   `vae_enc_fwd`, `vae_enc_bwd`, `vae_dec_fwd`, `taesd_dec_fwd`, `reward_fwd`, `reward_bwd_img`,
   `text_fwd`); counts may be fractional (amortised). `compose(call_log, component_flops)` is the sum
   of count x FLOPs. The logs are recorded from the project's real `Guidance.step` over a whole
   800-step run with counting stand-ins for the prior and the reward (`bench/call_logs.py`); only
   the "naive PSD" row is written by hand. A JSON file `{method: {component: count}}` given with
   `--logs` replaces or adds methods.

Time per 1,000 steps assumes an H100 at 40% of ~800 TFLOP/s dense bf16 (320 TFLOP/s effective).
The call logs use the `sd` preset's guidance settings. The last lines: PSD over a default run / SDS,
the same for each N-candidate variant (`--candidates`), and `PSD/SDS N.NN`: PSD inside the pair
window, adaptive negative amortised over `neg_every`, divided by SDS.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping

import call_logs  # bench/call_logs.py
import flops as flops_mod  # bench/flops.py
from psd_gs.config import preset

CallLog = dict[str, float]


def compose(call_log: Mapping[str, float], component_flops: Mapping[str, float]) -> float:
    """FLOPs of one step: sum over components of (samples in the log) x (FLOPs per sample)."""
    unknown = set(call_log) - set(component_flops)
    if unknown:
        raise KeyError(f"no FLOP count for component(s) {sorted(unknown)}; known: {sorted(component_flops)}")
    return float(sum(n * component_flops[name] for name, n in call_log.items()))


def add(*logs: Mapping[str, float]) -> CallLog:
    """Sum of call logs (the calls of several stages of one step)."""
    return mix((1.0, log) for log in logs)


def mix(weighted: Iterable[tuple[float, Mapping[str, float]]]) -> CallLog:
    """Weighted sum of call logs, e.g. an average over step kinds: [(fraction, log), ...]."""
    out: CallLog = {}
    for w, log in weighted:
        for name, n in log.items():
            out[name] = out.get(name, 0.0) + w * n
    return {k: v for k, v in out.items() if v}


def naive_psd_log() -> CallLog:
    """Hand-written, for reference only (not implemented): 2 noises x {prompt, e_n, e_ref}, full VAE
    decodes of both guesses, and the e_n update at every step."""
    encode = {"vae_enc_fwd": 1, "vae_enc_bwd": 1}
    return add(encode, {"unet_fwd": 6, "vae_dec_fwd": 2, "reward_fwd": 2}, {"unet_fwd": 6, "unet_bwd_emb": 2})


LABELS = {
    "sds": "SDS",
    "psd_window": "**PSD in the pair window** (e_n update amortised)",
    "psd_outside": "PSD outside the window (e_n update amortised)",
    "psd_run": "PSD averaged over a default run",
    "psd_no_negative": "PSD without the adaptive negative (neg_lr = 0), in the window",
    "reward_grad": "reward-gradient (SDS + reward tower fwd/bwd)",
    "psd_naive": "naive PSD (hand-written: 3 embeddings, full VAE decodes, update every step)",
}
for _n in range(2, 17):
    LABELS[f"psd_n{_n}_window"] = f"PSD with N = {_n} candidates, in the window"
    LABELS[f"psd_n{_n}_run"] = f"PSD with N = {_n} candidates, averaged over a run"


def component_costs(reward: str = "hpsv2") -> tuple[dict[str, dict], dict[str, float]]:
    """(full component table, name -> FLOPs used by `compose`, with reward_* bound to the chosen tower)."""
    table = flops_mod.component_flops()
    costs = {name: float(c["flops"]) for name, c in table.items()}
    costs["reward_fwd"] = costs[f"{reward}_fwd"]
    costs["reward_bwd_img"] = costs[f"{reward}_bwd_img"]
    return table, costs


def _fmt_log(log: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {n:g}" for name, n in log.items())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sd = preset("sd").guidance
    p.add_argument("--neg-every", type=int, default=sd.neg_every,
                   help="adaptive-negative update period (default: the sd preset's, %(default)s)")
    p.add_argument("--window", default=",".join(map(str, sd.pair_window)),
                   help="pair_window as start,end fractions of the run (default: the sd preset's, %(default)s)")
    p.add_argument("--candidates", default="4,8", help="N-candidate variants to cost (comma-separated; '' none)")
    p.add_argument("--reward", default="hpsv2", choices=sorted(flops_mod.REWARD_TOWERS))
    p.add_argument("--logs", help="JSON {method: {component: samples}} replacing/adding call logs")
    p.add_argument("--tflops", type=float, default=320.0, help="effective TFLOP/s (H100: 40%% of ~800 bf16)")
    args = p.parse_args(argv)
    window = tuple(float(v) for v in args.window.split(","))
    assert len(window) == 2, "--window takes start,end"

    table, costs = component_costs(args.reward)
    print("## Components (per sample, batch 1; FlopCounterMode: matmul/conv/attention only, MAC = 2 FLOPs)\n")
    flops_mod.print_table(table)

    candidates = tuple(int(n) for n in args.candidates.split(",") if n.strip())
    logs = call_logs.recorded_logs(args.neg_every, window, candidates=candidates)
    logs["psd_naive"] = naive_psd_log()
    if args.logs:
        with open(args.logs) as f:
            logs.update({m: {k: float(v) for k, v in log.items()} for m, log in json.load(f).items()})

    sds = compose(logs["sds"], costs)
    print(f"\n## Per step (reward tower: {args.reward}; neg_every {args.neg_every}; pair_window {window}; "
          f"{args.tflops:g} TFLOP/s effective)\n")
    print("| method | call log (samples per step) | TFLOP / step | x SDS | s / 1,000 steps |")
    print("|---|---|---:|---:|---:|")
    for name, log in logs.items():
        f = compose(log, costs)
        print(f"| {LABELS.get(name, name)} | {_fmt_log(log)} | {f / 1e12:.2f} | {f / sds:.2f} | {f * 1e3 / (args.tflops * 1e12):.1f} |")

    psd = logs["psd_window"]
    f_psd = compose(psd, costs)
    print("\nBreakdown of PSD in window (amortised):\n")
    print("| component | samples | TFLOP | share |")
    print("|---|---:|---:|---:|")
    for name, n in psd.items():
        print(f"| {name} | {n:g} | {n * costs[name] / 1e12:.3f} | {n * costs[name] / f_psd:.0%} |")
    print(f"\nPSD (sd preset, N = {sd.n_candidates}) over a default run / SDS {compose(logs['psd_run'], costs) / sds:.2f}")
    for n in candidates:
        print(f"PSD with N = {n}: in the window / SDS {compose(logs[f'psd_n{n}_window'], costs) / sds:.2f}, "
              f"over a run / SDS {compose(logs[f'psd_n{n}_run'], costs) / sds:.2f}")
    print(f"PSD/SDS {f_psd / sds:.2f}")


if __name__ == "__main__":
    main()
