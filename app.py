"""psd-gs Gradio front end: type a prompt, watch the splat grow, stop, compare with SDS, download.

Thin on purpose: it builds the page and calls ``psd_gs.generate`` in-process, turning its Progress
events into page updates. One run at a time (Gradio's queue, bounded); each run writes only in its
own folder below the runs root; old run folders are removed after ``--max-age-hours``.

    python app.py [--host 127.0.0.1] [--port 7860] [--runs runs/app] [--max-age-hours 24]

Environment: PSD_GS_AUTH="user:password" asks for a login; PSD_GS_PRESET=shapes|sd forces the world.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import gradio as gr
import pandas as pd

from psd_gs.config import PRESETS, FieldInfo, PriorConfig, RunConfig, apply_overrides, config_fields, preset
from psd_gs.device import resolve_device
from psd_gs.generate import (CancelToken, GenerationError, Progress, Result, check_runs_root, clean_old_runs,
                             generate)
from psd_gs.fetch import prior_files, status
from psd_gs.models import ModelCache
from psd_gs.priors.base import MissingWeightsError
from psd_gs.registry import METHODS, PRIORS, rewards_for
from psd_gs.render import renderer_status
from psd_gs.validate import validate

TITLE = "psd-gs"
SHAPES_EXAMPLES = ["a cube", "a sphere", "a torus", "a red cube", "blue shapes"]
RESOLUTIONS = {"shapes": ["32", "64", "128"], "sd": ["128", "256", "512"]}

# The page's controls, each one config path (psd_gs.config): the main panel, then the Advanced panel.
# Widgets, their help and ranges come from the fields themselves; "resolution" is the one pseudo-path
# (one size for the whole run, camera.resolution = [[0, px]]).
MAIN = ["prompt", "guidance.negative_prompt", "prior.name", "guidance.method", "reward", "guidance.cfg_scale",
        "guidance.lambda_p", "guidance.neg_lr", "steps", "seed", "resolution"]
ADVANCED = ["guidance.tau", "guidance.pair_window", "guidance.neg_every", "guidance.beta", "guidance.gamma",
            "guidance.lambda_r", "guidance.t_min", "guidance.t_max_start", "guidance.t_max_end"]
LABELS = {"prompt": "Prompt", "guidance.negative_prompt": "Negative prompt", "prior.name": "Prior",
          "guidance.method": "Method",
          "reward": "Reward model", "guidance.cfg_scale": "CFG scale", "guidance.lambda_p": "Preference weight",
          "guidance.neg_lr": "Negative-embedding learning rate", "steps": "Steps", "seed": "Seed",
          "resolution": "Resolution"}
ELEM_IDS = {"prompt": "prompt"}


def choose_world() -> Tuple[str, str]:
    """(preset name, why): the first preset whose prior can run here ("sd" needs CUDA and its weights in
    the local cache), else "shapes". PSD_GS_PRESET forces one."""
    forced = os.environ.get("PSD_GS_PRESET")
    if forced in PRESETS:
        return forced, f"set by PSD_GS_PRESET={forced}"
    on_cuda = resolve_device().type == "cuda"
    for name in ("sd", "shapes"):
        prior = preset(name).prior
        entry = PRIORS[prior.name]
        if entry.needs_cuda and not on_cuda:
            continue
        missing = status(prior_files(prior))[1]
        if missing:
            return "shapes", (f"CUDA is here but the {entry.label} weights are not in the local cache ({len(missing)} "
                              f"files missing); fetch them with `python -m psd_gs fetch-weights --prior "
                              f"{prior.name}`. Running the shapes world meanwhile")
        return name, (f"CUDA GPU and the {entry.label} weights found" if entry.needs_cuda else
                      "no CUDA GPU here, so the offline shapes world runs (closed-form prior, colour reward)")
    raise RuntimeError("no preset can run here")


def prior_choices(world: str) -> List[Tuple[str, str]]:
    """(label, name) of the priors of ``world`` that can run on this device; a prior whose weights are not
    cached is offered with that said (choosing it explains how to fetch them)."""
    on_cuda = resolve_device().type == "cuda"
    out = []
    for name, entry in PRIORS.items():
        if entry.world != world or (entry.needs_cuda and not on_cuda):
            continue
        missing = status(prior_files(PriorConfig(name)))[1]
        out.append((entry.label + (" (weights not cached)" if missing else ""), name))
    return out


def make_config(world: str, runs_root: str, values: Mapping[str, object]) -> RunConfig:
    """The page's values (config path -> value) on the world's preset, validated; ValueError names the first
    bad one."""
    cfg = preset(world, out_dir=runs_root)
    values = dict(values)
    if "resolution" in values:
        values["camera.resolution"] = [[0.0, values.pop("resolution")]]
    if values.get("prompt") is None:
        values["prompt"] = ""
    return validate(apply_overrides(cfg, values))


def widget(f: FieldInfo, label: str, choices: Optional[List[Tuple[str, str]]] = None, **kwargs) -> gr.components.Component:
    """A control for config field ``f``: its value, help as the info line, its range."""
    common = dict(label=label, info=f.help, **kwargs)
    if choices is not None:
        return gr.Dropdown(choices=choices, value=f.value, **common)
    if f.type is bool:
        return gr.Checkbox(value=f.value, **common)
    if f.type in (int, float):
        low = f.minimum if f.minimum is not None else f.above
        return gr.Number(value=f.value, precision=0 if f.type is int else None, minimum=low, maximum=f.maximum,
                         **common)
    if f.type is str:
        return gr.Textbox(value=f.value, **common)
    return gr.Textbox(value=json.dumps(f.value), **common)  # tuples and lists as JSON, parsed back by the config


def curves(history: List[Dict[str, float]]) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """Long-format frames for the reward (winner / loser / render) and loss plots."""
    rew, loss = [], []
    for h in history:
        for key, series in (("reward_w", "winner guess"), ("reward_l", "loser guess"), ("reward", "render")):
            if key in h:
                rew.append({"step": h["step"], "reward": h[key], "series": series})
        for key in ("loss_sds", "loss_reward", "loss_negative"):
            if key in h:
                loss.append({"step": h["step"], "loss": h[key], "term": key[5:]})
    return (pd.DataFrame(rew, columns=["step", "reward", "series"]),
            pd.DataFrame(loss, columns=["step", "loss", "term"]))


def status_line(event: Progress) -> str:
    left = event.elapsed / event.step * (event.total - event.step)
    return f"step {event.step} / {event.total} · {event.elapsed:.1f} s elapsed · about {left:.0f} s left · {event.n_gaussians} Gaussians"


def result_files(result: Result) -> List[str]:
    return [str(p) for p in (result.ply_path, result.config_path, result.metrics_path) if p and p.exists()]


def summary(result: Result, label: str) -> str:
    ev = result.metrics.get("evaluation")
    done = f"{label}: {result.metrics['steps_done']} / {result.metrics['steps']} steps in {result.metrics['seconds']:.1f} s"
    if result.cancelled:
        done += " (stopped; this is what existed)"
    if ev:
        done += (f" · reward {ev['reward']:.3f} over 8 views · became the **{ev['nearest']}** "
                 f"({ev['psnr']:.1f} dB) · the reward prefers the {ev['preferred']}")
    return done


def compare_table(a: Result, b: Result, reward) -> pd.DataFrame:
    """Reward per orbit view of the chosen method's scene and SDS's, side by side."""
    from psd_gs.evaluate import eval_cameras, render_views, score

    cfg = RunConfig.from_dict(json.loads(a.config_path.read_text()))
    cams = eval_cameras(8, cfg.camera.resolution[-1][1], cfg.camera.radius[0], cfg.camera.fovy[0])
    ra = score(render_views(a.scene, cams), reward, cfg.prompt)
    rb = score(render_views(b.scene, cams), reward, cfg.prompt)
    rows = [{"azimuth": round(az, 1), cfg.guidance.method: round(x, 4), "sds": round(y, 4)}
            for az, x, y in zip(cams.azimuth.tolist(), ra.tolist(), rb.tolist())]
    rows.append({"azimuth": "mean", cfg.guidance.method: round(ra.mean().item(), 4), "sds": round(rb.mean().item(), 4)})
    return pd.DataFrame(rows)


def build_demo(world: Optional[str] = None, why: str = "", runs_root: str = "runs/app",
               max_age_hours: float = 24.0) -> gr.Blocks:
    """The page. Nothing heavy happens until Generate is pressed."""
    if world is None:
        world, why = choose_world()
    base = preset(world)
    fields = {f.path: f for f in config_fields(base)}
    fields["resolution"] = FieldInfo("resolution", str, str(base.camera.resolution[-1][1]),
                                     "render size in pixels for the whole run")
    choices = {"prior.name": prior_choices(PRIORS[base.prior.name].world),
               "guidance.method": [(e.label, name) for name, e in METHODS.items()],
               "reward": [(e.label, name) for name, e in rewards_for(PRIORS[base.prior.name].world).items()],
               "resolution": [(f"{r} px", r) for r in RESOLUTIONS.get(world, ["64"])]}
    cache = ModelCache()  # models stay loaded between clicks (and for Compare's SDS pass)

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\nText to 3D Gaussian splat by score distillation, aligned with human preference "
                    "by Preference Score Distillation: a reward model ranks the prior's own denoised guesses, "
                    "and that ranking, never the reward's pixel gradient, steers the scene.")
        gr.Markdown(f"**World: {PRIORS[base.prior.name].label}**, {why}. "
                    f"Renderer: {renderer_status(resolve_device())}.", elem_id="world")
        state = gr.State({})
        controls: Dict[str, gr.components.Component] = {}
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                for path in MAIN:
                    f = fields[path]
                    if path == "prompt":
                        f = FieldInfo("prompt", str, "a cube" if world == "shapes" else "", f.help)
                    controls[path] = widget(f, LABELS.get(path, path), choices.get(path), elem_id=ELEM_IDS.get(path))
                    if path == "prompt" and world == "shapes":
                        gr.Examples(SHAPES_EXAMPLES, inputs=controls[path],
                                    label="The shapes world knows colours and shapes")
                with gr.Accordion("Advanced", open=False):
                    for path in ADVANCED:
                        controls[path] = widget(fields[path], path)
                compare = gr.Checkbox(value=False, label="Compare: also run SDS with the same seed")
                with gr.Row():
                    go = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
            with gr.Column(scale=2):
                status = gr.Markdown("Press Generate.", elem_id="status")
                preview = gr.Image(label="Live render", type="numpy", height=320, elem_id="preview")
                with gr.Row():
                    reward_plot = gr.LinePlot(x="step", y="reward", color="series", label="Reward", height=220)
                    loss_plot = gr.LinePlot(x="step", y="loss", color="term", label="Loss", height=220)
                model = gr.Model3D(label="Splat (.ply)", elem_id="model3d", height=360)
                video = gr.Video(label="Turntable", elem_id="turntable")
                files = gr.File(label="Downloads: .ply, config, metrics", file_count="multiple")
                with gr.Group(visible=True):
                    compare_md = gr.Markdown("")
                    compare_model = gr.Model3D(label="SDS, same seed", height=300)
                    compare_df = gr.Dataframe(label="Reward over orbit views", interactive=False)

        paths = list(controls)

        def run(state, compare_on, *values, progress=gr.Progress()):
            try:
                cfg = make_config(world, runs_root, dict(zip(paths, values)))
            except ValueError as e:
                raise gr.Error(str(e))
            clean_old_runs(Path(runs_root), max_age_hours * 3600.0)
            cancel = state["cancel"] = CancelToken()
            results: Dict[str, Result] = {}
            passes = [("", cfg)]
            if compare_on and cfg.guidance.method != "sds":
                sds_cfg = RunConfig.from_dict(cfg.to_dict())
                sds_cfg.guidance.method = "sds"
                passes.append(("SDS: ", sds_cfg))
            history: List[Dict[str, float]] = []
            for tag, run_cfg in passes:
                history.clear()
                try:
                    prior, reward = cache.for_run(run_cfg)
                    for event in generate(run_cfg, prior, reward, cancel=cancel):
                        if isinstance(event, Result):
                            results[tag] = event
                            continue
                        history.extend(event.history)
                        progress((event.step, event.total), desc=f"{tag}step {event.step}/{event.total}")
                        update = {status: tag + status_line(event)}
                        if event.preview is not None:
                            rplot, lplot = curves(history)
                            k = max(1, 256 // event.preview.shape[1])  # small renders shown blocky, not blurred
                            update.update({preview: event.preview.repeat(k, 0).repeat(k, 1), reward_plot: rplot,
                                           loss_plot: lplot})
                        yield update
                except (ValueError, GenerationError, MissingWeightsError) as e:
                    raise gr.Error(str(e))
                except OSError as e:  # a full disk, a folder that vanished: say what, keep serving
                    raise gr.Error(f"could not write the run's files: {e.strerror or e}")
                if cancel.is_set():
                    break
            main = results[""]
            rplot, lplot = curves(history if len(passes) == 1 else [])
            update = {status: summary(main, "Done"), model: str(main.ply_path), video: str(main.turntable_path),
                      files: result_files(main)}
            if len(passes) == 1:
                update.update({reward_plot: rplot, loss_plot: lplot})
            if "SDS: " in results:
                other = results["SDS: "]
                update.update({compare_md: summary(other, "SDS with the same seed"), compare_model: str(other.ply_path),
                               compare_df: compare_table(main, other, cache.reward(cfg.reward, resolve_device(cfg.device)))})
            yield update

        def stop_run(state):
            if "cancel" in state:
                state["cancel"].set()
            return "Stopping after the current step; what exists so far will be shown."

        go.click(run, inputs=[state, compare, *controls.values()],
                 outputs=[status, preview, reward_plot, loss_plot, model, video, files, compare_md, compare_model,
                          compare_df], api_name="generate", concurrency_limit=1)
        stop.click(stop_run, inputs=state, outputs=status, queue=False, api_name="stop")
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the psd-gs Gradio app.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default: %(default)s)")
    parser.add_argument("--runs", default="runs/app", help="run folders go below this (default: %(default)s)")
    parser.add_argument("--max-age-hours", type=float, default=24.0,
                        help="remove run folders older than this when a new run starts (default: %(default)s)")
    parser.add_argument("--queue-size", type=int, default=8, help="waiting runs before new ones are refused")
    args = parser.parse_args(argv)
    try:
        check_runs_root(args.runs)  # before anything loads: a folder we cannot write would fail every run
    except GenerationError as e:
        raise SystemExit(f"psd-gs: {e}")
    auth = os.environ.get("PSD_GS_AUTH")
    demo = build_demo(runs_root=args.runs, max_age_hours=args.max_age_hours)
    demo.queue(max_size=args.queue_size, default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, allowed_paths=[str(Path(args.runs).resolve())],
        auth=tuple(auth.split(":", 1)) if auth else None)


if __name__ == "__main__":
    main()
