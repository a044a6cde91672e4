"""How much memory a run will need, estimated before it starts, and the budget it must fit.

A server offers only what fits its budget and refuses, in milliseconds, a request that would not fit,
saying what would. The estimate adds up:

- the process as it is now (its resident memory on the CPU; what torch holds on a GPU), plus the
  weights of models not loaded yet;
- the training render: the CPU rasteriser keeps about 350 bytes per (pixel, Gaussian) pair with
  autograd (measured: 315-405), and a fresh cloud of N Gaussians covers each pixel about
  16 (N / 3000)^(1/3) times (measured: 15-19 at N = 3,000 from 64 to 512 px, 30 at N = 20,000), times
  the views per step, with a factor 2 for Gaussians that grow during the run;
- the mesh step (``mesh_bytes``), when the run writes a mesh;
- renders without grad (previews, turntable, evaluation, the mesh's depth views, the shapes prior's pose grid), which go in
  calls of at most ``render.PIXELS_PER_CALL`` pixels (or one view): about 180 bytes per pair;
- the prior's own part (its registry entry's ``memory`` hook: the shapes world's pose-grid latents;
  Stable Diffusion's activations) and the reward's weights (``RewardEntry.weights_gb``).

On CUDA the rasteriser is gsplat, which keeps tile intersections rather than pairs; its figure here
(48 bytes per pair) is on paper, as is everything about the SD path. ``bench/memory_bench.py`` holds the
CPU figures against measured peaks.

Budget: ``--max-memory-gb``, else 60% of the machine's RAM (or of the container's limit) on the CPU, and
90% of the GPU's memory that is free when the server starts.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ..mesh.carve import MAX_PX, N_VIEWS, VOXEL_CHUNK
from ..config import RunConfig
from ..registry import PRIORS, REWARDS, resolve
from ..render import PIXELS_PER_CALL

GB = 2 ** 30
BYTES_PER_PAIR = {"cpu": 350, "cuda": 48}  # with autograd
BYTES_PER_PAIR_NO_GRAD = {"cpu": 180, "cuda": 24}
GROWTH = 2.0  # Gaussians grow and overlap more as a run goes on
CPU_SHARE, GPU_SHARE = 0.6, 0.9


def pairs_per_pixel(n_gaussians: int) -> float:
    """How many Gaussians cover a pixel of a fresh cloud, on average over the image."""
    return 16.0 * (max(n_gaussians, 1) / 3000.0) ** (1.0 / 3.0)


@dataclass
class Estimate:
    """Bytes by part; ``total`` is their sum."""

    parts: Dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return int(sum(self.parts.values()))

    def describe(self) -> str:
        return ", ".join(f"{name} {value / GB:.2f}" for name, value in self.parts.items() if value >= GB / 100)


def run_estimate(cfg: RunConfig, with_weights: bool = True) -> Estimate:
    """The memory ``cfg`` adds to the process (bytes by part), on its device (``cfg.device`` resolved)."""
    from ..device import resolve_device

    kind = "cuda" if resolve_device(cfg.device).type == "cuda" else "cpu"
    n = cfg.scene.max_gaussians if cfg.scene.densify else cfg.scene.n_init
    ppp = pairs_per_pixel(n)
    top = max(res for _, res in cfg.camera.resolution)
    est = Estimate()
    est.parts["training renders"] = int(cfg.camera.batch * top * top * ppp * BYTES_PER_PAIR[kind] * GROWTH)
    fusion_px = min(2 * cfg.mesh_resolution, MAX_PX) ** 2 if cfg.mesh else 0  # the mesh's views (psd_gs.mesh.carve)
    batch_pixels = max(PIXELS_PER_CALL, top * top, cfg.turntable_resolution ** 2, fusion_px)
    est.parts["renders without grad"] = int(batch_pixels * ppp * BYTES_PER_PAIR_NO_GRAD[kind] * GROWTH)
    if cfg.mesh:
        est.parts["mesh"] = mesh_bytes(cfg.mesh_resolution)
    entry = PRIORS[cfg.prior.name]
    if entry.memory:
        est.parts.update(resolve(entry.memory)(cfg, with_weights))
    if with_weights:
        est.parts[f"{cfg.reward} weights"] = int(REWARDS[cfg.reward].weights_gb * GB)
    return est


def mesh_bytes(resolution: int) -> int:
    """The mesh step (``source="depth"``) at R = resolution: its N_VIEWS views' alpha, depth and rgb at min(2R, MAX_PX) px
    (20 bytes a pixel), the grids (about 12 bytes a voxel with the padded copies and the blur) and the projection of
    one chunk of voxels into every view (about 48 bytes per voxel and view)."""
    px = min(2 * resolution, MAX_PX)
    return int(N_VIEWS * px * px * 20 + 12 * resolution ** 3 + N_VIEWS * VOXEL_CHUNK * 48)


def _container_limit() -> Optional[int]:
    """The cgroup v2 memory limit in bytes, if one is set."""
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        return None if text == "max" else int(text)
    except (OSError, ValueError):
        return None


def default_budget(device: torch.device) -> int:
    """60% of RAM (or the container's limit) on the CPU; 90% of the GPU memory free now on CUDA."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(GPU_SHARE * (free + torch.cuda.memory_reserved(device)))
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _container_limit()
    return int(CPU_SHARE * min(ram, limit) if limit else CPU_SHARE * ram)


def in_use(device: torch.device) -> int:
    """What the process holds now: resident memory on the CPU, torch's reserved memory on CUDA."""
    if device.type == "cuda":
        return int(torch.cuda.memory_reserved(device))
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def check_fits(cfg: RunConfig, budget: int, with_weights: bool = True, resolutions: List[int] = ()) -> Estimate:
    """The estimate of ``cfg``; ValueError (naming the need, the budget and what would fit) when the
    process now plus the run would pass ``budget`` bytes. ``resolutions``: sizes to suggest from."""
    from ..device import resolve_device

    device = resolve_device(cfg.device)
    est = run_estimate(cfg, with_weights)
    now = in_use(device)
    if now + est.total <= budget:
        return est
    fits = fitting_resolutions(cfg, budget, resolutions, with_weights)
    hint = (f"{', '.join(f'{r} px' for r in fits)} would fit" if fits else
            "lower camera.batch or scene.max_gaussians, or raise --max-memory-gb")
    raise ValueError(f"camera.resolution: this run needs about {(now + est.total) / GB:.1f} GB ({now / GB:.2f} GB in use "
                     f"now, then {est.describe()} GB) but this server allows {budget / GB:.1f} GB "
                     f"(--max-memory-gb); {hint}")


def fitting_resolutions(cfg: RunConfig, budget: int, resolutions: List[int], with_weights: bool = True) -> List[int]:
    """The ``resolutions`` at which ``cfg`` (one size for the whole run) fits ``budget`` now."""
    from ..device import resolve_device

    now = in_use(resolve_device(cfg.device))
    return [r for r in resolutions if now + run_estimate(_at(cfg, r), with_weights).total <= budget]


def _at(cfg: RunConfig, resolution: int) -> RunConfig:
    other = RunConfig.from_dict(cfg.to_dict())
    other.camera.resolution = ((0.0, resolution),)
    return other
