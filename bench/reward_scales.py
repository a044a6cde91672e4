"""What each real reward's units do to PSD's pair weight, old rule against new (issue 24), on paper.

    .venv/bin/python bench/reward_scales.py            # about a minute on 2 CPU cores

No real reward weights can be downloaded here, so each reward runs through its real loader and scoring
code on the tiny random checkpoints the tests build (tests/rewards/tiny.py): HPS v2.1 (cosine), CLIP
score (cosine), PickScore (logit_scale x cosine; the real checkpoint's logit_scale is 100, the tiny
one's is set to it here) and the aesthetic predictor (an MLP's rating). The pairs are real PSD pairs:
the closed-form shapes prior's candidates for "a cube" at t in [600, 980) from one random scene's
render (``PSDGuidance.build_pair``, N = 2), decoded and scored by each reward; the shapes world's
warm reward is the reference the shapes preset was tuned on.

Per reward: the gaps' 10th, 50th and 90th percentiles in its own units, then over the same sequence of
40 pair steps the mean weight k and the share of steps at full weight under the old rule (k = clamp(d
/ 0.01, 0, 1), the sd preset's tau before issue 24) and the new one (k = clamp(d / (3 m), 0, 1), m the
median gap so far). Random weights say nothing about a real model's preferences, only about how a
reward's units and its gaps' spread reach k: the new rule's k depends on the gaps relative to each
other only.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' tiny checkpoint builders


def gaps_of(reward, prior, steps: int = 40, seed: int = 0):
    """The scene gap of ``steps`` PSD pairs for "a cube", t from [600, 980), reward units."""
    from psd_gs.config import GuidanceConfig
    from psd_gs.guidance.psd import PSDGuidance
    from psd_gs.scene.cameras import sample_orbit

    psd = PSDGuidance(GuidanceConfig(pair_scale="none"), prior, "a cube", reward, seed=seed)
    g = torch.Generator().manual_seed(seed)
    res = 64  # the shapes preset's render size
    cams = sample_orbit(1, res, res, generator=g)
    z0 = prior.encode_images(torch.rand(1, 3, res, res, generator=g) * 0.5 + 0.5)  # a pale, unformed render
    ts = torch.randint(600, 980, (steps,), generator=g)
    return [float(psd.build_pair(z0, int(t), cams).gap[0]) for t in ts]


def weights(gaps, rule: str):
    """(mean k, share of steps at k = 1) over the sequence under ``rule``: "old" or "new"."""
    ks = []
    for i, d in enumerate(gaps):
        if rule == "old":
            k = min(d / 0.01, 1.0)
        else:
            m = sorted(gaps[:i + 1])[i // 2]  # the lower median so far, as torch's median
            k = min(d / (3.0 * m), 1.0) if m > 0 else 0.0
        ks.append(k)
    return statistics.mean(ks), sum(k >= 1.0 for k in ks) / len(ks)


def main() -> None:
    from psd_gs.priors.analytic import AnalyticPrior
    from psd_gs.rewards import load_reward
    from tests.rewards.tiny import load_tiny, write_tiny_weights

    torch.manual_seed(0)
    prior = AnalyticPrior()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tiny_weights(root)
        rewards = {"shapes-warm (reference)": load_reward("shapes-warm")}
        for name in ("hpsv2", "clip", "pickscore", "aesthetic"):
            rewards[name] = load_tiny(name, root)
        rewards["pickscore"].scale = 100.0  # the real checkpoint's exp(logit_scale); the tiny one's is 14.3
        rows = []
        for name, reward in rewards.items():
            gaps = gaps_of(reward, prior)
            q = statistics.quantiles(gaps, n=10)
            rows.append((name, q[0], statistics.median(gaps), q[-1]) + weights(gaps, "old") + weights(gaps, "new"))
    print("| reward | gap p10 | gap median | gap p90 | old rule: mean k | old: at full weight | new rule: mean k "
          "| new: at full weight |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, p10, p50, p90, ko, fo, kn, fn in rows:
        print(f"| {name} | {p10:.3g} | {p50:.3g} | {p90:.3g} | {ko:.2f} | {fo:.0%} | {kn:.2f} | {fn:.0%} |")


if __name__ == "__main__":
    main()
