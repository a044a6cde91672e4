"""Guidance methods: a Render in, a loss whose gradient carries the method's update out."""

from __future__ import annotations

from typing import Optional

from ..config import GuidanceConfig
from ..priors.base import DiffusionPrior
from ..rewards.base import RewardModel
from .base import Guidance, GuidanceOut
from .psd import PSDGuidance
from .reward_grad import RewardGradGuidance
from .sds import SDSGuidance


def make_guidance(cfg: GuidanceConfig, prior: DiffusionPrior, prompt: str,
                  reward: Optional[RewardModel] = None, seed: int = 0) -> Guidance:
    """The guidance ``cfg.method`` names; "psd" and "reward_grad" need a reward model."""
    cfg.check()
    if cfg.method == "sds":
        return SDSGuidance(cfg, prior, prompt, seed)
    if reward is None:
        raise ValueError(f"method {cfg.method!r} needs a reward model; pass reward=load_reward(name)")
    cls = PSDGuidance if cfg.method == "psd" else RewardGradGuidance
    return cls(cfg, prior, prompt, reward, seed)


__all__ = ["Guidance", "GuidanceOut", "SDSGuidance", "PSDGuidance", "RewardGradGuidance", "make_guidance"]
