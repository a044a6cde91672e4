"""The optimisation loop: ``generate(cfg)`` yields ``Progress`` events, then a ``Result``.

CLI, app, benchmarks and tests all call it. One loop, one place (as gsplat's ``simple_trainer``):
rendering, guidance and densification are library calls.

    for event in generate(cfg):
        if isinstance(event, Progress): ...   # step, logs, a preview image every few steps
        else: result = event                  # Result(scene, out_dir, ply_path, metrics)

Everything a run writes goes into its own folder below ``cfg.out_dir``, named from the time, a
slug of the prompt (letters, digits and dashes only), the method and the seed:
config.json (the resolved config), checkpoint.pt (every ``checkpoint_every`` steps, resumable),
scene.ply, turntable.mp4 and metrics.json.

Failure handling: a step whose loss or gradients are not finite is skipped and logged; after
``max_nan_steps`` in a row the run stops with GenerationError. Out-of-memory stops it the same way.
In both cases the last good scene is still written (scene.ply is never written with NaNs), and the
error names the folder. ``cancel.set()`` ends the run after the current step, with a Result
(``cancelled=True``) holding what exists so far.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Union

import numpy as np
import torch
from gsplat.strategy import DefaultStrategy
from gsplat.strategy.ops import reset_opa

from .cameras import sample_orbit, turntable
from .config import RunConfig
from .gaussians import PARAM_NAMES, GaussianScene
from .guidance import Guidance, make_guidance
from .ply import save_ply
from .render import rasterize


class GenerationError(RuntimeError):
    """A run that had to stop (repeated NaN, out of memory); the message says where its output is."""


class CancelToken(threading.Event):
    """Set it (``cancel.set()``) from any thread to end a run after its current step."""


@dataclass
class Progress:
    """step: steps done (1..total); logs: named floats of the last step; elapsed: seconds;
    preview: uint8 [H, W, 3] render of a fixed view, every ``preview_every`` steps, else None."""

    step: int
    total: int
    logs: Dict[str, float]
    elapsed: float
    n_gaussians: int
    preview: Optional[np.ndarray] = None


@dataclass
class Result:
    scene: GaussianScene
    out_dir: Path
    ply_path: Path
    metrics: Dict[str, object]
    cancelled: bool = False
    turntable_path: Optional[Path] = None
    config_path: Optional[Path] = None
    metrics_path: Optional[Path] = None
    extra: Dict[str, object] = field(default_factory=dict)


# ---- set-up helpers ---------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """RunConfig.device: "auto" (CUDA when available, else CPU) or a torch device name."""
    from .rewards.weights import resolve_device as default_device

    return default_device(None if name == "auto" else name)


def slug(prompt: str, limit: int = 40) -> str:
    """A prompt as a safe folder-name fragment: lowercase letters, digits and single dashes."""
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:limit].strip("-") or "prompt"


def new_run_dir(cfg: RunConfig) -> Path:
    """A fresh folder below cfg.out_dir; never an existing one, never outside it."""
    root = Path(cfg.out_dir)
    root.mkdir(parents=True, exist_ok=True)
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{slug(cfg.prompt)}-{cfg.guidance.method}-seed{cfg.seed}"
    for i in range(1000):
        path = root / (base if i == 0 else f"{base}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise GenerationError(f"could not create a new run folder under {root}")


RUN_DIR_PATTERN = re.compile(r"^\d{8}-\d{6}-[a-z0-9-]+-(sds|psd|reward_grad)-seed\d+(-\d+)?$")


def clean_old_runs(root: Path, max_age_seconds: float) -> List[Path]:
    """Delete run folders directly below ``root`` older than ``max_age_seconds``; returns them.

    Only folders whose name follows ``new_run_dir``'s pattern and that hold a config.json are touched,
    so nothing else that happens to live below ``root`` is ever removed.
    """
    import shutil

    removed = []
    if not root.is_dir():
        return removed
    now = time.time()
    for path in root.iterdir():
        if (path.is_dir() and RUN_DIR_PATTERN.match(path.name) and (path / "config.json").exists()
                and now - path.stat().st_mtime > max_age_seconds):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def build_prior(cfg: RunConfig, device: torch.device):
    """The preset's DiffusionPrior: the closed-form shapes prior, or Stable Diffusion."""
    if cfg.preset == "shapes":
        from .priors.analytic import AnalyticPrior

        return AnalyticPrior(data_std=cfg.data_std, device=device)
    from .priors.stable_diffusion import DEFAULT_MODEL, load_stable_diffusion

    return load_stable_diffusion(cfg.prior or DEFAULT_MODEL, device=device)


def build_reward(cfg: RunConfig, device: torch.device):
    from .rewards.registry import load_reward

    return load_reward(cfg.reward, device=device)


def make_optimizers(scene: GaussianScene, cfg: RunConfig) -> Dict[str, torch.optim.Optimizer]:
    """One Adam per raw tensor, as gsplat's strategies expect (keys = scene.params keys)."""
    s = cfg.scene
    lrs = {"means": s.lr_means, "quats": s.lr_quats, "scales": s.lr_scales, "opacities": s.lr_opacities,
           "sh0": s.lr_sh0, "shN": s.lr_shN}
    return {g["name"]: torch.optim.Adam([g], eps=1e-15) for g in scene.param_groups(lrs)}


def means_lr(cfg: RunConfig, step: int) -> float:
    """Log-linear decay from lr_means to lr_means_final over the run (DreamGaussian's schedule)."""
    t = min(step / max(cfg.steps - 1, 1), 1.0)
    return math.exp((1 - t) * math.log(cfg.scene.lr_means) + t * math.log(cfg.scene.lr_means_final))


def make_strategy(cfg: RunConfig) -> DefaultStrategy:
    s, n = cfg.scene, cfg.steps
    return DefaultStrategy(
        prune_opa=s.prune_opa, grow_grad2d=s.grow_grad2d,
        refine_start_iter=int(s.densify_from * n), refine_stop_iter=int(s.densify_until * n) if s.densify else 0,
        refine_every=s.densify_every, reset_every=s.opacity_reset_every or 10 ** 9, verbose=False)


def background(cfg: RunConfig, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """This step's background colour [3]: white, black, random, or mixed (white or random)."""
    mode = cfg.camera.background
    rand = torch.rand(4, generator=g)  # always drawn, so the stream does not depend on the mode
    if mode == "white" or (mode == "mixed" and rand[3] < 0.5):
        return torch.ones(3, device=device)
    if mode == "black":
        return torch.zeros(3, device=device)
    return rand[:3].to(device)


def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """[..., 3] in [0, 1] -> uint8 numpy."""
    return (rgb.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def preview_image(scene: GaussianScene, cfg: RunConfig, res: int, bg: float = 1.0) -> np.ndarray:
    """The scene from a fixed three-quarter view, uint8 [res, res, 3]."""
    r = float(np.mean(cfg.camera.radius))
    cams = turntable(1, res, res, elevation=20.0, radius=r, fovy=float(np.mean(cfg.camera.fovy)),
                     start_azimuth=30.0).to(scene.device)
    with torch.no_grad():
        return to_uint8(rasterize(scene, cams, bg).rgb[0])


def save_turntable(scene: GaussianScene, cfg: RunConfig, path: Path, res: int) -> Path:
    """An MP4 of ``cfg.turntable_views`` views around the object (imageio + its bundled ffmpeg)."""
    import imageio.v3 as iio

    cams = turntable(cfg.turntable_views, res, res, elevation=20.0, radius=float(np.mean(cfg.camera.radius)),
                     fovy=float(np.mean(cfg.camera.fovy))).to(scene.device)
    with torch.no_grad():
        frames = to_uint8(rasterize(scene, cams, 1.0).rgb)
    iio.imwrite(path, frames, fps=12, codec="libx264", macro_block_size=1)
    return path


# ---- checkpoints ------------------------------------------------------------------------------


def _save_checkpoint(path: Path, step: int, scene: GaussianScene, optimizers, strategy_state, guidance: Guidance,
                     gens: Dict[str, torch.Generator], nan_count: int) -> None:
    state = {
        "step": step, "sh_degree": scene.sh_degree, "nan_count": nan_count,
        "params": scene.detached(),
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "strategy": {k: (v.detach().cpu() if torch.is_tensor(v) else v) for k, v in strategy_state.items()},
        "guidance": guidance.state_dict(),
        "rng": {k: g.get_state() for k, g in gens.items()} | {"torch": torch.get_rng_state()},
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _load_checkpoint(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint to resume at {path}; run with checkpoint_every > 0 first")
    return torch.load(path, map_location="cpu", weights_only=True)


# ---- the loop ---------------------------------------------------------------------------------


def generate(cfg: RunConfig, cancel: Optional[threading.Event] = None,
             resume: Optional[Union[str, Path]] = None) -> Iterator[Union[Progress, Result]]:
    """Run one generation; yields Progress per step and finally one Result.

    resume: a run folder written by an earlier call with ``checkpoint_every`` > 0; the run goes on
    from its last checkpoint with that folder's config.
    """
    # 1. Check inputs, pick the device, make the run folder and save the resolved config
    if resume is not None:
        out_dir = Path(resume)
        cfg = RunConfig.from_dict(json.loads((out_dir / "config.json").read_text()))
    cfg.check()
    device = resolve_device(cfg.device)
    cancel = cancel or threading.Event()

    # 2. Prior, reward, guidance (before the run folder exists: a load error leaves nothing behind)
    prior = build_prior(cfg, device)
    if cfg.camera.grid is not None and hasattr(prior, "precompute"):
        for _, res in cfg.camera.resolution:
            prior.precompute(cfg.camera.elevation, cfg.camera.grid, cfg.camera.radius[0], cfg.camera.fovy[0], res)
    reward = build_reward(cfg, device) if cfg.guidance.method != "sds" else None
    guidance = make_guidance(cfg.guidance, prior, cfg.prompt, reward, seed=cfg.seed)
    if resume is None:
        out_dir = new_run_dir(cfg)
        (out_dir / "config.json").write_text(cfg.to_json())

    # 3. Scene, optimisers, densification; seeded generators for every random draw
    torch.manual_seed(cfg.seed)  # gsplat's split samples from the global generator
    gens = {"scene": torch.Generator().manual_seed(cfg.seed), "camera": torch.Generator().manual_seed(cfg.seed + 1),
            "background": torch.Generator().manual_seed(cfg.seed + 2)}
    scene = GaussianScene.random(cfg.scene.n_init, radius=cfg.scene.init_radius, sh_degree=cfg.scene.sh_degree,
                                 init_opacity=cfg.scene.init_opacity, generator=gens["scene"], device=device,
                                 color_jitter=cfg.scene.color_jitter)
    optimizers = make_optimizers(scene, cfg)
    strategy = make_strategy(cfg)
    strategy.check_sanity(scene.params, optimizers)
    strategy_state = strategy.initialize_state(scene_scale=1.0)
    start, nan_count = 0, 0

    # 4. Resume from a checkpoint
    ckpt_path = out_dir / "checkpoint.pt"
    if resume is not None:
        ck = _load_checkpoint(ckpt_path)
        scene = GaussianScene(*[ck["params"][k] for k in PARAM_NAMES], sh_degree=ck["sh_degree"]).to(device)
        optimizers = make_optimizers(scene, cfg)
        for k, opt in optimizers.items():
            opt.load_state_dict(ck["optimizers"][k])
        strategy_state = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in ck["strategy"].items()}
        guidance.load_state_dict(ck["guidance"])
        for k, g in gens.items():
            g.set_state(ck["rng"][k])
        torch.set_rng_state(ck["rng"]["torch"])
        start, nan_count = ck["step"], ck["nan_count"]

    # 5. Optimise
    t0, logs, nan_total = time.perf_counter(), {}, 0
    cam = cfg.camera
    res = cam.resolution_at(start, cfg.steps)
    step = start
    try:
        for step in range(start, cfg.steps):
            if cancel.is_set():
                break
            res = cam.resolution_at(step, cfg.steps)
            cams = sample_orbit(cam.batch, res, res, cam.elevation, cam.azimuth, cam.radius, cam.fovy,
                                generator=gens["camera"], grid=cam.grid).to(device)
            bg = background(cfg, gens["background"], device)
            render = rasterize(scene, cams, bg)
            out = guidance.step(render, cams, step, cfg.steps)
            strategy.step_pre_backward(scene.params, optimizers, strategy_state, step, render.info)
            out.loss.backward()
            logs = dict(out.logs)
            finite = bool(torch.isfinite(out.loss)) and all(
                p.grad is None or bool(torch.isfinite(p.grad).all()) for p in scene.params.values())
            if not finite:
                nan_count, nan_total = nan_count + 1, nan_total + 1
                for opt in optimizers.values():
                    opt.zero_grad(set_to_none=True)
                logs["skipped_nan"] = 1.0
                if nan_count >= cfg.max_nan_steps:
                    raise GenerationError(
                        f"the loss or its gradients were not finite for {nan_count} steps in a row (last at "
                        f"step {step}); stopped. Lower the learning rates or the CFG scale. The last good "
                        f"scene is in {out_dir}")
            else:
                nan_count = 0
                optimizers["means"].param_groups[0]["lr"] = means_lr(cfg, step)
                for opt in optimizers.values():
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                strategy.step_post_backward(scene.params, optimizers, strategy_state, step, render.info, packed=False)
                if len(scene) > cfg.scene.max_gaussians:
                    strategy.refine_stop_iter = step  # no more growth
                every = cfg.scene.opacity_reset_every
                if every and step > 0 and step % every == 0 and step < strategy.refine_stop_iter:
                    reset_opa(scene.params, optimizers, strategy_state, value=strategy.prune_opa * 2.0)
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
                _save_checkpoint(ckpt_path, step + 1, scene, optimizers, strategy_state, guidance, gens, nan_count)
            preview = None
            if cfg.preview_every and ((step + 1) % cfg.preview_every == 0 or step + 1 == cfg.steps):
                preview = preview_image(scene, cfg, res)
            yield Progress(step + 1, cfg.steps, logs, time.perf_counter() - t0, len(scene), preview)
        else:
            step = cfg.steps
    except torch.OutOfMemoryError as e:
        _export(scene, cfg, out_dir, res, {"error": "out of memory", "step": step})
        raise GenerationError(
            f"out of memory at step {step} ({len(scene)} Gaussians, {res} px, {cam.batch} views per step): lower "
            f"camera.batch, the resolution or scene.max_gaussians. The last good scene is in {out_dir}") from e
    except GenerationError:
        _export(scene, cfg, out_dir, res, {"error": "non-finite loss", "step": step})
        raise

    # 6. Export
    cancelled = step < cfg.steps
    elapsed = time.perf_counter() - t0
    metrics = {"steps_done": step, "steps": cfg.steps, "cancelled": cancelled, "seconds": elapsed,
               "seconds_per_step": elapsed / max(step - start, 1), "n_gaussians": len(scene),
               "nan_steps_skipped": nan_total, "last_logs": logs}
    if cfg.preset == "shapes":  # cheap here: the final reward and fidelity over 8 orbit views
        from .evaluate import eval_cameras, shapes_report

        judge = reward or build_reward(cfg, device)
        metrics["evaluation"] = shapes_report(scene, cfg.prompt, judge, eval_cameras(
            8, res, cfg.camera.radius[0], cfg.camera.fovy[0])) | {"judged_by": cfg.reward}
    yield _export(scene, cfg, out_dir, res, metrics, cancelled)


def _export(scene: GaussianScene, cfg: RunConfig, out_dir: Path, res: int, metrics: dict,
            cancelled: bool = False) -> Result:
    """Write scene.ply, turntable.mp4 and metrics.json into the run folder; the Result that lists them."""
    ply_path = out_dir / "scene.ply"
    save_ply(scene, ply_path)
    turntable_path = save_turntable(scene, cfg, out_dir / "turntable.mp4", max(res, 128))
    metrics_path = out_dir / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2))
    return Result(scene, out_dir, ply_path, metrics, cancelled, turntable_path, out_dir / "config.json", metrics_path)


def run(cfg: RunConfig, **kwargs) -> Result:
    """generate() to the end; returns its Result."""
    result = None
    for event in generate(cfg, **kwargs):
        if isinstance(event, Result):
            result = event
    return result
