"""What every rasteriser returns (``Render``) and shares: backgrounds, and the bounded chunks of views that
renders without grad go in. The backends import this module, and ``psd_gs.render`` re-exports it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch


@dataclass
class Render:
    """One batch of B rendered views.

    rgb:   [B, H, W, 3] in [0, 1] (background composited in; clamp is not applied, SH colours are
           clamped at 0 as in gsplat, so values can exceed 1 only if the scene's colours do).
    alpha: [B, H, W, 1] in [0, 1], accumulated opacity.
    depth: [B, H, W, 1] expected camera-space depth (sum w z / alpha; 0 where alpha is 0), world units.
    info:  what gsplat's strategies read: ``means2d`` [B, N, 2] pixels (grad retained while training),
           ``radii`` [B, N, 2] int pixels (0 = culled), ``width``, ``height``, ``n_cameras``,
           ``gaussian_ids`` (None: not packed), ``depths`` [B, N].
    """

    rgb: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    info: Dict[str, Any] = field(default_factory=dict)


def as_background(background: Optional[torch.Tensor | float], batch: int, like: torch.Tensor) -> torch.Tensor:
    """Background colour(s) as [B, 3] on ``like``'s device and dtype (None -> black)."""
    if background is None:
        return like.new_zeros(batch, 3)
    bg = torch.as_tensor(background, dtype=like.dtype, device=like.device)
    if bg.ndim == 0:
        bg = bg.expand(3)
    if bg.shape[-1] != 3 or bg.ndim > 2 or (bg.ndim == 2 and bg.shape[0] not in (1, batch)):
        raise ValueError(f"background must be a scalar, [3] or [B, 3] with B={batch}; got {list(bg.shape)}")
    return bg.expand(batch, 3)


PIXELS_PER_CALL = 256 * 256  # pixels per rasteriser call in batch renders without grad (bounds their memory)


def view_chunks(n_views: int, width: int, height: int) -> List[slice]:
    """Slices of ``n_views`` views of ``width`` x ``height`` px, each holding at most PIXELS_PER_CALL pixels
    (at least one view). Renders without grad (previews, turntables, evaluation, the shapes prior's pose
    grid) go chunk by chunk, so their memory stays bounded at any resolution: the CPU rasteriser keeps
    about 180 bytes per (pixel, Gaussian) pair, and a 256 px view of 3,000 Gaussians has about 1M pairs."""
    per_call = max(1, PIXELS_PER_CALL // max(width * height, 1))
    return [slice(i, min(i + per_call, n_views)) for i in range(0, n_views, per_call)]
