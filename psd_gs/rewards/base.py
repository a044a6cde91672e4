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


class Affine(RewardModel):
    """``reward`` in other units: scale * R + shift (scale > 0), the same preference. What PSD's pair
    weight must not notice (issue 24: tests/guidance/test_pair_scale.py, bench/shapes_psd.py --reward-scale)."""

    def __init__(self, reward: RewardModel, scale: float = 1.0, shift: float = 0.0):
        if not scale > 0:
            raise ValueError(f"reward scale {scale}: must be > 0 (a negative scale reverses the preference)")
        self.reward, self.scale, self.shift = reward, scale, shift
        self.name = f"{reward.name} x{scale:g}{shift:+g}"

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return self.reward.score(images, prompts) * self.scale + self.shift
