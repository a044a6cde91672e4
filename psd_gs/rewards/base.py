"""The RewardModel contract (docs/design.md section 2)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import torch


class RewardModel(ABC):
    """A frozen 2D preference model. Higher is better.

    ``score`` is differentiable in ``images`` (the reward-gradient baseline backpropagates through
    it; PSD never does) and does its preprocessing in torch, never through PIL.
    """

    name: str

    @abstractmethod
    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1], any size; prompts: B strings (or one, broadcast).
        Returns [B] float32 scores on the images' device."""
