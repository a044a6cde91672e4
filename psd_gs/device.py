"""Where things run: one rule for the "auto" device, used by the loop, the priors and the rewards.

``resolve_device(None | "auto")`` is ``$PSD_GS_DEVICE`` when that is set, else CUDA when available,
else the CPU. The test suite sets ``PSD_GS_DEVICE=cpu``, so a GPU host runs the same CPU tests as CI
(their determinism checks assume CPU arithmetic); CUDA tests name ``"cuda"`` explicitly.

``to_device`` moves small host tensors (cameras, a background colour) to the GPU without making the
host wait for the GPU: from pageable memory a CUDA copy first synchronises the stream, so on CUDA the
tensor is pinned and copied with ``non_blocking=True``.
"""

from __future__ import annotations

import os

import torch

ENV = "PSD_GS_DEVICE"


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"`` -> $PSD_GS_DEVICE if set, else ``cuda`` when available, else ``cpu``;
    anything else -> ``torch.device(name)``. ValueError names a CUDA request on a machine without one."""
    if name is None or str(name) == "auto":
        name = os.environ.get(ENV) or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(name)!r}: CUDA is not available on this machine; use cpu or auto")
    return device


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; host-to-GPU copies go through pinned memory without a host sync."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
