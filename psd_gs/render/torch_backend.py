"""Pure-PyTorch Gaussian rasteriser for the CPU: sparse (pixel, Gaussian) pairs, one depth sort.

Rule (the same per-pixel test gsplat's CUDA kernel applies):

    alpha = min(0.999, o * exp(-q/2)),  q = d^T conic d,  d = pixel centre - mean2d
    a pair counts when alpha >= 1/255; pixels composite front to back and stop *before* the
    Gaussian that would take transmittance T to 1e-4 or below.

gsplat's CUDA kernel tests every pixel of the 16x16 tiles touched by each Gaussian's bounding box
(gsplat 1.5.3: the box of the alpha >= 1/255 ellipse, capped at 3.33 sigma; older releases and its
pure-torch code use a plain 3.33-sigma box). We enumerate exactly the pixels inside the ellipse
``q <= 2 ln(255 o)``, row by row, so long thin Gaussians cost their area, not their box. For o <= 1 the
ellipse lies inside either box, so both select the same pixels and images differ only by rounding
(measured against a float64 brute-force reference: below 1e-6 in float32).

Steps (shapes for C cameras, N Gaussians, P pairs):
  1. project(): means2d [C,N,2], conics [C,N,3], depths [C,N], colors [C,N,3]   (with grad)
  2. _pairs(): enumerate rows then column spans of each ellipse; drop alpha < 1/255   (no grad)
  3. sort pairs by (pixel, depth); per-pixel log-transmittance by a float64 cumsum;
     drop pairs past the T <= 1e-4 cut-off                                          (no grad)
  4. recompute alpha of the surviving pairs with grad; weights w = alpha T;
     index_add into [C*H*W] accumulators for colour, alpha and depth.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from ..scene.cameras import Cameras
from ..scene.gaussians import GaussianScene
from .base import Render, as_background
from .projection import Projected, project

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4


def _segment_exclusive_cumsum(values: torch.Tensor, seg_start: torch.Tensor) -> torch.Tensor:
    """Exclusive cumulative sum within runs; ``seg_start`` [P] bool marks each run's first element."""
    incl = torch.cumsum(values, 0)
    excl = incl - values
    # value of ``excl`` at the start of each element's run, carried forward with cummax on indices
    idx = torch.arange(len(values), device=values.device)
    start_idx = torch.cummax(torch.where(seg_start, idx, torch.zeros_like(idx)), 0).values
    return excl - excl[start_idx]


def _pairs(p: Projected, opac: torch.Tensor, width: int, height: int,
           mask: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(flat Gaussian index c*N + n, flat pixel index c*H*W + i*W + j) for every pair with alpha >= 1/255.

    ``mask`` [C, N] bool, if given, leaves out Gaussian n in camera c where False. Pairs come out in
    no particular order. Runs without grad.
    """
    C, N = p.depths.shape
    dev = p.depths.device
    o = opac.expand(C, N).reshape(-1)
    live = (p.radii.reshape(-1, 2) > 0).all(-1) & (o >= ALPHA_MIN)
    if mask is not None:
        live &= mask.reshape(-1)
    g = live.nonzero()[:, 0]
    if len(g) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return empty, empty
    mx, my = p.means2d.reshape(-1, 2)[g].double().unbind(-1)
    sxx, sxy, syy = p.covars2d.reshape(-1, 3)[g].double().unbind(-1)
    a, b, c = p.conics.reshape(-1, 3)[g].double().unbind(-1)
    # q <= thr  <=>  alpha >= 1/255 (before the 0.999 clamp); a small margin, exact filter below
    thr = 2.0 * torch.log(255.0 * o[g].double()) + 1e-3

    # rows whose pixel centres (i + 0.5) fall inside the ellipse's vertical extent
    ey = torch.sqrt(thr * syy)
    i0 = torch.ceil(my - ey - 0.5).clamp(0, height).long()
    i1 = torch.floor(my + ey - 0.5).clamp(-1, height - 1).long()
    n_rows = (i1 - i0 + 1).clamp_min(0)
    row_g = torch.repeat_interleave(torch.arange(len(g), device=dev), n_rows)
    row_i = i0[row_g] + torch.arange(len(row_g), device=dev) - torch.repeat_interleave(
        torch.cumsum(n_rows, 0) - n_rows, n_rows)

    # on each row, solve a dx^2 + 2 b dy dx + c dy^2 = thr for the column span
    dy = row_i.double() + 0.5 - my[row_g]
    ar, br, cr = a[row_g], b[row_g], c[row_g]
    disc = (br * dy) ** 2 - ar * (cr * dy * dy - thr[row_g])
    half = torch.sqrt(disc.clamp_min(0.0)) / ar
    centre = mx[row_g] - br * dy / ar
    j0 = torch.ceil(centre - half - 0.5).clamp(0, width).long()
    j1 = torch.floor(centre + half - 0.5).clamp(-1, width - 1).long()
    n_cols = torch.where(disc >= 0, (j1 - j0 + 1).clamp_min(0), torch.zeros_like(j0))
    pair_row = torch.repeat_interleave(torch.arange(len(row_g), device=dev), n_cols)
    pair_j = j0[pair_row] + torch.arange(len(pair_row), device=dev) - torch.repeat_interleave(
        torch.cumsum(n_cols, 0) - n_cols, n_cols)
    pair_g = g[row_g[pair_row]]
    cam = pair_g // N
    pix = (cam * height + row_i[pair_row]) * width + pair_j
    return pair_g, pix


def _pair_alpha(p: Projected, opac: torch.Tensor, pair_g: torch.Tensor, pix: torch.Tensor,
                width: int, height: int) -> torch.Tensor:
    """alpha [P] of each pair, differentiable; same formula as gsplat's kernel."""
    N = p.depths.shape[1]
    local = pix % (width * height)
    px = (local % width).to(p.means2d.dtype) + 0.5
    py = (local // width).to(p.means2d.dtype) + 0.5
    m = p.means2d.reshape(-1, 2)[pair_g]
    a, b, c = p.conics.reshape(-1, 3)[pair_g].unbind(-1)
    dx, dy = px - m[:, 0], py - m[:, 1]
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    return torch.clamp_max(opac[pair_g % N] * torch.exp(-sigma), ALPHA_MAX)


def rasterize_torch(scene: GaussianScene, cameras: Cameras, background: Optional[torch.Tensor | float] = None,
                    retain_means2d_grad: bool = True, mask: Optional[torch.Tensor] = None) -> Render:
    """Render ``scene`` from ``cameras`` on the CPU (any device works; it is written for the CPU).

    ``mask`` [C, N] bool (optional): camera c draws only the Gaussians where it is True, so several
    objects stored in one scene render in one call (the shapes prior's reference views).

    Returns Render(rgb [C,H,W,3], alpha [C,H,W,1], depth [C,H,W,1], info) as documented in
    ``psd_gs.render``. Differentiable in every scene parameter; ``info["means2d"]`` keeps its grad
    for gsplat's ``DefaultStrategy`` when ``retain_means2d_grad`` and it requires grad.
    """
    C, W, H, N = len(cameras), cameras.width, cameras.height, len(scene)
    cameras = cameras.to(scene.device, scene.means.dtype)
    p = project(scene, cameras)
    if retain_means2d_grad and p.means2d.requires_grad:
        p.means2d.retain_grad()
    opac = scene.opacities

    with torch.no_grad():
        pair_g, pix = _pairs(p, opac, W, H, mask)
        alpha = _pair_alpha(p, opac, pair_g, pix, W, H)
        kept = (alpha >= ALPHA_MIN).nonzero()[:, 0]
        # order by pixel, then front to back: one sort on a combined integer key; one gather for both steps
        depth_rank = torch.empty(C * N, dtype=torch.long, device=pix.device)
        depth_rank[torch.argsort(p.depths.reshape(-1))] = torch.arange(C * N, device=pix.device)
        kept = kept[torch.argsort(pix[kept] * (C * N) + depth_rank[pair_g[kept]])]
        pair_g, pix, alpha = pair_g[kept], pix[kept], alpha[kept]
        seg_start = torch.ones_like(pix, dtype=torch.bool)
        seg_start[1:] = pix[1:] != pix[:-1]
        log_keep = torch.log1p(-alpha.double())  # log of each pair's transmittance factor
        log_t = _segment_exclusive_cumsum(log_keep, seg_start)
        # keep pairs while T after them stays above 1e-4 (a prefix of each pixel's list)
        alive = (log_t + log_keep) > math.log(T_MIN)
        pair_g, pix, seg_start = pair_g[alive], pix[alive], seg_start[alive]
        alpha, log_t = alpha[alive], log_t[alive]  # final as they are when no gradient is needed

    if torch.is_grad_enabled():  # recompute the surviving pairs under autograd
        alpha = _pair_alpha(p, opac, pair_g, pix, W, H)
        log_t = _segment_exclusive_cumsum(torch.log1p(-alpha.double()), seg_start)
    weight = (alpha.double() * torch.exp(log_t)).to(alpha.dtype)  # [P]
    n_pix = C * H * W
    feats = torch.cat([
        p.colors.reshape(-1, 3)[pair_g],
        p.depths.reshape(-1, 1)[pair_g],
        torch.ones_like(weight)[:, None],
    ], -1) * weight[:, None]  # [P, 5]: rgb, depth, 1
    acc = feats.new_zeros(n_pix, 5).index_add(0, pix, feats).reshape(C, H, W, 5)
    alpha_img = acc[..., 4:5]
    bg = as_background(background, C, alpha_img)
    rgb = acc[..., :3] + (1.0 - alpha_img) * bg[:, None, None, :]
    depth = acc[..., 3:4] / alpha_img.clamp_min(1e-10)
    info = {
        "means2d": p.means2d, "radii": p.radii, "depths": p.depths, "conics": p.conics,
        "width": W, "height": H, "n_cameras": C, "gaussian_ids": None,
        "n_pairs": int(pix.numel()),
    }
    return Render(rgb, alpha_img, depth, info)
