"""CUDA backend: our scene and cameras mapped onto ``gsplat.rasterization`` (gsplat 1.5.3).

What maps to what (N Gaussians, B cameras):

    gsplat argument   ours                                   shape
    means             scene.means                            [N, 3]
    quats             scene.quats (raw; gsplat normalises)   [N, 4] wxyz
    scales            scene.scales = exp(log_scales)         [N, 3]
    opacities         scene.opacities = sigmoid(logits)      [N]
    colors            scene.sh, with sh_degree=scene.sh_degree  [N, (d + 1)^2, 3]
    viewmats, Ks      cameras.viewmats, cameras.Ks           [B, 4, 4], [B, 3, 3]
    width, height     cameras.width, cameras.height
    backgrounds       as_background(background)              [B, 3]
    fixed             render_mode="RGB+ED", packed=False, rasterize_mode="classic",
                      eps2d=0.3, near_plane=0.01

gsplat's SH colour is clamp_min(SH + 0.5, 0), as ours. Its 4-channel output is split into rgb
[B, H, W, 3] and depth [B, H, W, 1]. "ED" depth is sum(w z) / alpha.clamp(min=1e-10); the
background enters the depth channel as 0, so where alpha == 0 the numerator is exactly 0 and depth is
0, and wherever alpha > 0 it is >= 1/255 (every contribution is), so the clamp never bites: this is
exactly the CPU backend's "sum(w z) / alpha, 0 where alpha is 0".

Culling: gsplat 1.5.3 gives each Gaussian a box of half-size ceil(k sqrt(cov_ii)) px with
k = min(3.33, sqrt(2 ln(255 o))) -- for o <= 1 that is the bounding box of the alpha >= 1/255
ellipse -- drops Gaussians with o < 1/255 (radii 0), then applies alpha >= 1/255 per pixel in
16 px tiles. The CPU backend applies the exact alpha >= 1/255 rule everywhere, so images differ
only by float32 / fast-math effects at fringes (~1e-3). The CPU backend computes ``info["radii"]``
by the same rule, so the densifier sees the same visibility on both devices.

``info`` is gsplat's own dict: ``means2d`` [B, N, 2], ``radii`` [B, N, 2] int32, ``depths`` [B, N],
``gaussian_ids`` None (not packed), ``width``, ``height``, ``n_cameras``, and gsplat's tile data.
gsplat is imported when called, so CPU-only code never needs it.

Kernels: gsplat's pip package ships CUDA sources, not binaries. On first use it compiles them with
the host's CUDA toolkit (minutes; the Docker image does it at build time); without a toolkit it
prints a warning and leaves its extension as None, and any render would then fail with an
AttributeError. ``kernels_status`` finds that out once, and ``psd_gs.render.rasterize`` falls back to
the PyTorch rasteriser (on the GPU) when the kernels are unavailable.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Tuple

import torch

from ..scene.cameras import Cameras
from ..scene.gaussians import GaussianScene
from .base import Render, as_background

EPS2D = 0.3
NEAR_PLANE = 0.01


@functools.lru_cache(maxsize=1)
def kernels_status() -> Tuple[bool, str]:
    """(True, what loaded) when gsplat's CUDA kernels are usable, else (False, why not). Cached.

    Importing gsplat's backend builds the kernels if a CUDA toolkit is present and no build is cached
    (minutes, once per host); call it only where CUDA is available.
    """
    try:
        import gsplat
        from gsplat.cuda._backend import _C
    except Exception as err:  # a failed JIT build raises from the import: any error means "unusable"
        reason = (str(err).strip().splitlines() or [""])[0][:300]
        return False, f"gsplat's CUDA kernels failed to build or load ({type(err).__name__}: {reason})"
    if _C is None:
        return False, ("gsplat's CUDA kernels are not built and no CUDA toolkit (nvcc) was found to build "
                       "them; install the CUDA toolkit matching torch (or use the Docker image) for speed")
    return True, f"gsplat {gsplat.__version__} CUDA kernels loaded"


def _gsplat_rasterization() -> Callable:
    """``gsplat.rasterization``, imported on first use (tests monkeypatch this function)."""
    from gsplat import rasterization

    return rasterization


def rasterize_gsplat(scene: GaussianScene, cameras: Cameras,
                     background: Optional[torch.Tensor | float] = None) -> Render:
    """Render ``scene`` from the B ``cameras`` with gsplat; gradients flow to ``scene.params``.

    background: None (black), scalar, [3] or [B, 3]. Returns rgb [B, H, W, 3], alpha [B, H, W, 1],
    depth [B, H, W, 1] and gsplat's ``info`` (see the module docstring).
    """
    means = scene.means
    B = len(cameras)
    out, alpha, meta = _gsplat_rasterization()(
        means=means,
        quats=scene.quats,
        scales=scene.scales,
        opacities=scene.opacities,
        colors=scene.sh,
        viewmats=cameras.viewmats.to(device=means.device, dtype=means.dtype),
        Ks=cameras.Ks.to(device=means.device, dtype=means.dtype),
        width=cameras.width,
        height=cameras.height,
        near_plane=NEAR_PLANE,
        eps2d=EPS2D,
        sh_degree=scene.sh_degree,
        packed=False,
        backgrounds=as_background(background, B, means),
        render_mode="RGB+ED",
        rasterize_mode="classic",
    )
    info = dict(meta)
    info.setdefault("width", cameras.width)
    info.setdefault("height", cameras.height)
    info.setdefault("n_cameras", B)
    info.setdefault("gaussian_ids", None)
    return Render(rgb=out[..., :3], alpha=alpha, depth=out[..., 3:4], info=info)
