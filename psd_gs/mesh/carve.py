"""Depth carving: the splat's solid as the voxels that none of its own renders sees as empty.

A generated splat is rarely a clean shell of opaque Gaussians. In the shapes world SDS leaves 3000
Gaussians of mean opacity 0.1-0.2 filling the object's volume, and their opacity field has holes and
tunnels at any iso-level (bench/RESULTS.md, "Splat to mesh"). What a viewer sees of the splat is its
renders: per pixel an alpha and an expected depth D. Space carving with depth (as the visual hull, with
the depth maps' help where a silhouette alone cannot see) turns the renders of many views into a solid:

for each of the V = ``N_VIEWS`` views (``carve_cameras``: ``RINGS`` elevation rings of ``AZIMUTHS``
azimuths from -60 to 60 degrees and the two poles, looking at the grid's centre), a voxel centre x at
camera depth z(x) that projects to pixel p inside the image is seen as empty when

- the pixel and its 3x3 neighbourhood have alpha < 0.5 (seen through: the neighbourhood keeps a voxel
  whose centre rounds onto the pixel beside the silhouette), or
- alpha(p) >= 0.5 and D(p) - z(x) > margin (the voxel is in front of the surface this view sees).

The solid is every voxel no view sees as empty. ``margin`` is ``MARGIN_VOXELS`` voxels or the splat's
own detail scale (``detail_scale``), whichever is wider: a render is smooth below that scale, and a
finer grid must not make the carving finer than the renders are. Why carving and not the mean of
truncated distances (TSDF fusion): expected depth averages along a ray and is biased at grazing
pixels, and averaged, those biases left hundreds of bubbles and tunnels in every object (Euler
characteristics -20 to -2500 at 128^3); a carve needs one view to be right, and is (bench/RESULTS.md).
Its limit: a concavity no view sees into stays filled (none in the shapes world).

Colours are baked from the same renders: each vertex takes the mean un-premultiplied rgb of the views
that see it (in the image, alpha >= 0.5, |D(p) - z| within the margin).

Shapes: solid [R, R, R] bool, indexed [x, y, z] like ``mesh.opacity_field``; colours [V, 4] uint8.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import torch

from ..scene.cameras import Cameras, make_cameras, orbit_grid
from ..scene.gaussians import GaussianScene

MARGIN_VOXELS = 3.0  # the carve's depth margin, in voxels (at least the splat's detail scale)
ALPHA_SOLID = 0.5  # a pixel at or above this alpha sees a surface
FOVY = 49.1  # degrees, as the training cameras
RINGS, AZIMUTHS = 5, 8  # views: elevation rings from -60 to 60 degrees, azimuths per ring ...
N_VIEWS = RINGS * AZIMUTHS + 2  # ... and the two poles
MAX_PX = 128  # the views' size: 2R px, at most this (finer pixels than the splat's detail add nothing)
VOXEL_CHUNK = 1 << 17  # voxels projected at once (42 views: about 200 MB of work tensors)


def carve_cameras(lo: np.ndarray, side: float, resolution: int) -> Cameras:
    """N_VIEWS views of the cube [lo, lo + side]^3 at min(2R, MAX_PX) px, far enough that the whole
    cube is in every image."""
    el, az = orbit_grid((-60.0, 60.0), RINGS, AZIMUTHS)
    poles = torch.tensor([89.9, -89.9], dtype=torch.float64)
    el, az = torch.cat([el, poles]), torch.cat([az, torch.zeros(2, dtype=torch.float64)])
    radius = 1.05 * side * math.sqrt(3) / 2 / math.sin(math.radians(FOVY / 2))
    size = min(2 * resolution, MAX_PX)
    cams = make_cameras(el, az, radius, FOVY, size, size)
    centre = torch.as_tensor(lo + side / 2, dtype=cams.viewmats.dtype)
    cams.viewmats[:, :3, 3] -= cams.viewmats[:, :3, :3] @ centre  # look at the grid's centre, not the origin
    return cams


def render_depths(scene: GaussianScene, cams: Cameras) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(alpha [V, H, W], expected depth [V, H, W], un-premultiplied rgb [V, H, W, 3]), no grad, in
    bounded chunks."""
    from ..render import rasterize, view_chunks

    cams = cams.to(scene.device)
    alphas, depths, rgbs = [], [], []
    with torch.no_grad():
        for part in view_chunks(len(cams), cams.width, cams.height):
            out = rasterize(scene, cams[part], 0.0)
            alphas.append(out.alpha[..., 0])
            depths.append(out.depth[..., 0])
            rgbs.append((out.rgb / out.alpha.clamp_min(1e-6)).clamp(0, 1))  # rendered on black
    return torch.cat(alphas), torch.cat(depths), torch.cat(rgbs)


def project(cams: Cameras, points: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """points [M, 3] -> (flat pixel index [V, M] long, camera depth z [V, M], inside-the-image [V, M] bool)."""
    cam = torch.einsum("vij,mj->vmi", cams.viewmats[:, :3, :3], points) + cams.viewmats[:, None, :3, 3]
    z = cam[..., 2]
    uv = torch.einsum("vij,vmj->vmi", cams.Ks, cam)
    col = torch.floor(uv[..., 0] / z.clamp_min(1e-6)).long()
    row = torch.floor(uv[..., 1] / z.clamp_min(1e-6)).long()
    inside = (z > 1e-6) & (col >= 0) & (col < cams.width) & (row >= 0) & (row < cams.height)
    flat = row.clamp(0, cams.height - 1) * cams.width + col.clamp(0, cams.width - 1)
    return flat, z, inside


def detail_scale(scene: GaussianScene) -> float:
    """The finest detail the splat has, world units: the opacity-weighted median of its Gaussians'
    largest std."""
    with torch.no_grad():
        size, weight = scene.scales.max(-1).values.float(), scene.opacities.float()
        order = torch.argsort(size)
        cdf = torch.cumsum(weight[order], 0)
        return float(size[order][torch.searchsorted(cdf, cdf[-1] / 2).clamp(max=len(size) - 1)])


def carve(scene: GaussianScene, lo: np.ndarray, side: float, resolution: int) -> Tuple[torch.Tensor, dict]:
    """The solid [R, R, R] bool at voxel centres lo + (i + 0.5) side / R (module docstring), and what
    colouring needs later: the cameras, their renders, the margin and the detail scale."""
    R = resolution
    voxel = side / R
    detail = detail_scale(scene)
    margin = max(MARGIN_VOXELS * voxel, detail)
    cams = carve_cameras(lo, side, R)
    alpha, depth, rgb = render_depths(scene, cams)
    cams = cams.to(alpha.device)
    a, d = alpha.flatten(1), depth.flatten(1)  # [V, H*W]
    a_near = torch.nn.functional.max_pool2d(alpha[:, None], 3, stride=1, padding=1).flatten(1)
    axis = torch.as_tensor(lo, dtype=torch.float32, device=a.device)[:, None] + \
        (torch.arange(R, dtype=torch.float32, device=a.device) + 0.5) * voxel  # [3, R]
    grid = torch.stack(torch.meshgrid(axis[0], axis[1], axis[2], indexing="ij"), -1).reshape(-1, 3)
    solid = torch.empty(len(grid), dtype=torch.bool, device=a.device)
    for start in range(0, len(grid), VOXEL_CHUNK):
        flat, z, inside = project(cams, grid[start:start + VOXEL_CHUNK])
        through = a_near.gather(1, flat) < ALPHA_SOLID
        in_front = (a.gather(1, flat) >= ALPHA_SOLID) & (d.gather(1, flat) - z > margin)
        solid[start:start + VOXEL_CHUNK] = ~(inside & (through | in_front)).any(0)
    views = {"cams": cams, "alpha": alpha, "depth": depth, "rgb": rgb, "margin": margin, "detail": detail}
    return solid.reshape(R, R, R), views


def bake_colours(verts: np.ndarray, views: dict) -> np.ndarray:
    """RGBA uint8 [V, 4]: each vertex's mean colour over the views that see it (module docstring); a
    vertex no view sees takes the mean over every view it falls in."""
    cams, margin = views["cams"], views["margin"]
    pts = torch.as_tensor(verts, dtype=torch.float32, device=views["alpha"].device)
    flat, z, inside = project(cams, pts)
    a = views["alpha"].flatten(1).gather(1, flat)
    d = views["depth"].flatten(1).gather(1, flat)
    rgb = views["rgb"].flatten(1, 2).gather(1, flat[..., None].expand(-1, -1, 3))  # [V, M, 3]
    seen = inside & (a >= ALPHA_SOLID) & ((d - z).abs() <= margin)
    w = torch.where(seen.any(0, keepdim=True), seen, inside).float()[..., None]
    colour = (w * rgb).sum(0) / w.sum(0).clamp_min(1)
    out = torch.cat([colour.clamp(0, 1) * 255 + 0.5, torch.full((len(pts), 1), 255.0, device=pts.device)], -1)
    return out.cpu().numpy().astype(np.uint8)
