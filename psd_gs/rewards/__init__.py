"""Reward models: RewardModel.score(images [B,3,H,W] in [0,1], prompts) -> Tensor[B], loaded by name."""

from __future__ import annotations

from typing import Any

from ..registry import REWARDS, resolve
from .base import RewardModel


def load_reward(name: str, device=None, **kwargs: Any) -> RewardModel:
    """The reward model ``name`` (a key of ``psd_gs.registry.REWARDS``), built by its factory with ``device``
    and ``kwargs`` (the factory's own: local weights, file names, a tiny architecture for tests).

    Raises ValueError listing the known names for an unknown ``name``.
    """
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; known rewards: {', '.join(sorted(REWARDS))}")
    return resolve(REWARDS[name].factory)(device=device, **kwargs)


__all__ = ["RewardModel", "REWARDS", "load_reward"]
