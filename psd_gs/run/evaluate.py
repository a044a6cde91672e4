"""Multi-view scoring of a finished scene.

``evaluate`` renders n orbit views, scores them with reward models and, in the shapes world, measures
fidelity: PSNR against each object the prompt allows, rendered from the same views; the nearest of
them is the object that formed, and a run "hits" when that is the object the reward prefers. The
evaluation views sit at elevation 20 degrees and azimuths 7.5 + k 360/n, off the shapes preset's
training grid (elevations -10..45 in 5 steps, azimuths every 15 degrees).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from ..scene.cameras import Cameras, turntable
from ..scene.gaussians import GaussianScene
from ..render import rasterize, view_chunks


def eval_cameras(n: int = 8, resolution: int = 64, radius: float = 2.0, fovy: float = 49.1,
                 elevation: float = 20.0, start_azimuth: float = 7.5) -> Cameras:
    """n views around the object at one elevation."""
    return turntable(n, resolution, resolution, elevation=elevation, radius=radius, fovy=fovy,
                     start_azimuth=start_azimuth)


def render_rgba(scene: GaussianScene, cams: Cameras,
                background: float | Sequence[float] = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """rgb [V, H, W, 3] in [0, 1] and alpha [V, H, W], no grad, in calls of bounded size (``render.view_chunks``)."""
    cams = cams.to(scene.device)
    bg = torch.as_tensor(background, dtype=torch.float32)
    with torch.no_grad():
        renders = [rasterize(scene, cams[part], bg) for part in view_chunks(len(cams), cams.width, cams.height)]
    return torch.cat([r.rgb.clamp(0, 1) for r in renders]), torch.cat([r.alpha[..., 0] for r in renders])


def render_views(scene: GaussianScene, cams: Cameras, background: float | Sequence[float] = 1.0) -> torch.Tensor:
    """rgb [V, H, W, 3] in [0, 1], no grad (``render_rgba`` without the alpha)."""
    return render_rgba(scene, cams, background)[0]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1] (mean squared error over all views and pixels)."""
    mse = (a.float() - b.float()).square().mean().item()
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def score(images: torch.Tensor, reward, prompt: str) -> torch.Tensor:
    """Reward of each view [V] for rgb [V, H, W, 3]."""
    with torch.no_grad():
        return reward.score(images.permute(0, 3, 1, 2), [prompt] * images.shape[0]).float().cpu()


# An object "formed" when the scene matches it to at least this PSNR over the views. An empty render
# scores 7-12 dB against the world's objects; every formed object in bench/RESULTS.md scores above 25.
FORMED_DB = 20.0


def shapes_report(scene: GaussianScene, prompt: str, reward, cams: Cameras, world=None) -> Dict[str, object]:
    """The scene's mean reward over the views, and fidelity and hit in the shapes world: the allowed object
    nearest to the scene (highest PSNR), how closely (that PSNR, dB), whether that is close enough to say it
    formed (``FORMED_DB``), and whether it formed and is the one the reward prefers (a hit)."""
    from ..priors.shapes_world import ShapesWorld

    world = world or ShapesWorld()
    allowed = world.select(prompt) if prompt.strip() else list(range(len(world)))
    views = render_views(scene, cams, world.background)
    fidelity, rewards = {}, {}
    for k in allowed:
        ref = render_views(world.build(k), cams, world.background)
        fidelity[world.objects[k].name] = psnr(views.cpu(), ref.cpu())
        rewards[world.objects[k].name] = score(ref, reward, prompt).mean().item()
    nearest = max(fidelity, key=fidelity.get)
    preferred = max(rewards, key=rewards.get)
    formed = fidelity[nearest] >= FORMED_DB
    return {"reward": score(views, reward, prompt).mean().item(), "nearest": nearest, "psnr": fidelity[nearest],
            "formed": formed, "preferred": preferred, "hit": formed and nearest == preferred,
            "psnr_per_object": fidelity, "reward_per_object": rewards}


def shapes_retrieval(views: torch.Tensor, cams: Cameras, prompts: Sequence[str], load_reward=None,
                     world=None) -> torch.Tensor:
    """The shapes world's text-to-image match, for R-precision: [V, P], the PSNR (dB) of each view ``views
    [V, H, W, 3]`` (rendered from ``cams``) against the nearest object each prompt allows, from the same
    view. A prompt that allows a view's object scores highest; two prompts that allow it tie."""
    from ..priors.shapes_world import ShapesWorld

    world = world or ShapesWorld()
    allowed = [world.select(p) if p.strip() else list(range(len(world))) for p in prompts]
    per_object = {}
    for k in sorted({k for ks in allowed for k in ks}):
        ref = render_views(world.build(k), cams, world.background).cpu()
        mse = (views.cpu().float() - ref).square().mean(dim=(1, 2, 3)).clamp_min(1e-10)  # [V]
        per_object[k] = -10.0 * torch.log10(mse)
    return torch.stack([torch.stack([per_object[k] for k in ks]).amax(0) for ks in allowed], dim=1)


def contact_sheet(images: torch.Tensor) -> np.ndarray:
    """Views [V, H, W, 3] side by side as one uint8 image [H, V W, 3]."""
    return (torch.cat(list(images.cpu()), dim=1) * 255).round().to(torch.uint8).numpy()


def evaluate(scene: GaussianScene, prompt: str, rewards: Dict[str, object], cams: Cameras,
             out_dir: Optional[Path] = None, world_report: Optional[Tuple[str, Callable, object]] = None,
             background: float | Sequence[float] = 1.0) -> Dict[str, object]:
    """Score ``scene`` from ``cams`` with each reward (name -> RewardModel); with ``world_report``
    (prior name, its report function, the reward it judges with: ``psd_gs.registry.PriorEntry.report``),
    add that world's report under the prior's name. Writes evaluation.json and views.png into ``out_dir``
    when given."""
    views = render_views(scene, cams, background)
    report: Dict[str, object] = {"prompt": prompt, "views": len(cams), "resolution": cams.width,
                                 "elevation": round(float(cams.elevation[0]), 2),
                                 "azimuths": [round(a, 2) for a in cams.azimuth.tolist()],
                                 "radius": round(float(cams.radius[0]), 4), "fovy": round(float(cams.fovy[0]), 4),
                                 "rewards": {}}
    for name, model in rewards.items():
        per_view = score(views, model, prompt)
        report["rewards"][name] = {"mean": per_view.mean().item(), "per_view": per_view.tolist()}
    if world_report is not None:
        prior_name, fn, judge = world_report
        report[prior_name] = fn(scene, prompt, judge, cams) | {"judged_by": getattr(judge, "name", "")}
    if out_dir is not None:
        import imageio.v3 as iio

        out_dir = Path(out_dir)
        iio.imwrite(out_dir / "views.png", contact_sheet(views))
        (out_dir / "evaluation.json").write_text(json.dumps(report, indent=2))
    return report
