"""Call logs recorded from the real ``Guidance.step``, for ``bench/step_cost.py``.

A counting prior and a counting reward stand in for Stable Diffusion and HPSv2: they have the same
interface, tiny tensors, and count every sample that passes through each component, forward and
backward (backward counted with autograd hooks, so only passes that really run are counted). The
guidance code itself is the project's own, unchanged, so the logs are what the implementation does.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Dict

import torch
import torch.nn.functional as F

from psd_gs.scene.cameras import make_cameras
from psd_gs.config import GuidanceConfig, preset
from psd_gs.guidance import make_guidance
from psd_gs.priors.base import DiffusionPrior
from psd_gs.render import Render
from psd_gs.rewards.base import RewardModel


class CountingPrior(DiffusionPrior):
    """4x8x8 latents of a 16x16 image; a linear 'UNet' that depends on the embedding."""

    def __init__(self, counts: Counter):
        self.counts = counts
        self.device = torch.device("cpu")
        self.num_train_timesteps = 1000
        self.alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)
        self.resolution = 16

    def _count_backward(self, x: torch.Tensor, name: str) -> None:
        if x.requires_grad:
            n = x.shape[0]
            x.register_hook(lambda g: self.counts.update({name: n}))

    def encode_prompt(self, text: str) -> torch.Tensor:
        return torch.full((1, 4), float(len(text)))

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        self.counts["vae_enc_fwd"] += rgb.shape[0]
        z = F.avg_pool2d(rgb, 2).repeat(1, 2, 1, 1)[:, :4] * 2 - 1
        self._count_backward(z, "vae_enc_bwd")
        return z

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        self.counts["taesd_dec_fwd"] += z.shape[0]
        return F.interpolate(z[:, :3], scale_factor=2).sigmoid()

    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, cameras) -> torch.Tensor:
        self.counts["unet_fwd"] += z_t.shape[0]
        self.counts["unet_calls"] += 1
        if torch.is_grad_enabled() and emb.requires_grad:
            emb = emb.clone()
            self._count_backward(emb, "unet_bwd_emb")
        return 0.1 * z_t + emb[:, :, None, None] * 0.01


class CountingReward(RewardModel):
    name = "counting"

    def __init__(self, counts: Counter):
        self.counts = counts

    def score(self, images, prompts):
        self.counts["reward_fwd"] += images.shape[0]
        if images.requires_grad:
            n = images.shape[0]
            images.register_hook(lambda g: self.counts.update({"reward_bwd_img": n}))
        return images[:, 0].flatten(1).mean(1) - images[:, 2].flatten(1).mean(1)


def record(cfg: GuidanceConfig, steps: range, total: int) -> Dict[str, float]:
    """Mean samples per step of each component over ``steps`` of a ``total``-step run, one view."""
    counts: Counter = Counter()
    prior, reward = CountingPrior(counts), CountingReward(counts)
    guidance = make_guidance(cfg, prior, "a prompt", reward if cfg.method != "sds" else None, seed=0)
    rgb = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    cams = make_cameras(20.0, 0.0, 2.5, 49.1, 16, 16)
    for step in steps:
        render_rgb = rgb.clone().requires_grad_(True)
        out = guidance.step(Render(render_rgb, rgb[..., :1], rgb[..., :1], {}), cams, step, total)
        out.loss.backward()  # every term: the scene's and, on update steps, the learned negative's
    counts.pop("unet_calls", None)
    return {name: n / len(steps) for name, n in sorted(counts.items())}


def recorded_logs(neg_every: int | None = None, window=None, total: int = 800,
                  candidates: tuple = ()) -> Dict[str, Dict[str, float]]:
    """Call logs per method from runs of the real guidance with the ``sd`` preset's settings (``neg_every``
    and ``window`` override them when given); ``candidates``: N-candidate variants to record as well."""
    base = preset("sd").guidance
    if neg_every is not None:
        base.neg_every = neg_every
    if window is not None:
        base.pair_window = tuple(window)
    lo, hi = int(base.pair_window[0] * total), int(base.pair_window[1] * total)

    def psd(**changes) -> GuidanceConfig:
        return dataclasses.replace(base, method="psd", **changes)

    logs = {
        "sds": record(dataclasses.replace(base, method="sds"), range(total), total),
        "psd_window": record(psd(), range(lo, hi), total) if hi > lo else {},
        "psd_outside": record(psd(), [s for s in range(total) if not lo <= s < hi], total) if hi - lo < total else {},
        "psd_run": record(psd(), range(total), total),
        "psd_no_negative": record(psd(neg_lr=0.0), range(lo, hi), total) if hi > lo else {},
        "reward_grad": record(dataclasses.replace(base, method="reward_grad"), range(total), total),
    }
    for n in candidates:
        logs[f"psd_n{n}_window"] = record(psd(n_candidates=n), range(lo, hi), total) if hi > lo else {}
        logs[f"psd_n{n}_run"] = record(psd(n_candidates=n), range(total), total)
    return {k: v for k, v in logs.items() if v}
