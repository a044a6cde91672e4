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
from typing import Optional

import torch

from ..scene.cameras import Cameras
from ..scene.gaussians import GaussianScene
from .base import PIXELS_PER_CALL, Render, as_background, view_chunks  # noqa: F401 (the package's names)

log = logging.getLogger(__name__)
_warned: set = set()  # fallback reasons already warned about


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
