"""rasterize(scene, cameras, background) -> Render, on whichever backend suits the scene's device.

CUDA tensors go to gsplat's fused rasteriser (``gsplat_backend``); CPU tensors to our PyTorch
rasteriser (``torch_backend``), which follows the same maths (EWA splatting with gsplat's 0.3 px
low-pass, alpha = min(0.999, o * exp(-q/2)) kept where alpha >= 1/255, front-to-back compositing that
stops before transmittance falls to 1e-4). When gsplat's CUDA kernels are unavailable (no CUDA
toolkit to build them, a failed build), CUDA scenes are rendered by the PyTorch rasteriser on the
GPU instead: slower, same images; a warning says so once, and ``renderer_status`` reports it to the
app page and ``python -m psd_gs doctor``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

log = logging.getLogger(__name__)
_warned: set = set()  # fallback reasons already warned about

from ..cameras import Cameras
from ..gaussians import GaussianScene


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


def backend_for(device: torch.device) -> str:
    """"gsplat" for CUDA when gsplat's kernels load, else "torch" (warning once when CUDA falls back)."""
    if device.type != "cuda":
        return "torch"
    from . import gsplat_backend

    ok, why = gsplat_backend.kernels_status()
    if ok:
        return "gsplat"
    if why not in _warned:
        _warned.add(why)
        message = f"rendering CUDA scenes with the PyTorch rasteriser (slower): {why}"
        log.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return "torch"


def renderer_status(device: torch.device) -> str:
    """One line for people: which rasteriser renders scenes on ``device``, and why."""
    if device.type != "cuda":
        return "PyTorch rasteriser on the CPU"
    from . import gsplat_backend

    ok, why = gsplat_backend.kernels_status()
    return f"gsplat CUDA rasteriser ({why})" if ok else f"PyTorch rasteriser on the GPU, a fallback: {why}"


def rasterize(scene: GaussianScene, cameras: Cameras, background: Optional[torch.Tensor | float] = None) -> Render:
    """Render ``scene`` from every camera in ``cameras``; gradients flow to every scene parameter."""
    if backend_for(scene.device) == "gsplat":
        from . import gsplat_backend

        return gsplat_backend.rasterize_gsplat(scene, cameras, background)
    from . import torch_backend

    return torch_backend.rasterize_torch(scene, cameras, background)
