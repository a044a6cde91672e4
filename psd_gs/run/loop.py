"""The optimisation loop: ``generate(cfg)`` yields ``Progress`` events, then a ``Result``.

CLI, app, benchmarks and tests all call it. One loop, one place (as gsplat's ``simple_trainer``):
rendering, guidance and densification are library calls.

    for event in generate(cfg):
        if isinstance(event, Progress): ...   # step, logs, a preview image every few steps
        else: result = event                  # Result(scene, out_dir, ply_path, metrics)

Everything a run writes goes into its own new folder below ``cfg.out_dir`` (``psd_gs.run.folders``: named from
the time, a slug of the prompt, the method, the seed and a random token; marked INCOMPLETE until its
outputs are written): config.json (the resolved config), checkpoint.pt (every ``checkpoint_every``
steps, resumable), scene.ply, metrics.json, logs.json and turntable.mp4 (``psd_gs.run.export``). A consumer
that stops iterating (closes the generator) gets the partial result written, as a cancel does.

Failure handling: a step whose loss or gradients are not finite is skipped and logged; after
``max_nan_steps`` in a row the run stops with GenerationError. Out-of-memory stops it the same way,
after the failed step's tensors are dropped and the CUDA cache is emptied. In both cases the last good
scene and the metrics are still written (scene.ply is never written with NaNs; a turntable that fails
too is only noted in metrics.json), and the error names the folder. ``cancel.set()`` ends the run
after the current step, with a Result (``cancelled=True``) holding what exists so far; set while the
models load (before the run folder exists), it ends the run with no folder and no Result.

Host syncs: a step waits for the GPU once, for its finiteness check. Guidance logs stay on the device
as tensors and become floats in one batch at preview steps (and the last step); t is drawn on the CPU;
cameras and backgrounds reach the GPU through pinned, non-blocking copies.
"""

from __future__ import annotations

import json
import math
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from gsplat.strategy import DefaultStrategy
from gsplat.strategy.ops import reset_opa

from ..scene.cameras import sample_orbit
from ..scene.frame import Frame
from ..config import RunConfig
from ..device import resolve_device, to_device
from .export import preview_image, release_memory, write_json, write_outputs
from ..scene.gaussians import PARAM_NAMES, GaussianScene
from ..guidance import Guidance, make_guidance
from ..priors import DiffusionPrior, load_prior
from ..registry import METHODS, PRIORS, resolve
from ..rewards import RewardModel, load_reward
from ..render import rasterize
from .folders import check_runs_root, mark_complete, mark_incomplete, new_run_dir
from . import refine
from .validate import validate


class GenerationError(RuntimeError):
    """A run that had to stop (repeated NaN, out of memory); the message says where its output is."""


class CancelToken(threading.Event):
    """Set it (``cancel.set()``) from any thread to end a run after its current step and write what exists.
    ``abort()`` also asks that a consumer who then stops iterating leaves without that write."""

    aborted = False

    def abort(self) -> None:
        self.aborted = True
        self.set()


@dataclass
class Progress:
    """One step done.

    step: steps done (1..total); elapsed: seconds; n_gaussians: the scene's size now.
    preview: uint8 [H, W, 3] render of a fixed view, every ``preview_every`` steps and at the last step,
        else None.
    history: on those same steps, the named float logs of every step since the previous one, each with
        its "step"; [] otherwise (logs are turned into floats in batches, see the module docstring).
    logs: the last entry of ``history`` without "step" ({} when ``history`` is empty).
    """

    step: int
    total: int
    logs: Dict[str, float]
    elapsed: float
    n_gaussians: int
    preview: Optional[np.ndarray] = None
    history: List[Dict[str, float]] = field(default_factory=list)


@dataclass
class Result:
    """A finished run. scene: as the training cameras saw it (for a refinement with a fitted frame, a copy in
    their frame; ply_path holds it in its input's own frame). The paths are inside out_dir."""

    scene: GaussianScene
    out_dir: Path
    ply_path: Path
    metrics: Dict[str, object]
    cancelled: bool = False
    turntable_path: Optional[Path] = None
    config_path: Optional[Path] = None
    metrics_path: Optional[Path] = None
    mesh_path: Optional[Path] = None
    extra: Dict[str, object] = field(default_factory=dict)


# ---- set-up helpers ---------------------------------------------------------------------------


def make_optimizers(scene: GaussianScene, cfg: RunConfig) -> Dict[str, torch.optim.Optimizer]:
    """One Adam per raw tensor, as gsplat's strategies expect (keys = scene.params keys). The tensors that
    ``scene.keep`` keeps get learning rate 0: Adam then leaves them bit for bit as they were."""
    s = cfg.scene
    lrs = {"means": s.lr_means, "quats": s.lr_quats, "scales": s.lr_scales, "opacities": s.lr_opacities,
           "sh0": s.lr_sh0, "shN": s.lr_shN} | {k: 0.0 for k in refine.KEPT[s.keep]}
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


def opacity_reset_due(cfg: RunConfig, step: int, refine_stop: int) -> bool:
    """Whether the loop resets opacities after ``step`` (gsplat 1.5.3's own reset never fires):
    every ``opacity_reset_every`` steps while densification still runs (before ``refine_stop``)."""
    every = cfg.scene.opacity_reset_every
    return bool(every) and step > 0 and step % every == 0 and step < refine_stop


def _events(cfg: RunConfig) -> Dict[str, Tuple[bool, List[int]]]:
    """name -> (enabled by the settings, the 0-based steps at which it fires), by the loop's own rules."""
    from ..registry import METHODS, resolve

    n, strat, sc = cfg.steps, make_strategy(cfg), cfg.scene
    events = {"densify": (sc.densify, [s for s in range(n) if strat.refine_start_iter < s < strat.refine_stop_iter
                                       and s % strat.refine_every == 0] if sc.densify else []),
              "opacity_reset": (sc.densify and sc.opacity_reset_every > 0,
                                [s for s in range(n) if opacity_reset_due(cfg, s, strat.refine_stop_iter)])}
    for _, res in cfg.camera.resolution:
        events[f"resolution:{res}"] = (True, [s for s in range(n) if cfg.camera.resolution_at(s, n) == res][:1])
    return events | resolve(METHODS[cfg.guidance.method].cls).events(cfg.guidance, n)


def schedule_events(cfg: RunConfig) -> Dict[str, List[int]]:
    """The 0-based steps at which each scheduled event of ``cfg`` fires, by the rules the loop applies.

    "densify": gsplat DefaultStrategy's refine steps; "opacity_reset": ``opacity_reset_due``;
    "resolution:<px>": the first step at each resolution stage; and the method's own (``Guidance.events``:
    PSD's "pair" window and "negative" updates). An enabled event with no step never happens.
    """
    return {name: steps for name, (_, steps) in _events(cfg).items()}


def schedule_problems(cfg: RunConfig) -> List[str]:
    """Settings that ask for an event which never fires in this run (empty when the schedule is consistent)."""
    return [f"{name} never happens in {cfg.steps} steps (check its settings against the run length)"
            for name, (enabled, steps) in _events(cfg).items() if enabled and not steps]


def background(cfg: RunConfig, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """This step's background colour [3]: white, black, random, or mixed (white or random)."""
    mode = cfg.camera.background
    rand = torch.rand(4, generator=g)  # always drawn, so the stream does not depend on the mode
    if mode == "white" or (mode == "mixed" and rand[3] < 0.5):
        return torch.ones(3, device=device)
    if mode == "black":
        return torch.zeros(3, device=device)
    return to_device(rand[:3], device)



# ---- per-step helpers -------------------------------------------------------------------------


def all_finite(loss: torch.Tensor, params: List[torch.Tensor]) -> bool:
    """Whether ``loss`` and every gradient of ``params`` are finite: one stacked check, one host sync."""
    checks = [torch.isfinite(loss).all()] + [torch.isfinite(p.grad).all() for p in params if p.grad is not None]
    return bool(torch.stack(checks).all())


def logs_to_floats(pending: List[Tuple[int, Dict[str, object]]]) -> List[Dict[str, float]]:
    """[(step, logs)] with tensor or float values -> [{"step": step, name: float}], in one host sync
    per device (every tensor of a device is stacked and copied at once)."""
    tensors: Dict[torch.device, List[torch.Tensor]] = {}
    for _, logs in pending:
        for v in logs.values():
            if torch.is_tensor(v):
                tensors.setdefault(v.device, []).append(v.detach().float().reshape(()))
    values = {}
    for dev, ts in tensors.items():
        values[dev] = iter(torch.stack(ts).cpu().tolist())
    return [{"step": float(step), **{k: next(values[v.device]) if torch.is_tensor(v) else float(v)
                                     for k, v in logs.items()}} for step, logs in pending]


# ---- checkpoints ------------------------------------------------------------------------------


def rng_states(gens: Dict[str, torch.Generator], device: torch.device) -> Dict[str, torch.Tensor]:
    """Every random state a resumed run needs: ours, torch's global CPU generator and, on CUDA, the
    device's global generator (gsplat's split draws its samples from it)."""
    states = {k: g.get_state() for k, g in gens.items()} | {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng_states(states: Dict[str, torch.Tensor], gens: Dict[str, torch.Generator],
                       device: torch.device) -> None:
    """The inverse of ``rng_states`` (a checkpoint made on the CPU leaves the CUDA generator as seeded)."""
    for k, g in gens.items():
        g.set_state(states[k])
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def _save_checkpoint(path: Path, step: int, scene: GaussianScene, optimizers, strategy_state, guidance: Guidance,
                     rng: Dict[str, torch.Tensor], nan_count: int) -> None:
    """``optimizers``: the scene's and the guidance's, by name."""
    state = {
        "step": step, "sh_degree": scene.sh_degree, "nan_count": nan_count,
        "params": scene.detached(),
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "strategy": {k: (v.detach().cpu() if torch.is_tensor(v) else v) for k, v in strategy_state.items()},
        "guidance": guidance.state_dict(),
        "rng": rng,
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _load_checkpoint(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint to resume at {path}; run with checkpoint_every > 0 first")
    return torch.load(path, map_location="cpu", weights_only=True)


# ---- the loop ---------------------------------------------------------------------------------


@dataclass
class Training:
    """Everything a run changes as it goes (the loop's stages pass it along; a checkpoint saves it).

    step: the loop's position: after the loop, the steps done (or the failing step, with ``failure``).
    res: the resolution of the latest step (the evaluation renders at it).
    failure: (message, short reason) when the run had to stop (repeated NaN, out of memory).
    history: every flushed step's logs (logs.json); pending: per-step logs not yet turned into floats.
    """

    cfg: RunConfig
    device: torch.device
    out_dir: Path
    guidance: Guidance
    scene: GaussianScene
    optimizers: Dict[str, torch.optim.Optimizer]
    guidance_optimizers: Dict[str, torch.optim.Optimizer]
    strategy: DefaultStrategy
    strategy_state: Dict[str, object]
    gens: Dict[str, torch.Generator]
    start: int = 0
    step: int = 0
    res: int = 0  # the resolution of the latest step
    nan_count: int = 0
    nan_total: int = 0
    failure: Optional[Tuple[str, str]] = None
    history: List[Dict[str, float]] = field(default_factory=list)
    pending: List[Tuple[int, Dict[str, object]]] = field(default_factory=list)
    last_logs: Dict[str, float] = field(default_factory=dict)
    t0: float = 0.0
    frame: Frame = Frame()  # where a refined input sits; the cameras move, the scene does not (scene/frame.py)
    input: Optional[GaussianScene] = None  # the refined input as read (None for a run from a random ball)

    def shown(self, scene: Optional[GaussianScene] = None) -> GaussianScene:
        """``scene`` (default: the run's) as the training cameras see it (a copy in their frame, no grad)."""
        return self.frame.normalised(self.scene if scene is None else scene)

    @property
    def all_optimizers(self) -> List[torch.optim.Optimizer]:
        return list(self.optimizers.values()) + list(self.guidance_optimizers.values())

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"


def generate(cfg: RunConfig, prior: Optional[DiffusionPrior] = None, reward: Optional[RewardModel] = None,
             cancel: Optional[threading.Event] = None, resume: Optional[Union[str, Path]] = None,
             owner: str = "") -> Iterator[Union[Progress, Result]]:
    """Run one generation; yields Progress per step and finally one Result.

    prior, reward: models already loaded for ``cfg.prior`` and ``cfg.reward`` (the app and the batch
        runner keep them between runs; ``psd_gs.run.models.ModelCache``); None loads them here. With a
        reward (given, or loaded because the method needs it) the result's reward over 8 orbit views
        is measured into metrics.json.
    owner: an opaque id written into the run folder's ``owner`` file (the app lists and serves each
        user only their own runs).
    resume: a run folder written by an earlier call with ``checkpoint_every`` > 0; the run goes on
        from its last checkpoint with that folder's config.
    """
    cfg, device, cancel = _check(cfg, resume, cancel)  # 1. one pass before anything loads
    prior, reward, guidance = _load_models(cfg, device, prior, reward)  # 2. before the folder exists
    if cancel.is_set() and resume is None:
        return  # cancelled while the models loaded: nothing was made, so nothing is written (no Result)
    out_dir = _run_folder(cfg, resume, owner)
    t = _setup(cfg, device, guidance, out_dir)  # 3. scene, optimisers, densification, seeded generators
    if resume is not None:
        _resume(t)  # 4. parameters, optimisers, strategy, guidance, every random state
    closed = False
    try:
        yield from _optimise(t, prior, cancel)  # 5. the steps
    except torch.OutOfMemoryError:
        t.failure = (f"out of memory at step {t.step} ({len(t.scene)} Gaussians, {t.res} px, {cfg.camera.batch} "
                     "views per step): lower camera.batch, the resolution or scene.max_gaussians", "out of memory")
    except GeneratorExit:  # the consumer went away (a closed page, a cancelled request): keep what exists
        closed, t.step = True, t.step + 1  # it left at a yield: step ``t.step`` was done
    if closed and getattr(cancel, "aborted", False):
        return  # aborted (a second Ctrl-C): the folder stays INCOMPLETE, with its checkpoint if any
    if t.failure is not None:
        _stop(t)  # the last good scene and the metrics written, then GenerationError
    result = _finish(t, reward, closed)  # 6. scene.ply, metrics (with the prior's report), turntable, mesh
    if not closed:
        yield result


def _check(cfg: RunConfig, resume, cancel) -> Tuple[RunConfig, torch.device, threading.Event]:
    """The run's config (a resumed run's own), validated; its device; a cancel event. Warns about scheduled
    events that never happen."""
    if resume is not None:
        cfg = RunConfig.from_dict(json.loads((Path(resume) / "config.json").read_text()))
    validate(cfg)
    device = resolve_device(cfg.device)
    if cfg.scene.init and resume is None:  # a bad input fails here, before minutes of model loading
        refine.place(refine.load_input(cfg.scene.init, cfg.scene.max_gaussians), cfg)
    if resume is None:
        check_runs_root(cfg.out_dir)  # fail before minutes of model loading, not after
    for problem in schedule_problems(cfg):
        warnings.warn(problem, RuntimeWarning, stacklevel=3)
    return cfg, device, cancel or threading.Event()


def _load_models(cfg: RunConfig, device: torch.device, prior: Optional[DiffusionPrior],
                 reward: Optional[RewardModel]) -> Tuple[DiffusionPrior, Optional[RewardModel], Guidance]:
    """The prior (prepared for this run), the reward when the method needs one, and the guidance."""
    prior = prior or load_prior(cfg.prior, device)
    prior.prepare(cfg)
    if reward is None and METHODS[cfg.guidance.method].needs_reward:
        reward = load_reward(cfg.reward, device=device)
    return prior, reward, make_guidance(cfg.guidance, prior, cfg.prompt, reward, seed=cfg.seed)


def _run_folder(cfg: RunConfig, resume, owner: str) -> Path:
    """A new run folder with config.json (and the owner's id), marked INCOMPLETE; a resumed run's own."""
    if resume is not None:
        mark_incomplete(Path(resume))
        return Path(resume)
    out_dir = new_run_dir(cfg.out_dir, cfg.prompt, cfg.guidance.method, cfg.seed)  # marked INCOMPLETE
    (out_dir / "config.json").write_text(cfg.to_json())
    if owner:
        (out_dir / "owner").write_text(owner)
    return out_dir


def _setup(cfg: RunConfig, device: torch.device, guidance: Guidance, out_dir: Path) -> Training:
    """A fresh scene (a random ball, or the input of a refinement and its frame) with per-tensor Adam, gsplat's
    DefaultStrategy, one Adam per guidance parameter group, and seeded CPU generators for the scene, the
    cameras and the backgrounds."""
    torch.manual_seed(cfg.seed)  # gsplat's split samples from the global generator (CPU and CUDA)
    gens = {"scene": torch.Generator().manual_seed(cfg.seed), "camera": torch.Generator().manual_seed(cfg.seed + 1),
            "background": torch.Generator().manual_seed(cfg.seed + 2)}
    original, frame = None, Frame()
    if cfg.scene.init:
        scene, original, frame = refine.start(cfg, out_dir, device)
    else:
        scene = GaussianScene.random(cfg.scene.n_init, radius=cfg.scene.init_radius, sh_degree=cfg.scene.sh_degree,
                                     init_opacity=cfg.scene.init_opacity, generator=gens["scene"], device=device,
                                     color_jitter=cfg.scene.color_jitter)
    optimizers = make_optimizers(scene, cfg)
    strategy = make_strategy(cfg)
    strategy.check_sanity(scene.params, optimizers)
    return Training(cfg, device, out_dir, guidance, scene, optimizers,
                    {g["name"]: torch.optim.Adam([g]) for g in guidance.param_groups()}, strategy,
                    strategy.initialize_state(scene_scale=frame.scale), gens, frame=frame, input=original)


def _resume(t: Training) -> None:
    """Everything ``_save_checkpoint`` wrote, back in place: the run goes on bit for bit."""
    ck = _load_checkpoint(t.checkpoint_path)
    t.scene = GaussianScene(*[ck["params"][k] for k in PARAM_NAMES], sh_degree=ck["sh_degree"]).to(t.device)
    t.optimizers = make_optimizers(t.scene, t.cfg)
    t.guidance.load_state_dict(ck["guidance"])  # before its optimisers, which hold its parameters
    for k, opt in (t.optimizers | t.guidance_optimizers).items():
        opt.load_state_dict(ck["optimizers"][k])
    t.strategy_state = {k: (v.to(t.device) if torch.is_tensor(v) else v) for k, v in ck["strategy"].items()}
    restore_rng_states(ck["rng"], t.gens, t.device)
    t.start, t.nan_count = ck["step"], ck["nan_count"]


def _optimise(t: Training, prior: DiffusionPrior, cancel: threading.Event) -> Iterator[Progress]:
    """Steps ``t.start`` .. cfg.steps, a Progress after each; stops early on cancel or on ``t.failure``."""
    cfg = t.cfg
    t.t0, t.step, t.res = time.perf_counter(), t.start, cfg.camera.resolution_at(t.start, cfg.steps)
    for step in range(t.start, cfg.steps):
        t.step = step
        if cancel.is_set():
            return
        t.res = res = cfg.camera.resolution_at(step, cfg.steps)
        logs = _step(t, prior, step, res)
        if t.failure is not None:
            return
        t.pending.append((step + 1, logs))
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
            _save_checkpoint(t.checkpoint_path, step + 1, t.scene, t.optimizers | t.guidance_optimizers,
                             t.strategy_state, t.guidance, rng_states(t.gens, t.device), t.nan_count)
        preview, history = None, []
        if step + 1 == cfg.steps or cancel.is_set() or (cfg.preview_every and (step + 1) % cfg.preview_every == 0):
            history = _flush_logs(t)
            preview = preview_image(t.shown(), cfg, res) if cfg.preview_every else None
        yield Progress(step + 1, cfg.steps, t.last_logs if history else {}, time.perf_counter() - t.t0,
                       len(t.scene), preview, history)
    t.step = cfg.steps


def _step(t: Training, prior: DiffusionPrior, step: int, res: int) -> Dict[str, object]:
    """One optimisation step at resolution ``res``: cameras, render, guidance, one backward, one finiteness
    check, the optimisers, the colour floor, densification, our opacity reset. Its logs (tensors allowed)."""
    cfg, cam, scene = t.cfg, t.cfg.camera, t.scene
    cams = sample_orbit(cam.batch, res, res, cam.elevation, cam.azimuth, cam.radius, cam.fovy,
                        generator=t.gens["camera"], grid=prior.pose_grid)  # on the CPU: the guidance's
    render = rasterize(scene, t.frame.cameras(cams.to(t.device)), background(cfg, t.gens["background"], t.device))
    out = t.guidance.step(render, cams, step, cfg.steps)
    loss = sum(out.losses.values())
    t.strategy.step_pre_backward(scene.params, t.optimizers, t.strategy_state, step, render.info)
    loss.backward()
    logs = {f"loss_{name}": term.detach() for name, term in out.losses.items()} | out.logs
    guidance_params = [p for g in t.guidance.param_groups() for p in g["params"]]
    if not all_finite(loss, [*scene.params.values(), *guidance_params]):  # densification replaces params
        t.nan_count, t.nan_total = t.nan_count + 1, t.nan_total + 1
        for opt in t.all_optimizers:
            opt.zero_grad(set_to_none=True)
        logs["skipped_nan"] = 1.0
        if t.nan_count >= cfg.max_nan_steps:
            t.failure = (f"the loss or its gradients were not finite for {t.nan_count} steps in a row (last at "
                         f"step {step}); stopped. Lower the learning rates or the CFG scale", "non-finite loss")
        return logs
    t.nan_count = 0
    if "means" not in refine.KEPT[cfg.scene.keep]:  # positions in the input's units: its scale scales their steps
        t.optimizers["means"].param_groups[0]["lr"] = means_lr(cfg, step) * t.frame.scale
    for opt in t.all_optimizers:  # densification keeps these lists' tensors in place
        opt.step()
        opt.zero_grad(set_to_none=True)
    if cfg.scene.color_floor and "sh0" not in refine.KEPT[cfg.scene.keep]:
        scene.floor_colors_()
    t.strategy.step_post_backward(scene.params, t.optimizers, t.strategy_state, step, render.info, packed=False)
    if len(scene) > cfg.scene.max_gaussians:
        t.strategy.refine_stop_iter = step  # no more growth
    if opacity_reset_due(cfg, step, t.strategy.refine_stop_iter):
        reset_opa(scene.params, t.optimizers, t.strategy_state, value=t.strategy.prune_opa * 2.0)
    return logs


def _flush_logs(t: Training) -> List[Dict[str, float]]:
    """The pending per-step logs as floats (one host sync), added to ``t.history``; returns them."""
    flushed, t.pending = logs_to_floats(t.pending), []
    t.history += flushed
    if flushed:
        t.last_logs = {k: v for k, v in flushed[-1].items() if k != "step"}
    return flushed


def _stop(t: Training) -> None:
    """A run that had to stop: its step's tensors dropped, the last good scene and metrics written; raises
    GenerationError naming the folder."""
    for opt in t.all_optimizers:
        opt.zero_grad(set_to_none=True)
    release_memory(t.device)
    _export(t, {"error": t.failure[1], "step": t.step, "steps": t.cfg.steps, "n_gaussians": len(t.scene)},
            t.history + logs_to_floats(t.pending))
    raise GenerationError(f"{t.failure[0]}. The last good scene is in {t.out_dir}")


def _finish(t: Training, reward: Optional[RewardModel], closed: bool) -> Result:
    """The run's metrics (with the reward over 8 orbit views off the training grid and the world's report)
    and its outputs; the Result. A closed generator cannot yield: the caller then only writes."""
    cfg = t.cfg
    cancelled = t.step < cfg.steps or closed
    if t.pending:  # a cancel between flushes
        _flush_logs(t)
    elapsed = time.perf_counter() - t.t0
    metrics = {"steps_done": t.step, "steps": cfg.steps, "cancelled": cancelled, "seconds": elapsed,
               "seconds_per_step": elapsed / max(t.step - t.start, 1), "n_gaussians": len(t.scene),
               "nan_steps_skipped": t.nan_total, "last_logs": t.last_logs} | t.guidance.summary()
    report = PRIORS[cfg.prior.name].report
    if (report or t.input is not None) and reward is None:
        reward = load_reward(cfg.reward, device=t.device)
    if reward is not None:
        from .evaluate import eval_cameras, render_rgba, score

        views = eval_cameras(8, t.res, cfg.camera.radius[0], cfg.camera.fovy[0])
        shown = t.shown()
        rgba = render_rgba(shown, views)
        per_view = score(rgba[0], reward, cfg.prompt)
        metrics["reward_views"] = {"mean": per_view.mean().item(), "per_view": per_view.tolist(),
                                   "azimuths": [round(a, 1) for a in views.azimuth.tolist()]}
        if report:
            metrics["evaluation"] = resolve(report)(shown, cfg.prompt, reward, views) | {"judged_by": cfg.reward}
        if t.input is not None:
            before = render_rgba(t.shown(t.input), views)
            metrics["refine"] = _refined(t) | refine.change(before, rgba) | {
                "reward_before": score(before[0], reward, cfg.prompt).mean().item(),
                "reward_after": per_view.mean().item()}
    return _export(t, metrics, t.history, cancelled)


def _refined(t: Training) -> Dict[str, object]:
    """What a refinement kept of its input (whether what ``scene.keep`` keeps is bit for bit the input's), the
    input's size and frame."""
    keep = t.cfg.scene.keep
    return {"input": refine.INPUT_NAME, "keep": keep, "kept_unchanged": refine.kept_unchanged(t.scene, t.input, keep),
            "n_gaussians_input": len(t.input), "sh_degree": t.input.sh_degree, "frame": t.frame.to_dict()}


def _export(t: Training, metrics: dict, logs: List[Dict[str, float]], cancelled: bool = False) -> Result:
    """Write the run's outputs (``export.write_outputs``: scene.ply in the scene's own frame, the turntable as the
    cameras see it) and its per-step logs (logs.json), then mark the folder complete; the Result, whose scene
    is the one the cameras see (a refined input's copy in their frame; scene.ply holds it in its own)."""
    write_json(t.out_dir / "logs.json", logs)
    shown = t.shown()
    paths = write_outputs(t.scene, t.cfg, t.out_dir, metrics, shown=shown)
    mark_complete(t.out_dir)
    return Result(shown, t.out_dir, paths["ply"], metrics, cancelled, paths["turntable"], t.out_dir / "config.json",
                  paths["metrics"], paths["mesh"])


def run(cfg: RunConfig, **kwargs) -> Result:
    """generate() to the end; returns its Result."""
    result = None
    for event in generate(cfg, **kwargs):
        if isinstance(event, Result):
            result = event
    return result
