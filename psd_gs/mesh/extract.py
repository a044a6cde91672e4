"""Splat to mesh: a solid on a grid around the Gaussians, its surface, cleaned and coloured.

``extract_mesh(scene, source=...)`` takes the solid from one of two sources, on the CPU or the GPU:

- "depth" (the default): the voxels that none of 42 renders of the splat sees as empty
  (``psd_gs.mesh.carve``), cavities filled, blurred by a third of the splat's detail scale, cut at 0.5;
  colours baked from the renders. Right for the hazy splats that score distillation grows;
- "opacity": DreamGaussian's mesh stage, the steps below; right for clean shells of opaque Gaussians.

Both then share steps 4-5 (pieces, decimation). The opacity source:

1. bounds: a cube holding every Gaussian of opacity >= ``MIN_OPACITY`` out to 3 sigma (floaters
   inside it are removed in step 4, not by the bounds);
2. the opacity field on an R^3 grid of voxel centres,
   f(x) = sum_i o_i exp(-(x - mu_i)^T Sigma_i^-1 (x - mu_i) / 2),
   each Gaussian splatted onto the voxels inside its 3-sigma box (work ~ sum of box volumes, not
   R^3 N), and beside it the opacity-weighted colour sum sum_i o_i g_i(x) c_i (c_i: the SH base
   colour, view-independent);
3. the iso-surface f = ``level`` by marching cubes (scikit-image), after filling the interior: a
   splat is a shell of Gaussians on the surface, so the field is low inside it too, and without the
   fill the surface would have an inner sheet; voxels that the outside cannot reach through f < level
   are set above the level (scipy's binary_fill_holes), and a zero border closes the surface at the
   grid's edge, so the result is watertight;
4. the pieces: connected components with fewer than ``keep_fraction`` of the largest one's faces
   (floaters, specks) are dropped;
5. optional decimation to ``max_faces`` (quadric, trimesh's fast-simplification backend);
6. vertex colours: the colour field at each vertex, sum o g c / sum o g, each sum interpolated
   trilinearly from the grid.

The level: ``LEVEL`` = 1.0, DreamGaussian's density threshold. A surface of Gaussians of std sigma
spaced s apart sums to about 2 pi o sigma^2 / s^2 on the surface (2.2 for the shapes world's objects);
1.0 lies about 1.3 sigma outside it. bench/mesh_bench.py gives the volume IoU it reaches against the
analytic shapes (and a sweep of the level).

Shapes: a scene of N Gaussians in; vertices [V, 3] float (world units, +y up as the splat), faces
[F, 3] int, vertex colours [V, 4] uint8 out.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch

from ..scene.gaussians import GaussianScene, sh0_to_rgb
from ..render.projection import quat_to_rotmat

LEVEL = 1.0  # iso-level of the opacity field (DreamGaussian's density_thresh; see the module docstring)
RIM_FRACTION = 0.9  # fill_cavities: the level drops to this share of the shell's lowest rim if that is lower
SHELL_SHARE = 0.1  # ... when the cavity is this share of the object or more (a shell's inside, not a pocket)
MIN_OPACITY = 0.05  # Gaussians below this opacity neither set the bounds nor enter the field
MAX_BOX = 32  # a Gaussian's 3-sigma box is cut at this many voxels from its centre (huge ones are haze)
CHUNK = 1 << 20  # (Gaussian, voxel) pairs evaluated at once: bounds the field's extra memory (~70 MB)
FORMATS = ("glb", "obj", "ply")
SOURCES = ("depth", "opacity")
SMOOTH_VOXELS = 1.0  # depth source: std of the solid mask's blur before marching cubes, in voxels (at
# least a third of the splat's detail scale, carve.detail_scale)


class MeshError(ValueError):
    """A scene that has no surface to extract (empty, transparent, or all below the level)."""


@dataclass
class MeshResult:
    """The cleaned, coloured mesh (a trimesh.Trimesh) and how it was made."""

    mesh: object
    level: float
    bounds: Tuple[Tuple[float, float, float], Tuple[float, float, float]]
    resolution: int
    pieces_dropped: int
    seconds: float
    stats: Dict[str, object] = field(default_factory=dict)


def grid_bounds(scene: GaussianScene, min_opacity: float = MIN_OPACITY) -> Tuple[np.ndarray, float]:
    """(lo [3], side): the cube that holds every Gaussian of opacity >= min_opacity out to 3 sigma."""
    with torch.no_grad():
        keep = scene.opacities >= min_opacity
        if not bool(keep.any()):
            raise MeshError(f"no Gaussian has opacity >= {min_opacity}: the scene is empty or transparent, "
                            "so there is no surface to extract")
        reach = 3.0 * scene.scales[keep].max(-1).values[:, None]
        lo = (scene.means[keep] - reach).min(0).values.double().cpu().numpy()
        hi = (scene.means[keep] + reach).max(0).values.double().cpu().numpy()
    side = float((hi - lo).max())
    return (lo + hi) / 2 - side / 2, side


def opacity_field(scene: GaussianScene, lo: np.ndarray, side: float, resolution: int,
                  min_opacity: float = MIN_OPACITY) -> Tuple[torch.Tensor, torch.Tensor]:
    """The opacity field f [R, R, R] and the weighted colour sum [R, R, R, 3] at voxel centres
    lo + (i + 0.5) side / R, indexed [x, y, z]; float32 on the scene's device, no autograd."""
    R, dev = resolution, scene.device
    voxel = side / R
    with torch.no_grad():
        keep = scene.opacities >= min_opacity
        mu, opac = scene.means[keep].float(), scene.opacities[keep].float()
        rot = quat_to_rotmat(scene.quats[keep].float())  # [N, 3, 3]
        inv_var = 1.0 / scene.scales[keep].float().square()  # [N, 3]
        precision = rot @ torch.diag_embed(inv_var) @ rot.transpose(1, 2)  # Sigma^-1, [N, 3, 3]
        rgb = sh0_to_rgb(scene.sh0[keep, 0].float()).clamp(0, 1)  # [N, 3]
        origin = torch.as_tensor(lo, dtype=torch.float32, device=dev)
        centre = torch.floor((mu - origin) / voxel).long()  # voxel holding each mean
        box = torch.ceil(3.0 * scene.scales[keep].float().max(-1).values / voxel).long().clamp(1, MAX_BOX)
        density = torch.zeros(R ** 3, device=dev)
        colour = torch.zeros(R ** 3, 3, device=dev)
        for k in torch.unique(box).tolist():
            ids = torch.nonzero(box == k)[:, 0]
            r = torch.arange(-k, k + 1, device=dev)
            offsets = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)  # [M, 3]
            per_chunk = max(1, CHUNK // len(offsets))
            for part in ids.split(per_chunk):
                idx = centre[part, None, :] + offsets[None]  # [n, M, 3]
                inside = ((idx >= 0) & (idx < R)).all(-1)
                d = origin + (idx.float() + 0.5) * voxel - mu[part, None, :]  # [n, M, 3]
                q = torch.einsum("nmi,nij,nmj->nm", d, precision[part], d)
                w = opac[part, None] * torch.exp(-0.5 * q) * (inside & (q < 9.0))
                flat = ((idx[..., 0] * R + idx[..., 1]) * R + idx[..., 2]).clamp(0, R ** 3 - 1).reshape(-1)
                density.index_add_(0, flat, w.reshape(-1))
                colour.index_add_(0, flat, (w[..., None] * rgb[part, None, :]).reshape(-1, 3))
    return density.reshape(R, R, R), colour.reshape(R, R, R, 3)


def extract_mesh(scene: GaussianScene, resolution: int = 128, level: float = LEVEL, keep_fraction: float = 0.1,
                 max_faces: int = 50_000, source: str = "depth") -> MeshResult:
    """The scene's surface as a watertight, vertex-coloured trimesh (module docstring: the steps).

    resolution: voxels along the cube's side (8..512); level > 0 (``source="opacity"`` only);
    keep_fraction in [0, 1]: pieces with fewer faces than this share of the largest are dropped;
    max_faces: decimate above it (0: never); source: "depth", the solid carved by the splat's own renders
    (``psd_gs.mesh.carve``, colours baked from them), or "opacity", the opacity field's iso-surface at
    ``level`` (colours from its colour field).
    """
    import trimesh
    from skimage.measure import marching_cubes

    if not 8 <= resolution <= 512:
        raise ValueError(f"mesh resolution {resolution}: must be in 8..512 (128 is the default)")
    if not level > 0:
        raise ValueError(f"mesh level {level}: must be > 0 (the opacity field is >= 0 everywhere)")
    if source not in SOURCES:
        raise ValueError(f"mesh source {source!r}: choose one of {', '.join(SOURCES)}")
    if len(scene) == 0:
        raise MeshError("the scene has no Gaussians, so there is no surface to extract")
    t0 = time.perf_counter()
    lo, side = grid_bounds(scene)
    voxel = side / resolution
    if source == "depth":
        from scipy import ndimage

        from .carve import carve

        solid, views = carve(scene, lo, side, resolution)
        # the cavities no view can see into filled, blurred by a third of the splat's detail (at least a
        # voxel) so that marching cubes at 0.5 gives a smooth surface through the solid's boundary
        solid = ndimage.binary_fill_holes(np.pad(solid.cpu().numpy(), 1))
        if not solid.any():
            raise MeshError("every voxel is seen as empty by some view of the splat (alpha below 0.5 "
                            "everywhere?): it is too sparse or transparent to mesh")
        blur = max(SMOOTH_VOXELS, views["detail"] / 3 / voxel)
        filled, level = ndimage.gaussian_filter(solid.astype(np.float32), blur), 0.5
    else:
        density, colour = opacity_field(scene, lo, side, resolution)
        f = np.pad(density.cpu().numpy().astype(np.float32), 1)  # a zero border closes surfaces at the grid's edge
        if not (f >= level).any():
            raise MeshError(f"the opacity field never reaches the level {level} (its peak is {f.max():.3g}): the "
                            "splat is too sparse or transparent to have a surface; try a lower level")
        filled, level = fill_cavities(f, level)
    verts, faces, _, _ = marching_cubes(filled, level, spacing=(voxel,) * 3, gradient_direction="descent")
    verts = verts + (lo - 0.5 * voxel)  # padded index 1 is voxel 0, whose centre is lo + voxel / 2
    mesh = trimesh.Trimesh(verts, faces, process=True)
    pieces = mesh.split(only_watertight=False)
    largest = max(len(p.faces) for p in pieces)
    kept = [p for p in pieces if len(p.faces) >= keep_fraction * largest]
    mesh = trimesh.util.concatenate(kept) if len(kept) > 1 else kept[0]
    decimation = "none needed"
    if max_faces and len(mesh.faces) > max_faces:
        smaller = mesh.simplify_quadric_decimation(face_count=max_faces)
        if smaller.is_watertight or not mesh.is_watertight:
            mesh, decimation = smaller, f"to {max_faces} faces"
        else:  # a closed surface is worth more than the face budget
            decimation = "skipped: it would have opened the surface"
    mesh.fix_normals()
    if source == "depth":
        from .carve import bake_colours

        mesh.visual.vertex_colors = bake_colours(np.asarray(mesh.vertices), views)
    else:
        mesh.visual.vertex_colors = _vertex_colours(mesh.vertices, density, colour, lo, voxel)
    return MeshResult(mesh, level, (tuple(lo), tuple(lo + side)), resolution, len(pieces) - len(kept),
                      time.perf_counter() - t0, stats=mesh_stats(mesh) | {"decimation": decimation, "source": source})


def fill_cavities(f: np.ndarray, level: float) -> Tuple[np.ndarray, float]:
    """(the field with its cavities filled, the level to cut it at).

    A splat is mostly a shell of Gaussians on the surface, so the field is low inside it as well as
    outside. Grayscale hole filling (morphological reconstruction by erosion from the grid's border,
    scikit-image) raises every cavity, a low region the border cannot reach without climbing, to the
    height of its lowest rim: the lowest point of the shell around it. A surface cut at ``level`` is then
    solid where that rim is above ``level``; where the largest cavity is the inside of a shell (at least
    ``SHELL_SHARE`` of the cavity and the voxels at or above the level together) and its rim is lower
    (a shell thinner than the level), the level drops to ``RIM_FRACTION`` of that rim, so the shell stays
    closed. The level is unchanged for a solid splat and for one whose cavities are small pockets (a
    generated splat's low-density gaps: measured 4% of the object, rims 0.25-0.35).
    """
    from scipy import ndimage
    from skimage.morphology import reconstruction

    seed = np.full_like(f, f.max())
    seed[[0, -1]] = f[[0, -1]]
    seed[:, [0, -1]] = f[:, [0, -1]]
    seed[:, :, [0, -1]] = f[:, :, [0, -1]]
    filled = reconstruction(seed, f, method="erosion").astype(np.float32)
    labels, n = ndimage.label(filled > f + 1e-6)
    if n:
        sizes = np.bincount(labels.ravel())[1:]
        largest = int(np.argmax(sizes)) + 1
        if sizes[largest - 1] >= SHELL_SHARE * (sizes[largest - 1] + (f >= level).sum()):  # a shell's inside
            level = min(level, RIM_FRACTION * float(filled[labels == largest].max()))
    return filled, level


def _vertex_colours(verts: np.ndarray, density: torch.Tensor, colour: torch.Tensor, lo: np.ndarray,
                    voxel: float) -> np.ndarray:
    """RGBA uint8 [V, 4]: sum o g c / sum o g at each vertex, both sums trilinear from the grid."""
    from scipy import ndimage

    coords = ((verts - lo) / voxel - 0.5).T  # grid index space, [3, V]
    num = [ndimage.map_coordinates(colour[..., c].cpu().numpy(), coords, order=1, mode="nearest") for c in range(3)]
    den = ndimage.map_coordinates(density.cpu().numpy(), coords, order=1, mode="nearest")
    rgb = np.stack(num, -1) / np.maximum(den, 1e-8)[:, None]
    rgba = np.concatenate([np.clip(rgb, 0, 1) * 255 + 0.5, np.full((len(verts), 1), 255.0)], -1)
    return rgba.astype(np.uint8)


def mesh_stats(mesh) -> Dict[str, object]:
    """Vertices, faces, watertight, Euler characteristic (2 per sphere-like piece, 0 per torus), volume."""
    return {"vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces)), "watertight": bool(mesh.is_watertight),
            "euler": int(mesh.euler_number), "volume": float(mesh.volume) if mesh.is_watertight else None}


def write_mesh(result: MeshResult, path: Path) -> Path:
    """Write the mesh as .glb, .obj or .ply (by the suffix) atomically; vertex colours kept in each."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"mesh format {fmt!r}: choose one of {', '.join(FORMATS)}")
    data = result.mesh.export(file_type=fmt)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    tmp.replace(path)
    return path
