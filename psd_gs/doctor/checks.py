"""``python -m psd_gs doctor``: can this host run psd-gs? One table of checks, each with a figure.

Run it once on a new host (``docker compose run --rm psd-gs python -m psd_gs doctor`` in the image).
Every check returns rows of ``Row(check, status, figure, detail)``; status is one of

    pass   the check ran and its numbers are within bounds
    fail   something a run needs is broken (the exit code is then 2)
    warn   it works, but not as well as it could (e.g. the rasteriser fallback)
    skip   does not apply here (a CUDA check on a CPU host, the SD run without its weights)
    info   a fact worth seeing (versions, the GPU, what is in the weights cache)

The checks, in order: versions and the GPU; which rasteriser renders and why; the CPU rasteriser
against the float64 brute-force reference; on CUDA, gsplat against our PyTorch rasteriser (images and
gradients) on random scenes; one SDS, PSD and reward-gradient step on tiny random models (fp16 on
CUDA), through the real loaders; a short shapes-world run through the whole loop and export; the
shipped learned prior (a small SD trained here) loaded by the SD loader, with one timed PSD step; which
weights the local cache holds for each prior and reward; and, on CUDA with the SD weights and a
reward cached, 10 PSD steps at 512 px with their time and peak GPU memory. A check that raises
becomes a failed row; the doctor itself does not crash.
"""

from __future__ import annotations

import json
import math
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

import torch

STATUSES = ("pass", "fail", "warn", "skip", "info")

# Bounds for gsplat against our PyTorch rasteriser. gsplat compiles with fast math and tests alpha >= 1/255
# in float32, so a Gaussian at that threshold can be in one image and not the other (about 4e-3 of
# colour at a fringe pixel). Chosen on paper, not yet measured on a GPU.
MAX_RGB_DIFF = 0.05
MEAN_RGB_DIFF = 1e-3
MAX_GRAD_REL_ERR = 0.1


@dataclass
class Row:
    check: str
    status: str  # one of STATUSES
    figure: str = ""  # the number that matters, with its unit
    detail: str = ""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable, device: torch.device):
    """(fn(), seconds), with the device synchronised around it."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


# ---- checks -----------------------------------------------------------------------------------


def check_versions(device: torch.device) -> List[Row]:
    rows = [Row("python", "info", platform.python_version())]
    for dist in ("torch", "gsplat", "diffusers", "transformers", "open_clip_torch", "gradio", "ray"):
        try:
            rows.append(Row(dist, "pass", metadata.version(dist)))
        except metadata.PackageNotFoundError:
            rows.append(Row(dist, "fail", "missing", "pip install -r requirements.txt"))
    rows.append(Row("torch CUDA build", "info", torch.version.cuda or "none (CPU build)"))
    if device.type != "cuda":
        why = "CUDA not available" if not torch.cuda.is_available() else f"device {device} chosen"
        return rows + [Row("GPU", "skip", "none", f"{why}: the CPU path (PyTorch rasteriser, shapes world) runs")]
    props = torch.cuda.get_device_properties(device)
    free, total = torch.cuda.mem_get_info(device)
    rows.append(Row("GPU", "info", props.name, f"compute capability {props.major}.{props.minor}"))
    rows.append(Row("GPU memory free", "info", f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB"))
    return rows


def check_renderer(device: torch.device) -> List[Row]:
    from ..render import renderer_status

    status = renderer_status(device)
    if device.type != "cuda":
        return [Row("rasteriser", "pass", "PyTorch (CPU)", status)]
    ok = status.startswith("gsplat")
    return [Row("rasteriser", "pass" if ok else "warn", "gsplat CUDA" if ok else "PyTorch fallback", status)]


def _random_scene(seed: int, n: int, device: torch.device):
    from ..scene.gaussians import GaussianScene

    g = torch.Generator().manual_seed(seed)
    scene = GaussianScene.random(n, radius=0.6, init_opacity=0.5, generator=g)
    with torch.no_grad():  # varied sizes, shapes and opacities, so fringes and overlaps occur
        scene.params["scales"].add_(0.5 * torch.randn(scene.log_scales.shape, generator=g))
        scene.params["quats"].copy_(torch.randn(scene.quats.shape, generator=g))
        scene.params["opacities"].copy_(2.0 * torch.randn(scene.opacity_logits.shape, generator=g))
    return scene.to(device), g


def check_cpu_rasteriser() -> List[Row]:
    """Our PyTorch rasteriser against the float64 brute-force reference on one small scene."""
    from ..scene.cameras import sample_orbit
    from ..render.reference import rasterize_reference
    from ..render.torch_backend import rasterize_torch

    scene, g = _random_scene(0, 300, torch.device("cpu"))
    scene = scene.to("cpu", torch.float64)
    cams = sample_orbit(2, 32, 32, generator=g, dtype=torch.float64)
    with torch.no_grad():
        ours, seconds = _timed(lambda: rasterize_torch(scene, cams, 1.0), torch.device("cpu"))
        ref = rasterize_reference(scene, cams, 1.0)
    diff = (ours.rgb - ref.rgb).abs().max().item()
    return [Row("PyTorch rasteriser vs float64 reference", "pass" if diff < 1e-9 else "fail", f"max |drgb| {diff:.1e}",
                f"300 Gaussians, 2 views at 32 px, {seconds * 1000:.0f} ms")]


def _render_and_grads(fn, scene, cams, weights, device):
    """Render with ``fn``; the image [B, H, W, 3] and the gradients of sum(weights * rgb) per parameter."""
    for p in scene.params.values():
        p.grad = None

    def go():
        out = fn(scene, cams, 1.0)
        (out.rgb * weights).sum().backward()
        return out.rgb.detach()

    rgb, seconds = _timed(go, device)
    return rgb, {k: p.grad.detach().clone() for k, p in scene.params.items() if p.grad is not None}, seconds


def compare_rasterisers(candidate: Callable, reference: Callable, device: torch.device, seed: int,
                        n: int = 4000, res: int = 128) -> Row:
    """``candidate`` against ``reference`` (both ``fn(scene, cameras, background) -> Render``) on one random
    scene: images, and gradients of a fixed random weighting of the image, within the module's bounds."""
    from ..scene.cameras import sample_orbit

    scene, g = _random_scene(seed, n, device)
    cams = sample_orbit(2, res, res, generator=g).to(device)
    weights = torch.rand(2, res, res, 3, generator=g).to(device)
    ref_rgb, ref_grads, t_ref = _render_and_grads(reference, scene, cams, weights, device)
    rgb, grads, t_cand = _render_and_grads(candidate, scene, cams, weights, device)
    diff = (rgb - ref_rgb).abs()
    rel = max(((grads[k] - ref_grads[k]).norm() / ref_grads[k].norm().clamp_min(1e-12)).item()
              for k in ref_grads if k in grads)
    good = diff.max().item() <= MAX_RGB_DIFF and diff.mean().item() <= MEAN_RGB_DIFF and rel <= MAX_GRAD_REL_ERR
    return Row("", "pass" if good else "fail", f"max |drgb| {diff.max().item():.1e}, grad rel. err {rel:.1e}",
               f"{n} Gaussians, 2 views at {res} px; fwd+bwd {t_cand * 1000:.1f} ms against {t_ref * 1000:.1f} ms")


def check_gsplat_against_torch(device: torch.device, n_scenes: int = 3) -> List[Row]:
    """gsplat's CUDA rasteriser against our PyTorch one on the same random scenes: images and gradients."""
    if device.type != "cuda":
        return [Row("gsplat vs PyTorch rasteriser", "skip", "", "needs a CUDA GPU")]
    from ..render import gsplat_backend, torch_backend

    ok, why = gsplat_backend.kernels_status()
    if not ok:
        return [Row("gsplat vs PyTorch rasteriser", "skip", "", f"gsplat unavailable, fallback in use: {why}")]
    rows = []
    for i in range(n_scenes):
        row = compare_rasterisers(gsplat_backend.rasterize_gsplat, torch_backend.rasterize_torch, device, 100 + i)
        row.check = f"gsplat vs PyTorch rasteriser, scene {i + 1}"
        rows.append(row)
    return rows


def _guidance_step(guidance, scene, cams, device: torch.device):
    """One timed guidance step on ``scene`` seen from ``cams`` with its backward: (seconds, problems), the
    problems being what is wrong with its loss and the scene's gradients (none: [])."""
    from ..render import rasterize

    for p in scene.params.values():
        p.grad = None

    def step():
        out = guidance.step(rasterize(scene, cams.to(device), 1.0), cams, 0, 100)
        out.loss.backward()
        return out

    out, seconds = _timed(step, device)
    grads = [p.grad for p in scene.params.values() if p.grad is not None]
    problems = [what for what, bad in [
        ("loss not finite", not torch.isfinite(out.loss).item()),
        (f"loss on {out.loss.device}", out.loss.device.type != device.type),
        ("gradients not finite", not all(torch.isfinite(gr).all().item() for gr in grads)),
        ("no gradient reached the scene", not any(gr.abs().sum().item() > 0 for gr in grads)),
        ("gradients off the device", any(gr.device.type != device.type for gr in grads))] if bad]
    return seconds, problems


def check_guidance_steps(device: torch.device, workdir: Path) -> List[Row]:
    """One step of each guidance method on tiny random SD and HPS models loaded through the real loaders."""
    from ..scene.cameras import sample_orbit
    from ..config import GuidanceConfig
    from ..guidance import make_guidance
    from ..priors.stable_diffusion import load_stable_diffusion
    from ..registry import METHODS
    from ..rewards import load_reward
    from .tiny import TINY_OPEN_CLIP, build_tiny_hps, build_tiny_sd, build_tiny_taesd

    prior = load_stable_diffusion(str(build_tiny_sd(workdir / "tiny-sd")), device=device,
                                  taesd=str(build_tiny_taesd(workdir / "tiny-taesd")))
    build_tiny_hps(workdir / "tiny-hps")
    reward = load_reward("hpsv2", device=device, weights=workdir / "tiny-hps", model_config=TINY_OPEN_CLIP)
    scene, g = _random_scene(7, 500, device)
    rows = []
    for method in METHODS:
        cfg = GuidanceConfig(method=method, neg_every=1)  # PSD updates its negative in this step too
        guidance = make_guidance(cfg, prior, "a red cube", reward if method != "sds" else None, seed=0)
        cams = sample_orbit(2, prior.resolution, prior.resolution, generator=g)
        seconds, problems = _guidance_step(guidance, scene, cams, device)
        rows.append(Row(f"{method} step, tiny models", "fail" if problems else "pass", f"{seconds * 1000:.0f} ms",
                        "; ".join(problems) or f"{str(prior.dtype).replace('torch.', '')} prior on {device}"))
    return rows


def check_shapes_run(device: torch.device, workdir: Path, steps: int = 20) -> List[Row]:
    """A short PSD run in the shapes world through the whole loop and its export."""
    from ..config import preset
    from ..run.loop import run
    from ..scene.ply import load_ply

    cfg = preset("shapes", prompt="a red cube", steps=steps, seed=0, out_dir=str(workdir / "runs"),
                 preview_every=0, turntable_views=4, device=str(device))
    cfg.prior.options["pose_grid"] = None  # render the reference objects per step: no pose-grid cache needed
    cfg.camera.resolution = ((0.0, 32),)
    result = run(cfg)
    m = result.metrics
    scene = load_ply(result.ply_path)
    finite = all(torch.isfinite(v).all() for v in scene.params.values()) and math.isfinite(m["evaluation"]["psnr"])
    ok = finite and m["steps_done"] == steps and m["nan_steps_skipped"] == 0 and result.turntable_path is not None
    return [Row(f"shapes world, {steps} PSD steps + export", "pass" if ok else "fail",
                f"{m['seconds_per_step'] * 1000:.0f} ms/step",
                f"{len(scene)} Gaussians, 32 px, .ply/metrics/turntable written" if ok else f"metrics: {m}")]


def check_learned_prior(device: torch.device) -> List[Row]:
    """The shipped learned prior (a small SD trained here) through the SD loader, and one timed PSD step of the
    learned preset (4 views at 64 px, in the pair window): the real SD code path with learned weights, on any device."""
    from ..config import PriorConfig, preset
    from ..guidance import make_guidance
    from ..priors import load_prior
    from ..rewards import load_reward
    from ..scene.cameras import sample_orbit
    from ..train import SHIPPED_PRIOR

    label = "learned prior (small SD trained here)"
    if not (SHIPPED_PRIOR / "model_index.json").is_file():
        return [Row(label, "fail", "missing", f"{SHIPPED_PRIOR} has no model_index.json: reinstall psd-gs or run "
                                              "`python -m psd_gs train-prior`")]
    t0 = time.perf_counter()
    prior = load_prior(PriorConfig("learned"), device)
    load_s = time.perf_counter() - t0
    cfg = preset("learned")
    reward = load_reward(cfg.reward, device=device)
    guidance = make_guidance(cfg.guidance, prior, "a red cube", reward, seed=0)
    scene, g = _random_scene(7, cfg.scene.n_init, device)
    cams = sample_orbit(cfg.camera.batch, prior.resolution, prior.resolution, radius=cfg.camera.radius, generator=g)

    _guidance_step(guidance, scene, cams, device)  # warm-up
    seconds, problems = _guidance_step(guidance, scene, cams, device)
    return [Row(label, "fail" if problems else "pass", f"{seconds * 1000:.0f} ms per PSD step",
                "; ".join(problems) or f"loaded in {load_s:.1f} s, {cfg.camera.batch} views at {prior.resolution} "
                                       f"px, {str(prior.dtype).replace('torch.', '')} on {device}")]


def check_ray(device: torch.device) -> List[Row]:
    """A local Ray instance starts, as `batch` starts one, and sees every GPU torch sees (a batch runs one
    object per GPU it sees)."""
    import logging

    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        resources = ray.cluster_resources()
    finally:
        if started:
            ray.shutdown()
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    want = torch.cuda.device_count() if device.type == "cuda" else 0
    detail = "" if gpus >= want else (f"torch sees {want} GPUs and Ray {gpus}: a batch would leave GPUs idle; check "
                                      f"CUDA_VISIBLE_DEVICES and that nvidia-smi works")
    return [Row("Ray (batches)", "pass" if gpus >= want else "fail", f"{cpus} CPUs, {gpus} GPUs", detail)]


def check_weights() -> List[Row]:
    """Which weights the local Hugging Face cache holds, per prior and per reward (fetch-weights' lists)."""
    from ..config import PriorConfig
    from ..run.fetch import required_files, status
    from ..registry import PRIORS, REWARDS

    rows = []
    wanted = [(f"prior {name}", name, []) for name in PRIORS] + [(f"reward {name}", "none", [name]) for name in REWARDS]
    for label, prior, rewards in wanted:
        files = required_files(PriorConfig(prior) if prior != "none" else None, rewards)
        if not files:
            continue  # no weights (the shapes prior and rewards)
        present, missing = status(files)
        fix = f"python -m psd_gs fetch-weights --prior {prior} --rewards {','.join(rewards) or 'none'}"
        rows.append(Row(f"weights: {label}", "pass" if not missing else "info", f"{len(present)}/{len(files)} files",
                        "all in the local cache" if not missing else f"missing; fetch with `{fix}`"))
    return rows


def check_sd_run(device: torch.device, workdir: Path, steps: int = 10, resolution: int = 512) -> List[Row]:
    """``steps`` PSD steps with the real SD weights and a real reward: seconds per step, peak GPU memory."""
    label = f"SD + reward, {steps} PSD steps at {resolution} px"
    if device.type != "cuda":
        return [Row(label, "skip", "", "needs a CUDA GPU")]
    from ..config import PriorConfig
    from ..run.fetch import required_files, status

    if status(required_files(PriorConfig("sd"), []))[1]:
        return [Row(label, "skip", "", "the SD weights are not in the local cache (fetch-weights --prior sd)")]
    reward = next((r for r in ("hpsv2", "pickscore", "aesthetic", "clip")
                   if not status(required_files(None, [r]))[1]), None)
    if reward is None:
        return [Row(label, "skip", "", "no reward's weights are in the local cache (fetch-weights --rewards hpsv2)")]
    from ..config import preset
    from ..run.loop import run

    cfg = preset("sd", prompt="a red apple on a wooden table", steps=steps, seed=0, out_dir=str(workdir / "runs"),
                 reward=reward, preview_every=0, turntable_views=4, device=str(device))
    cfg.camera.resolution = ((0.0, resolution),)
    cfg.scene.densify = False  # 10 steps: nothing to densify
    torch.cuda.reset_peak_memory_stats(device)
    result = run(cfg)
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    m = result.metrics
    finite = m["nan_steps_skipped"] == 0 and all(math.isfinite(v) for v in m["last_logs"].values())
    return [Row(label, "pass" if finite else "fail", f"{m['seconds_per_step']:.2f} s/step, peak {peak:.1f} GiB",
                f"reward {reward}, {cfg.camera.batch} views/step, e_n updated every {cfg.guidance.neg_every}"
                + ("" if finite else f"; non-finite values: {m['last_logs']}"))]


# ---- running and reporting --------------------------------------------------------------------


def quiet_libraries() -> None:
    """No progress bars or config notices from diffusers/transformers while tiny models are built."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _guarded(name: str, fn: Callable[[], Iterable[Row]]) -> List[Row]:
    """The rows of ``fn``, or one failed row naming the error it raised."""
    try:
        return list(fn())
    except Exception as err:  # the doctor reports every failure as a row and goes on
        first = (str(err).strip().splitlines() or [""])[0][:300]
        return [Row(name, "fail", type(err).__name__, first)]


def run_checks(device: Optional[str] = None, workdir: Optional[Path] = None) -> List[Row]:
    """Every check for ``device`` (default: the "auto" rule), writing scratch files under ``workdir``."""
    from ..device import resolve_device

    dev = resolve_device(device)
    quiet_libraries()
    with tempfile.TemporaryDirectory(prefix="psd-gs-doctor-") as tmp:
        work = Path(workdir or tmp)
        checks = [("versions", lambda: check_versions(dev)),
                  ("rasteriser", lambda: check_renderer(dev)),
                  ("PyTorch rasteriser vs float64 reference", check_cpu_rasteriser),
                  ("gsplat vs PyTorch rasteriser", lambda: check_gsplat_against_torch(dev)),
                  ("guidance steps, tiny models", lambda: check_guidance_steps(dev, work)),
                  ("shapes world run", lambda: check_shapes_run(dev, work)),
                  ("learned prior", lambda: check_learned_prior(dev)),
                  ("Ray (batches)", lambda: check_ray(dev)),
                  ("weights cache", check_weights),
                  ("SD + reward run", lambda: check_sd_run(dev, work))]
        return [row for name, fn in checks for row in _guarded(name, fn)]


def passed(rows: Iterable[Row]) -> bool:
    return not any(r.status == "fail" for r in rows)


def table(rows: List[Row]) -> str:
    """The rows as an aligned text table."""
    w = [max(len(h), *(len(getattr(r, h)) for r in rows)) for h in ("check", "status", "figure")]
    lines = [f"{'check':<{w[0]}}  {'status':<{w[1]}}  {'figure':<{w[2]}}  detail"]
    lines += [f"{r.check:<{w[0]}}  {r.status:<{w[1]}}  {r.figure:<{w[2]}}  {r.detail}".rstrip() for r in rows]
    return "\n".join(lines)


def write_json(rows: List[Row], path: Path, device: str) -> None:
    report: Dict[str, object] = {"ok": passed(rows), "device": device, "rows": [asdict(r) for r in rows]}
    Path(path).write_text(json.dumps(report, indent=2))
