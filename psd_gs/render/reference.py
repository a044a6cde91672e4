"""Brute-force reference rasteriser: every Gaussian at every pixel, sorted by depth, float64.

Slow and simple on purpose; tests and ``bench/render_bench.py`` hold the CPU backend to it. Its
projection and SH come from gsplat's own pure-PyTorch functions (``gsplat.cuda._torch_impl``), so it
is independent of our ``projection.py``. Compositing follows gsplat's kernel: alpha = min(0.999,
o exp(-sigma)), skipped below 1/255, and a pixel stops before the Gaussian that would take its
transmittance to 1e-4 or below. Gaussians gsplat culls (radius 0) are left out.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..scene.cameras import Cameras
from ..scene.gaussians import GaussianScene
from .base import Render, as_background


def rasterize_reference(scene: GaussianScene, cameras: Cameras,
                        background: Optional[torch.Tensor | float] = None) -> Render:
    """Render in float64 with dense [H*W, N] tensors per camera. Differentiable; O(C H W N) memory."""
    from gsplat.cuda._torch_impl import (_fully_fused_projection, _quat_scale_to_covar_preci,
                                         _spherical_harmonics)

    W, H = cameras.width, cameras.height
    dt = torch.float64
    means, quats, scales = scene.means.to(dt), scene.quats.to(dt), scene.scales.to(dt)
    opac, sh = scene.opacities.to(dt), scene.sh.to(dt)
    cams = cameras.to(scene.device, dt)
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_covar=True, compute_preci=False, triu=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(means, covars, cams.viewmats, cams.Ks, W, H)
    dirs = means[None] - cams.centers[:, None, :]
    colors = torch.clamp_min(_spherical_harmonics(scene.sh_degree, dirs, sh.expand(len(cams), -1, -1, -1)) + 0.5, 0)

    ys, xs = torch.meshgrid(torch.arange(H, dtype=dt), torch.arange(W, dtype=dt), indexing="ij")
    pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1) + 0.5  # [HW, 2]
    bg = as_background(background, len(cams), means)
    rgbs, alphas, dmaps = [], [], []
    for ci in range(len(cams)):
        order = torch.argsort(depths[ci])
        ok = (radii[ci][order] > 0).all(-1)  # [N]
        m2, cn = means2d[ci][order], conics[ci][order]
        d = pix[:, None, :] - m2[None]  # [HW, N, 2]
        sigma = 0.5 * (cn[:, 0] * d[..., 0] ** 2 + cn[:, 2] * d[..., 1] ** 2) + cn[:, 1] * d[..., 0] * d[..., 1]
        alpha = torch.clamp_max(opac[order] * torch.exp(-sigma), 0.999)
        alpha = torch.where((alpha >= 1.0 / 255.0) & (sigma >= 0) & ok, alpha, torch.zeros_like(alpha))
        t_after = torch.cumprod(1.0 - alpha, dim=1)
        t_before = torch.cat([torch.ones_like(t_after[:, :1]), t_after[:, :-1]], 1)
        w = alpha * t_before * (t_after > 1e-4)  # [HW, N]
        a = w.sum(1, keepdim=True)
        rgbs.append((w @ colors[ci][order] + (1 - a) * bg[ci]).reshape(H, W, 3))
        alphas.append(a.reshape(H, W, 1))
        dmaps.append(((w @ depths[ci][order][:, None]) / a.clamp_min(1e-10)).reshape(H, W, 1))
    return Render(torch.stack(rgbs), torch.stack(alphas), torch.stack(dmaps),
                  {"means2d": means2d, "radii": radii, "depths": depths, "width": W, "height": H,
                   "n_cameras": len(cams), "gaussian_ids": None})
