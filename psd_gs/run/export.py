"""What a run hands back: scene.ply, metrics.json, turntable.mp4 and mesh.glb in its folder, and previews.

``write_outputs`` writes them in the order that keeps the most when something fails: the scene first
(atomic .ply), then metrics.json, then the turntable video. A turntable that fails (out of memory,
no ffmpeg) is recorded in metrics.json as ``turntable_error`` and never loses the scene or metrics;
the mesh comes last, and a mesh that fails (an empty scene) is ``mesh_error`` there.
The turntable is rendered a few views at a time (``render.view_chunks``), so its memory does not grow
with its frame count or size, and written under a temporary name first.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from ..scene.cameras import turntable
from ..config import RunConfig
from ..scene.gaussians import GaussianScene
from ..scene.ply import save_ply
from ..render import rasterize, view_chunks

TURNTABLE_ELEVATION = 20.0  # degrees, also the preview's


def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """[..., 3] in [0, 1] -> uint8 numpy."""
    return (rgb.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def preview_image(scene: GaussianScene, cfg: RunConfig, res: int, bg: float = 1.0, azimuth: float = 30.0) -> np.ndarray:
    """The scene from a fixed view (a three-quarter view by default; azimuth 0 is the front), uint8 [res, res, 3]."""
    cams = turntable(1, res, res, elevation=TURNTABLE_ELEVATION, radius=float(np.mean(cfg.camera.radius)),
                     fovy=float(np.mean(cfg.camera.fovy)), start_azimuth=azimuth).to(scene.device)
    with torch.no_grad():
        return to_uint8(rasterize(scene, cams, bg).rgb[0])


def save_turntable(scene: GaussianScene, cfg: RunConfig, path: Path, res: int) -> Path:
    """An MP4 of ``cfg.turntable_views`` views around the object (imageio + its bundled ffmpeg)."""
    import imageio.v3 as iio

    cams = turntable(cfg.turntable_views, res, res, elevation=TURNTABLE_ELEVATION,
                     radius=float(np.mean(cfg.camera.radius)), fovy=float(np.mean(cfg.camera.fovy))).to(scene.device)
    with torch.no_grad():
        frames = np.concatenate([to_uint8(rasterize(scene, cams[part], 1.0).rgb)
                                 for part in view_chunks(len(cams), res, res)])
    tmp = path.with_name(f".{path.name}.tmp.mp4")  # a killed write leaves no cut video under the real name
    try:
        iio.imwrite(tmp, frames, fps=12, codec="libx264", macro_block_size=1)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def release_memory(device: torch.device) -> None:
    """Collect garbage and return cached CUDA blocks, so an export after an out-of-memory step has room."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def failure_line(err: BaseException) -> str:
    """"Type: first line of the message", what metrics.json records of a failed output."""
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"


def write_json(path: Path, data: Dict[str, object]) -> Path:
    """``data`` as indented JSON at ``path``, written atomically (a temporary file, then a rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return path


def write_outputs(scene: GaussianScene, cfg: RunConfig, out_dir: Path, metrics: Dict[str, object],
                  shown: Optional[GaussianScene] = None) -> Dict[str, Optional[Path]]:
    """scene.ply, then metrics.json, then turntable.mp4 (``cfg.turntable_resolution`` px) into ``out_dir``.
    ``shown``: the scene as the turntable's cameras see it, when that is a copy in another frame (a refined
    input, ``psd_gs.scene.frame``); scene.ply and mesh.glb keep ``scene``'s own frame.

    Returns {"ply", "metrics", "turntable", "mesh"} paths; "turntable" is None when it failed (then
    ``metrics["turntable_error"]`` says why, and metrics.json is rewritten with it) or ``cfg.turntable`` is off.
    """
    ply = save_ply(scene, out_dir / "scene.ply")
    metrics_path = write_json(out_dir / "metrics.json", metrics)
    video: Optional[Path] = None
    try:
        if cfg.turntable:
            video = save_turntable(scene if shown is None else shown, cfg, out_dir / "turntable.mp4",
                                   cfg.turntable_resolution)
    except (torch.OutOfMemoryError, RuntimeError, OSError) as err:  # the scene and metrics are already safe
        (out_dir / "turntable.mp4").unlink(missing_ok=True)
        metrics["turntable_error"] = failure_line(err)
        write_json(metrics_path, metrics)
    mesh = save_mesh(scene, cfg, out_dir, metrics, metrics_path) if cfg.mesh else None
    return {"ply": ply, "metrics": metrics_path, "turntable": video, "mesh": mesh}


def save_mesh(scene: GaussianScene, cfg: RunConfig, out_dir: Path, metrics: Dict[str, object],
              metrics_path: Path) -> Optional[Path]:
    """mesh.glb (``psd_gs.mesh.extract``) at ``cfg.mesh_resolution``; its numbers go into metrics.json as "mesh",
    or why it failed as "mesh_error" (an empty or transparent scene, out of memory); None then."""
    from ..mesh.extract import MeshError, extract_mesh, write_mesh

    try:
        result = extract_mesh(scene, resolution=cfg.mesh_resolution)
        path: Optional[Path] = write_mesh(result, out_dir / "mesh.glb")
        metrics["mesh"] = result.stats | {"level": result.level, "resolution": result.resolution,
                                          "pieces_dropped": result.pieces_dropped, "seconds": result.seconds}
    except (MeshError, torch.OutOfMemoryError, MemoryError, RuntimeError, OSError) as err:
        (out_dir / "mesh.glb").unlink(missing_ok=True)
        metrics["mesh_error"] = failure_line(err)
        path = None
    write_json(metrics_path, metrics)
    return path
