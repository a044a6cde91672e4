"""Guidance methods: a Render in, named loss terms out; ``make_guidance`` builds one by name."""

from __future__ import annotations

from typing import Optional

from ..config import GuidanceConfig
from ..priors.base import DiffusionPrior
from ..registry import METHODS, resolve
from ..rewards.base import RewardModel
from .base import Guidance, GuidanceOut


def make_guidance(cfg: GuidanceConfig, prior: DiffusionPrior, prompt: str,
                  reward: Optional[RewardModel] = None, seed: int = 0) -> Guidance:
    """The guidance ``cfg.method`` names in ``psd_gs.registry.METHODS``; those marked ``needs_reward``
    get ``reward``, and a missing one is a ValueError."""
    cfg.check()
    if cfg.method not in METHODS:
        raise ValueError(f"method {cfg.method!r} is unknown; choose one of {', '.join(METHODS)}")
    entry = METHODS[cfg.method]
    cls = resolve(entry.cls)
    if not entry.needs_reward:
        return cls(cfg, prior, prompt, seed=seed)
    if reward is None:
        raise ValueError(f"method {cfg.method!r} needs a reward model; pass reward=load_reward(name)")
    return cls(cfg, prior, prompt, reward, seed=seed)


__all__ = ["Guidance", "GuidanceOut", "make_guidance"]
