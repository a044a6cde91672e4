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
from typing import Dict, List, Optional, Tuple

import gradio as gr
import pandas as pd

from psd_gs.config import RunConfig, preset
from psd_gs.device import resolve_device
from psd_gs.generate import (CancelToken, GenerationError, Progress, Result, check_runs_root, clean_old_runs,
                             generate)
from psd_gs.priors.base import MissingWeightsError
from psd_gs.render import renderer_status

TITLE = "psd-gs"
METHOD_LABELS = {"PSD (preference score distillation)": "psd", "SDS": "sds", "Reward gradient (baseline)": "reward_grad"}
SHAPES_REWARDS = ["shapes-warm", "shapes-cool"]
SD_REWARDS = ["hpsv2", "pickscore", "aesthetic", "clip"]
SHAPES_EXAMPLES = ["a cube", "a sphere", "a torus", "a red cube", "blue shapes"]


def choose_world() -> Tuple[str, str]:
    """("sd" or "shapes", why): SD needs CUDA and the SD weights in the local cache."""
    forced = os.environ.get("PSD_GS_PRESET")
    if forced in ("sd", "shapes"):
        return forced, f"set by PSD_GS_PRESET={forced}"
    if resolve_device().type != "cuda":
        return "shapes", "no CUDA GPU here, so the offline shapes world runs (closed-form prior, colour reward)"
    from huggingface_hub import try_to_load_from_cache

    from psd_gs.priors.stable_diffusion import DEFAULT_MODEL

    if not isinstance(try_to_load_from_cache(DEFAULT_MODEL, "unet/config.json"), str):
        return "shapes", (f"CUDA is here but {DEFAULT_MODEL} is not in the local cache; fetch it with "
                          "`python -m psd_gs fetch-weights --preset sd`. Running the shapes world meanwhile")
    return "sd", f"CUDA GPU and {DEFAULT_MODEL} found"


def make_config(world: str, runs_root: str, prompt: str, negative: str, method_label: str, reward: str,
                cfg_scale: float, lambda_p: float, neg_lr: float, steps: float, seed: float, resolution: str,
                tau: float, window_end: float, neg_every: float, beta: float, lambda_r: float) -> RunConfig:
    """The page's values as a checked RunConfig; ValueError names the first bad one."""
    if method_label not in METHOD_LABELS:
        raise ValueError(f"unknown method {method_label!r}; choose one of {list(METHOD_LABELS)}")
    if seed is None or float(seed) != int(seed) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed}")
    cfg = preset(world, prompt=prompt or "", steps=int(steps), seed=int(seed), out_dir=runs_root, reward=reward)
    g = cfg.guidance
    g.method, g.negative_prompt, g.cfg_scale, g.lambda_p, g.neg_lr = METHOD_LABELS[method_label], negative or "", \
        float(cfg_scale), float(lambda_p), float(neg_lr)
    g.tau, g.pair_window, g.neg_every, g.beta, g.lambda_r = float(tau), (0.0, float(window_end)), int(neg_every), \
        float(beta), float(lambda_r)
    cfg.camera.resolution = ((0.0, int(resolution)),)
    return cfg.check()


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


def compare_table(a: Result, b: Result) -> pd.DataFrame:
    """Reward per orbit view of the chosen method's scene and SDS's, side by side."""
    from psd_gs.evaluate import eval_cameras, render_views, score
    from psd_gs.rewards.registry import load_reward

    cfg = RunConfig.from_dict(json.loads(a.config_path.read_text()))
    reward = load_reward(cfg.reward)
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
    rewards = SHAPES_REWARDS if world == "shapes" else SD_REWARDS
    g = base.guidance

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\nText to 3D Gaussian splat by score distillation, aligned with human preference "
                    "by Preference Score Distillation: a reward model ranks the prior's own denoised guesses, "
                    "and that ranking, never the reward's pixel gradient, steers the scene.")
        gr.Markdown(f"**World: {'Stable Diffusion 2.1 base' if world == 'sd' else 'shapes (offline)'}**, {why}. "
                    f"Renderer: {renderer_status(resolve_device())}.", elem_id="world")
        state = gr.State({})
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                prompt = gr.Textbox(label="Prompt", value="a cube" if world == "shapes" else "",
                                    placeholder="a cube" if world == "shapes" else "a corgi wearing a crown",
                                    elem_id="prompt")
                if world == "shapes":
                    gr.Examples(SHAPES_EXAMPLES, inputs=prompt, label="The shapes world knows colours and shapes")
                negative = gr.Textbox(label="Negative prompt", value="")
                method = gr.Radio(list(METHOD_LABELS), value=list(METHOD_LABELS)[0], label="Method")
                reward = gr.Dropdown(rewards, value=base.reward, label="Reward model")
                cfg_scale = gr.Slider(1.0, 100.0, value=g.cfg_scale, step=0.5, label="CFG scale")
                lambda_p = gr.Slider(0.0, 10.0, value=g.lambda_p, step=0.1, label="Preference weight")
                neg_lr = gr.Number(value=g.neg_lr, label="Negative-embedding learning rate", minimum=0.0)
                steps = gr.Slider(10, 5000, value=base.steps, step=10, label="Steps")
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                resolution = gr.Dropdown(["32", "64", "128", "256", "512"], label="Resolution",
                                         value=str(base.camera.resolution[-1][1]))
                with gr.Accordion("Advanced", open=False):
                    tau = gr.Number(value=g.tau, label="Reward gap for full preference weight (tau)")
                    window_end = gr.Slider(0.0, 1.0, value=g.pair_window[1], step=0.05,
                                           label="Preference acts until (fraction of the run)")
                    neg_every = gr.Number(value=g.neg_every, precision=0, minimum=1, label="Update negative every")
                    beta = gr.Number(value=g.beta, label="DPO beta")
                    lambda_r = gr.Number(value=g.lambda_r, label="Reward-gradient weight (baseline only)")
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

        inputs = [prompt, negative, method, reward, cfg_scale, lambda_p, neg_lr, steps, seed, resolution, tau,
                  window_end, neg_every, beta, lambda_r]

        def run(state, compare_on, *values, progress=gr.Progress()):
            try:
                cfg = make_config(world, runs_root, *values)
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
                    for event in generate(run_cfg, cancel=cancel):
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
                               compare_df: compare_table(main, other)})
            yield update

        def stop_run(state):
            if "cancel" in state:
                state["cancel"].set()
            return "Stopping after the current step; what exists so far will be shown."

        go.click(run, inputs=[state, compare, *inputs],
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
