"""Save / load a GaussianScene as a standard 3DGS ``.ply`` (Inria / gsplat exporter layout).

One ``vertex`` element, one row per Gaussian, binary little-endian, every property float32, in
this order (K = (sh_degree + 1)^2 - 1 higher SH coefficients per channel):

    x y z                      means[:, 0..2]
    nx ny nz                   zeros (unused, kept for compatibility with other viewers)
    f_dc_0 f_dc_1 f_dc_2       sh0[:, 0, c] for channel c = R, G, B
    f_rest_0 .. f_rest_{3K-1}  shN channel-major: f_rest_{c*K + k} = shN[:, k, c]
    opacity                    opacity logit (pre-sigmoid)
    scale_0 scale_1 scale_2    log std-dev (pre-exp)
    rot_0 rot_1 rot_2 rot_3    quaternion w x y z, unnormalised

Values are the raw pre-activation parameters, so a float32 scene round-trips bitwise. On load the
SH degree comes from the number of ``f_rest_*`` fields (0, 9, 24, 45 -> degree 0, 1, 2, 3);
extra properties (e.g. nx ny nz, red green blue) and other elements (e.g. ``face``) are ignored.
There is no ``face`` element, which is what Gradio's Model3D needs to treat the file as a splat.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from psd_gs.scene.gaussians import GaussianScene

DEGREE_FROM_NUM_REST = {0: 0, 9: 1, 24: 2, 45: 3}
BASE_FIELDS = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
               "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def field_names(sh_degree: int) -> list[str]:
    """Vertex property names, in file order, for ``sh_degree`` 0..3."""
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(n_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def save_ply(scene: GaussianScene, path: str | os.PathLike) -> Path:
    """Write ``scene`` (N Gaussians) to ``path`` atomically, as float32 in the layout above; returns the path.

    The parameters (means [N,3], quats [N,4], scales [N,3], opacities [N], sh0 [N,1,3],
    shN [N,K,3]) are cast to float32 on the CPU. Raises ValueError, writing nothing, if the
    scene is empty or any value is NaN/inf. The file appears at ``path`` only once complete
    (temp file in the same folder, then ``os.replace``).
    """
    p = {k: v.to(torch.float32).numpy() for k, v in scene.detached().items()}
    n = p["means"].shape[0]
    if n == 0:
        raise ValueError(f"refusing to write {os.fspath(path)}: the scene has no Gaussians")
    nonfinite = {k: ~np.isfinite(v.reshape(n, -1)).all(axis=1) for k, v in p.items()}  # [N] per field
    bad = {k: int(m.sum()) for k, m in nonfinite.items() if m.any()}
    if bad:
        rows = int(np.logical_or.reduce(list(nonfinite.values())).sum())
        raise ValueError(f"refusing to write {os.fspath(path)}: {rows} of {n} Gaussians have NaN/inf values "
                         f"(count per field: {bad}); fix or drop them before saving")
    columns = np.concatenate([
        p["means"], np.zeros((n, 3), np.float32), p["sh0"].reshape(n, 3),
        p["shN"].transpose(0, 2, 1).reshape(n, -1),  # [N,K,3] -> [N,3,K] -> channel-major
        p["opacities"].reshape(n, 1), p["scales"], p["quats"],
    ], axis=1)
    names = field_names(scene.sh_degree)
    assert columns.shape[1] == len(names)
    data = np.empty(n, dtype=[(name, "<f4") for name in names])
    for i, name in enumerate(names):
        data[name] = columns[:, i]
    ply = PlyData([PlyElement.describe(data, "vertex")], text=False, byte_order="<")

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            ply.write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a saved scene is meant to be shared / served
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return Path(path)


def load_ply(path: str | os.PathLike, device: torch.device | str = "cpu") -> GaussianScene:
    """Read a 3DGS ``.ply`` (layout above) into a float32 GaussianScene on ``device``.

    Returns means [N,3], quats [N,4], log scales [N,3], opacity logits [N], sh0 [N,1,3] and
    shN [N,K,3] with the SH degree inferred from the ``f_rest_*`` count. Raises
    FileNotFoundError if ``path`` does not exist and ValueError (naming the file and the
    problem) for anything else that is not a valid, finite 3DGS splat file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such PLY file: {path}")
    hint = "expected a 3DGS splat .ply as written by save_ply / the Inria or gsplat exporters"
    try:
        ply = PlyData.read(path, mmap=False)
    except Exception as e:
        raise ValueError(f"{path} is not a readable PLY file ({type(e).__name__}: {e}); {hint}") from e
    if "vertex" not in ply:
        names = [el.name for el in ply.elements]
        raise ValueError(f"{path} has no 'vertex' element (elements: {names}); {hint}")
    vertex = ply["vertex"].data
    fields = vertex.dtype.names or ()
    n_rest = sum(1 for name in fields if re.fullmatch(r"f_rest_\d+", name))
    if n_rest not in DEGREE_FROM_NUM_REST:
        raise ValueError(f"{path} has {n_rest} f_rest_* fields; supported counts are 0, 9, 24, 45 "
                         f"(SH degree 0..3); {hint}")
    required = BASE_FIELDS + [f"f_rest_{i}" for i in range(n_rest)]
    missing = [name for name in required if name not in fields]
    if missing:
        raise ValueError(f"{path} vertex element is missing fields {missing}; {hint}")
    wrong = {name: vertex.dtype[name].name for name in required
             if vertex.dtype[name].kind != "f" or vertex.dtype[name].itemsize != 4}
    if wrong:
        raise ValueError(f"{path} has fields that are not float32: {wrong}; re-export with float "
                         f"properties; {hint}")
    n = len(vertex)
    if n == 0:
        raise ValueError(f"{path} has zero vertices (no Gaussians); {hint}")
    cols = {name: np.ascontiguousarray(vertex[name], dtype=np.float32) for name in required}
    bad = [name for name in required if not np.isfinite(cols[name]).all()]
    if bad:
        rows = int((~np.isfinite(np.stack([cols[name] for name in bad]))).any(axis=0).sum())
        raise ValueError(f"{path} has {rows} of {n} rows with NaN/inf values in fields {bad}; "
                         f"the file is corrupt - re-export from a healthy checkpoint")

    def stack(names: list[str]) -> torch.Tensor:  # [N, len(names)]
        return torch.from_numpy(np.stack([cols[name] for name in names], axis=1)) if names else torch.zeros(n, 0)

    k = n_rest // 3
    shN = stack([f"f_rest_{i}" for i in range(n_rest)]).reshape(n, 3, k).transpose(1, 2)
    return GaussianScene(
        means=stack(["x", "y", "z"]),
        quats=stack(["rot_0", "rot_1", "rot_2", "rot_3"]),
        log_scales=stack(["scale_0", "scale_1", "scale_2"]),
        opacity_logits=torch.from_numpy(cols["opacity"]),
        sh0=stack(["f_dc_0", "f_dc_1", "f_dc_2"]).reshape(n, 1, 3),
        shN=shN.contiguous(),
        sh_degree=DEGREE_FROM_NUM_REST[n_rest],
    ).to(device)
