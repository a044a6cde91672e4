"""Refinement: align a splat made elsewhere with a preference (issue 26, docs/design.md section 2).

``refine_config(cfg, ply, keep)`` turns a run's config into a refinement of ``ply``: the loop then starts
from the input's Gaussians (``scene.init``) instead of a random ball, seen through a ``Frame`` that moves
the cameras, not the splat (``psd_gs.scene.frame``), with the schedule below. ``load_input`` reads and
checks the file; ``change`` measures how far a result moved from its input.

The schedule (``SCHEDULE``, ``GENTLER``), against a preset's run from a random ball: no densification (the
input's Gaussians are the object; growth would add what it never had), positions, rotations and scales ten
times more gently (its shape is already right), colours and opacities at the preset's rates (what a
preference usually asks to change), PSD's pair steps in the first 60% of the run and t annealed to 0.4. The
noise range is the preset's (up to 0.98 T): the preference acts through pairs at high noise, where two
noisings of the input give guesses that differ; the input itself keeps its identity (docs/design.md,
"Refinement", has the measurements).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, Tuple

import torch

from ..config import RunConfig, apply_overrides
from ..scene.frame import Frame
from ..scene.gaussians import PARAM_NAMES, GaussianScene
from ..scene.ply import load_ply

INPUT_NAME = "input.ply"  # the input's copy in the run folder
KEPT = {"none": (), "geometry": ("means", "quats", "scales"), "appearance": ("sh0", "shN")}
SCHEDULE = {"steps": 200, "scene.densify": False, "guidance.t_max_end": 0.4, "guidance.pair_window": (0.0, 0.6)}
GENTLER = ("lr_means", "lr_means_final", "lr_quats", "lr_scales")  # x 0.1


def refine_config(cfg: RunConfig, ply: str | Path, keep: str = "none") -> RunConfig:
    """``cfg`` (a preset's, with the prompt and method chosen) made a refinement of ``ply`` with the schedule
    above; ``scene.n_init`` becomes the input's count, so the memory estimate covers it. Raises ValueError
    for a file that is not a splat within ``cfg``'s budget (``load_input``) or too small to frame (``place``),
    so callers learn it before a run starts. Later overrides (``--set``) still apply on top."""
    scene = load_input(ply, cfg.scene.max_gaussians)
    place(scene, cfg)
    apply_overrides(cfg, SCHEDULE | {"scene.init": str(ply), "scene.keep": keep, "scene.n_init": len(scene),
                                     "scene.sh_degree": scene.sh_degree})
    for name in GENTLER:
        setattr(cfg.scene, name, getattr(cfg.scene, name) * 0.1)
    return cfg


def load_input(path: str | Path, max_gaussians: int, device: torch.device | str = "cpu") -> GaussianScene:
    """The splat in ``path`` (``load_ply``'s checks: a readable 3DGS .ply, float32, finite, SH degree 0-3), at
    most ``max_gaussians`` Gaussians (the server's memory budget: scene.max_gaussians). ValueError names the
    file's problem in one line, FileNotFoundError a missing file."""
    scene = load_ply(path, device)
    if len(scene) > max_gaussians:
        raise ValueError(f"{Path(path).name} has {len(scene)} Gaussians; this setup refines at most {max_gaussians} "
                         "(scene.max_gaussians, set by the memory budget): prune the splat first, or raise "
                         "scene.max_gaussians on a machine with room")
    return scene


def start(cfg: RunConfig, out_dir: Path, device: torch.device) -> Tuple[GaussianScene, GaussianScene, Frame]:
    """(the scene to optimise, the input as read, its frame) from the run folder's copy of the input, made
    from ``cfg.scene.init`` on the first call (a resumed run reads its own copy)."""
    copy = out_dir / INPUT_NAME
    if not copy.exists():
        shutil.copyfile(cfg.scene.init, copy)
    scene = load_input(copy, cfg.scene.max_gaussians, device)
    original = GaussianScene(*[scene.params[k].detach() for k in PARAM_NAMES], sh_degree=scene.sh_degree)  # a copy
    return scene, original, place(scene, cfg)


def place(scene: GaussianScene, cfg: RunConfig) -> Frame:
    """The input's frame: fitted (``scene.frame = "fit"``; ValueError for a splat too small to see) or its own."""
    return Frame.fit(scene, cfg.scene.init_radius) if cfg.scene.frame == "fit" else Frame()


def frame_of(run_dir: Path, cfg: RunConfig) -> Frame:
    """The frame a refinement's cameras saw its input in (metrics.json's record; else placed again from the
    folder's input.ply): what renders its scene.ply as the run saw it."""
    metrics = Path(run_dir) / "metrics.json"
    record = json.loads(metrics.read_text()).get("refine") if metrics.exists() else None
    if record:
        return Frame(tuple(record["frame"]["centre"]), record["frame"]["scale"])
    return place(load_input(Path(run_dir) / INPUT_NAME, cfg.scene.max_gaussians), cfg)


def kept_unchanged(scene: GaussianScene, original: GaussianScene, keep: str) -> bool:
    """Whether the tensors ``keep`` names are bit for bit the input's."""
    return all(torch.equal(scene.params[k].detach(), original.params[k].detach()) for k in KEPT[keep])


def change(before: Tuple[torch.Tensor, torch.Tensor], after: Tuple[torch.Tensor, torch.Tensor]) -> Dict[str, float]:
    """How far a result moved from its input, from their renders over the same views ((rgb, alpha) each, as
    ``evaluate.render_rgba`` gives them): PSNR of the renders (dB; inf when identical) and the IoU of their
    silhouettes (alpha > 0.5)."""
    from .evaluate import psnr

    (rgb0, a0), (rgb1, a1) = before, after
    s0, s1 = a0 > 0.5, a1 > 0.5
    union = (s0 | s1).sum().item()
    return {"psnr_to_input": psnr(rgb0, rgb1), "silhouette_iou": (s0 & s1).sum().item() / union if union else 1.0}
