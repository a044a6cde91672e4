"""The shapes world's reward: a fixed colour preference that knows nothing of the objects.

score = sum_pixels f * (w . rgb) / sum_pixels f, with foreground weight f = 1 - min_c(rgb) (0 on the
white background, 1 on any saturated colour) and w a channel preference:

    warm: w = (1, -1/2, -1/2), i.e. R - (G + B) / 2     cool: w = (-1/2, -1/2, 1), i.e. B - (R + G) / 2

On the world's objects (psd_gs/assets/shapes.json) neither ties two colours. Maximised by its pixel gradient,
it paints everything one saturated colour: the reward hacking PSD should avoid. The prompt is ignored.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .base import RewardModel

PREFERENCES = {"warm": (1.0, -0.5, -0.5), "cool": (-0.5, -0.5, 1.0)}


class ShapesReward(RewardModel):
    """A colour preference over the foreground; ``preference`` is "warm" or "cool"."""

    def __init__(self, preference: str = "warm", device: torch.device | str | None = None):
        if preference not in PREFERENCES:
            raise ValueError(f"unknown shapes preference {preference!r}; choose one of {sorted(PREFERENCES)}")
        self.name = f"shapes-{preference}"
        self.weights = torch.tensor(PREFERENCES[preference])

    def score(self, images: torch.Tensor, prompts: Sequence[str] | str = ()) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> [B] in about [-1, 1]; differentiable."""
        x = images.float()
        fg = 1.0 - x.min(dim=1).values  # [B, H, W]
        value = torch.einsum("bchw,c->bhw", x, self.weights.to(x.device))
        return (fg * value).flatten(1).sum(1) / fg.flatten(1).sum(1).clamp_min(1e-6)


def load_warm(device: torch.device | str | None = None) -> ShapesReward:
    """The registry's "shapes-warm" factory."""
    return ShapesReward("warm", device)


def load_cool(device: torch.device | str | None = None) -> ShapesReward:
    """The registry's "shapes-cool" factory."""
    return ShapesReward("cool", device)
