"""Reward models: RewardModel.score(images [B,3,H,W] in [0,1], prompts) -> Tensor[B], by name."""

from .base import RewardModel
from .registry import REWARDS, load_reward

__all__ = ["RewardModel", "REWARDS", "load_reward"]
