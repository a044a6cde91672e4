"""The shapes world's rewards: fixed preferences that know nothing of the objects or the prompt.

Colour preferences (a channel preference w over the foreground):

    score = sum_pixels f * (w . rgb) / sum_pixels f,  f = 1 - min_c(rgb) (0 on the white background,
    1 on any saturated colour);
    warm: w = (1, -1/2, -1/2), i.e. R - (G + B) / 2     cool: w = (-1/2, -1/2, 1), i.e. B - (R + G) / 2

Shape preferences (issue 24: preferences that are not about colour, with reward gaps between objects
5 to 50 times smaller than the colour ones), on the silhouette s = clamp(4 f, 0, 1) (any colour 0.25
away from white counts fully, so the colour of an object does not change its silhouette):

    size: the share of the image the silhouette covers, mean_pixels s, in [0, 1] (bigger is better)
    low:  the silhouette's mean depth down the image, sum s y / sum s, y = 0 at the top row and 1 at the
          bottom, in [0, 1] (an object whose mass sits low is better)

On the world's objects (psd_gs/assets/shapes.json) no preference ties two objects one prompt allows
that it can tell apart (colour preferences cannot tell a yellow cube from a yellow torus, shape
preferences a blue cube from a green one). Maximised by its pixel gradient, a colour preference paints
everything one saturated colour, a shape preference grows or drops a blot: the reward hacking PSD should
avoid. The prompt is ignored.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .base import RewardModel

COLOURS = {"warm": (1.0, -0.5, -0.5), "cool": (-0.5, -0.5, 1.0)}
SHAPES = ("size", "low")
PREFERENCES = tuple(COLOURS) + SHAPES


class ShapesReward(RewardModel):
    """One of ``PREFERENCES``: "warm" or "cool" (colour), "size" or "low" (silhouette)."""

    def __init__(self, preference: str = "warm", device: torch.device | str | None = None):
        if preference not in PREFERENCES:
            raise ValueError(f"unknown shapes preference {preference!r}; choose one of {sorted(PREFERENCES)}")
        self.name = f"shapes-{preference}"
        self.preference = preference

    def score(self, images: torch.Tensor, prompts: Sequence[str] | str = ()) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> [B] in about [-1, 1] (colour) or [0, 1] (shape); differentiable."""
        x = images.float()
        fg = 1.0 - x.min(dim=1).values  # [B, H, W]
        if self.preference in COLOURS:
            value = torch.einsum("bchw,c->bhw", x, torch.tensor(COLOURS[self.preference], device=x.device))
            return (fg * value).flatten(1).sum(1) / fg.flatten(1).sum(1).clamp_min(1e-6)
        s = (4.0 * fg).clamp(0.0, 1.0)
        if self.preference == "size":
            return s.flatten(1).mean(1)
        y = torch.linspace(0.0, 1.0, x.shape[-2], device=x.device).view(1, -1, 1)
        return (s * y).flatten(1).sum(1) / s.flatten(1).sum(1).clamp_min(1e-6)


def load_warm(device: torch.device | str | None = None) -> ShapesReward:
    """The registry's "shapes-warm" factory."""
    return ShapesReward("warm", device)


def load_cool(device: torch.device | str | None = None) -> ShapesReward:
    """The registry's "shapes-cool" factory."""
    return ShapesReward("cool", device)


def load_size(device: torch.device | str | None = None) -> ShapesReward:
    """The registry's "shapes-size" factory."""
    return ShapesReward("size", device)


def load_low(device: torch.device | str | None = None) -> ShapesReward:
    """The registry's "shapes-low" factory."""
    return ShapesReward("low", device)
