"""The ``learned`` prior: the Stable Diffusion prior (``StableDiffusionPrior``, the same class and loader as SD
2.1) running the small latent diffusion model trained here on the shapes world (``python -m psd_gs
train-prior``; the folder ships in ``psd_gs/assets/learned_prior``, its model card beside the weights).

It lives in the shapes world: its prompts are the world's (checked before anything loads), and the shapes
rewards, the shapes report (nearest object, fidelity, hit) and the benchmarks apply to its results as to the
closed-form prior's. It runs on a CPU in float32: its UNet has 4M parameters at a 16 x 16 latent (64 px
renders, VAE factor 4). One-step guesses are decoded by the checkpoint's own VAE (``decoder = "vae"``): at
64 px that costs a few milliseconds, and there is no TAESD for these latents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch

from ..config import PriorConfig, RunConfig, knob, prior_options
from ..train import SHIPPED_PRIOR
from .shapes_world import ShapesWorld
from .stable_diffusion import StableDiffusionPrior, load_stable_diffusion


@dataclass
class LearnedOptions:
    """The learned prior's own settings (``prior.options``; ``prior.source`` = another trained folder)."""

    resolution: Optional[int] = knob(None, "side renders are resized to before encoding; none = the model's own "
                                           "(64 px, what it was trained at)", minimum=16, maximum=512)


def load_learned_prior(prior: PriorConfig, device: torch.device | str | None = None) -> StableDiffusionPrior:
    """The registry's factory: ``load_stable_diffusion`` on ``prior.source`` (default: the shipped folder),
    float32 on any device (the model is small), decoding one-step guesses with its own VAE."""
    opts = prior_options(prior)
    return load_stable_diffusion(prior.source or str(SHIPPED_PRIOR), device=device, dtype=torch.float32,
                                 decoder="vae", resolution=opts.resolution)


def check_run(cfg: RunConfig) -> None:
    """ValueError (before any load) for a prompt outside the shapes world's vocabulary."""
    ShapesWorld().select(cfg.prompt)


def memory(cfg: RunConfig, with_weights: bool = True) -> Dict[str, int]:
    """Bytes on paper: float32 weights (5.3M parameters), and activations of the VAE encoder's backward and the
    UNet's forward at 64 px (measured on a CPU: about 40 MB per view, 10 MB per UNet sample)."""
    g, views = cfg.guidance, cfg.camera.batch
    samples = views * 2 * (g.n_candidates if g.method == "psd" else 1)
    parts = {"learned prior activations": int((40 * views + 10 * samples) * 2 ** 20)}
    if with_weights:
        parts["learned prior weights"] = 22 * 2 ** 20
    return parts
