"""Judging an extracted mesh: a ray-cast render, volume IoU against the shapes world's analytic shapes,
and colour distance (bench/mesh_bench.py and tests/mesh/test_mesh.py).

``render_mesh`` casts one ray per pixel centre through the same pinhole cameras the splat renderers use
(psd_gs.scene.cameras: OpenCV world-to-camera, pixel (i, j) covering [j, j+1] x [i, i+1]) with trimesh's ray
intersector, and colours a hit by the hit triangle's vertex colours, interpolated barycentrically,
unlit (the splat's colours carry their shading already). Misses show the background.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..scene.cameras import Cameras


def render_mesh(mesh, cams: Cameras, background: Sequence[float] = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """rgb [V, H, W, 3] in [0, 1] of a vertex-coloured trimesh, one ray per pixel centre."""
    import trimesh

    H, W = cams.height, cams.width
    j, i = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    colours = mesh.visual.vertex_colors[:, :3].astype(np.float64) / 255.0
    out = np.empty((len(cams), H, W, 3))
    for v in range(len(cams)):
        K = cams.Ks[v].double().numpy()
        view = cams.viewmats[v].double().numpy()
        R, t = view[:3, :3], view[:3, 3]
        d_cam = np.stack([(j - K[0, 2]) / K[0, 0], (i - K[1, 2]) / K[1, 1], np.ones_like(i)], -1).reshape(-1, 3)
        dirs = d_cam @ R  # camera to world: R^T d, as row vectors
        dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
        origin = -R.T @ t
        image = np.tile(np.asarray(background, dtype=np.float64), (H * W, 1))
        locations, ray_ids, tri_ids = mesh.ray.intersects_location(np.tile(origin, (H * W, 1)), dirs,
                                                                   multiple_hits=False)
        if len(ray_ids):
            corners = mesh.triangles[tri_ids]
            bary = trimesh.triangles.points_to_barycentric(corners, locations)
            image[ray_ids] = np.einsum("nk,nkc->nc", bary, colours[mesh.faces[tri_ids]])
        out[v] = image.reshape(H, W, 3)
    return torch.from_numpy(out.clip(0, 1)).float()


def inside_shape(shape: str, params: dict, points: np.ndarray) -> np.ndarray:
    """bool [P]: which points [P, 3] lie inside the shapes world's analytic shape (as
    psd_gs.priors.shapes_world lays them out: centred, +y up; torus ring in xz; cone apex up)."""
    x, y, z = points.T
    if shape == "sphere":
        return np.linalg.norm(points, axis=-1) <= params["radius"]
    if shape == "cube":
        return np.abs(points).max(-1) <= params["half_size"]
    if shape == "torus":
        return (np.hypot(x, z) - params["major"]) ** 2 + y ** 2 <= params["minor"] ** 2
    if shape == "cone":
        h, r = params["height"], params["radius"]
        return (np.abs(y) <= h / 2) & (np.hypot(x, z) <= r * (h / 2 - y) / h)
    raise ValueError(f"unknown shape {shape!r}")


def volume_iou(mesh, shape: str, params: dict, resolution: int = 64, half: float = 0.8) -> float:
    """Intersection over union of the mesh's inside and the analytic shape's, on a resolution^3 grid of
    voxel centres over [-half, half]^3 (the mesh must be watertight for its inside to mean anything)."""
    c = (np.arange(resolution) + 0.5) / resolution * 2 * half - half
    pts = np.stack(np.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)
    a = mesh.contains(pts)
    b = inside_shape(shape, params, pts)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def colour_error(mesh, scene) -> float:
    """Mean distance (rgb in [0, 1], Euclidean / sqrt 3) between each vertex's colour and the base colour
    of the scene's Gaussian nearest to it: the splat's colour where the vertex is (a shaded object's
    colour varies over it, so one colour for the whole object would measure the shading too)."""
    from scipy.spatial import cKDTree

    from ..scene.gaussians import sh0_to_rgb

    means = scene.means.detach().double().cpu().numpy()
    rgb = sh0_to_rgb(scene.sh0.detach()[:, 0]).clamp(0, 1).double().cpu().numpy()
    _, nearest = cKDTree(means).query(mesh.vertices)
    colours = mesh.visual.vertex_colors[:, :3].astype(np.float64) / 255.0
    return float(np.linalg.norm(colours - rgb[nearest], axis=-1).mean() / math.sqrt(3))
