"""psd-gs Gradio front end: type a prompt, watch the splat grow, stop, compare with SDS, download.

Thin on purpose: it lays out the page and calls ``psd_gs.run.loop`` in-process with models it keeps
loaded (``psd_gs.run.models.ModelCache``), turning Progress events into page updates. What it shows is
computed in ``psd_gs.app.ui``. The controls are built from the config's own fields (``psd_gs.config``) and
the registries (``psd_gs.registry``). One run at a time (Gradio's queue, bounded); each run writes only
in its own folder below the runs root, recorded with its owner, and a user's history lists only their
own runs; old run folders are removed after ``--max-age-hours``.

The page, top to bottom: a one-line header with the world; the prompt with Generate and Stop, the method,
the reward and the examples beside the live render and the two plots (all on one screen at 1400x900);
then the result in tabs (splat, mesh, turntable, comparison, downloads), shown once there is one. Progress
shows only in the status line with its bar: no overlay covers the live render or the plots.

    python app.py [--host 127.0.0.1] [--port 7860] [--runs runs/app] [--max-age-hours 24]

Environment: PSD_GS_AUTH="user:password" asks for a login; PSD_GS_PRESET=shapes|sd forces the world.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import gradio as gr

from psd_gs.config import PRESETS, FieldInfo, PriorConfig, RunConfig, apply_overrides, config_fields, preset
from psd_gs.device import resolve_device
from psd_gs.run.export import preview_image
from psd_gs.run.fetch import prior_files, status
from psd_gs.run.loop import CancelToken, GenerationError, generate
from psd_gs.app.live import LiveRun
from psd_gs.run.memory import check_fits, default_budget, fitting_resolutions
from psd_gs.run.models import ModelCache
from psd_gs.priors.base import MissingWeightsError
from psd_gs.registry import METHODS, PRIORS, REWARDS, rewards_for
from psd_gs.render import renderer_status
from psd_gs.app import plots, serve, ui
from psd_gs.run.folders import RunFolderError, check_runs_root, clean_old_runs, recover_runs
from psd_gs.run.validate import validate

TITLE = "psd-gs"
SDS_TAG = "SDS pass (for Compare): "
POLL_S = 0.4  # the page's handler takes the run's events this often; a cancel is answered within it
RESOLUTIONS = {"shapes": ["32", "64", "128"], "sd": ["128", "256", "512"]}
# Example rows (prompt, method, reward, seed, compare): the same prompt by PSD and by SDS side by side,
# seeds where the two form different objects in this world (bench/RESULTS.md).
SHAPES_EXAMPLES = [["a sphere", "psd", "shapes-warm", 1, True], ["a torus", "psd", "shapes-warm", 3, True],
                   ["a cube", "psd", "shapes-warm", 3, True], ["a red cube", "sds", "shapes-warm", 0, False]]
SD_EXAMPLES = [["a corgi wearing a crown", "psd", "hpsv2", 0, True], ["a ceramic teapot", "psd", "hpsv2", 0, False]]

# The page's controls, each one config path (psd_gs.config): the main panel, then the Advanced panel.
# Widgets, their help and ranges come from the fields themselves; "resolution" is the one pseudo-path
# (one size for the whole run, camera.resolution = [[0, px]]).
MAIN = ["prompt", "guidance.method", "reward", "seed"]
SETTINGS = ["guidance.negative_prompt", "prior.name", "guidance.cfg_scale", "guidance.lambda_p", "guidance.neg_lr",
            "steps", "resolution"]
ADVANCED = ["guidance.n_candidates", "guidance.pair_t_min", "guidance.tau", "guidance.pair_window",
            "guidance.neg_every", "guidance.beta", "guidance.gamma", "guidance.lambda_r", "guidance.t_min",
            "guidance.t_max_start", "guidance.t_max_end"]
LABELS = {"prompt": "Prompt", "guidance.negative_prompt": "Negative prompt", "prior.name": "Prior",
          "guidance.method": "Method", "reward": "Reward model", "guidance.cfg_scale": "CFG scale",
          "guidance.lambda_p": "Preference weight", "guidance.neg_lr": "Negative-embedding learning rate",
          "steps": "Steps", "seed": "Seed", "resolution": "Resolution"}
PAGE_BACKGROUND = (0.0, 0.0, 0.0, 0.0)  # the 3D viewers clear to transparent: the page shows through
CSS = """
#preview img { image-rendering: pixelated; }
/* gr.HTML takes no min_width of its own: without this the live render shrinks beside the charts on a phone */
#preview { min-width: min(260px, 100%) !important; flex: 1 1 0%; }
#no-login { border: 2px solid #b91c1c; border-radius: 6px; padding: 4px 10px; }
.psd-small { font-size: 13px; opacity: 0.85; }
/* gsplat's viewer clears to transparent and paints its canvas' CSS background black: the page's instead */
.psd-viewer canvas { background: var(--block-background-fill) !important; }
"""


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


def make_config(world: str, runs_root: str, values: Mapping[str, object],
                offered: Optional[List[int]] = None) -> RunConfig:
    """The page's values (config path -> value) on the world's preset, validated; ValueError names the first
    bad one. ``offered``: the resolutions the page offers (px); another one is refused, naming them."""
    cfg = preset(world, out_dir=runs_root)
    values = dict(values)
    if "resolution" in values:
        size = values.pop("resolution")
        if offered is not None and str(size).strip() not in [str(r) for r in offered]:
            sizes = ", ".join(f"{r} px" for r in offered) or "none (the memory budget is too small)"
            raise ValueError(f"resolution {size}: this page offers {sizes}; choose one of those")
        values["camera.resolution"] = [[0.0, size]]
    if values.get("prompt") is None:
        values["prompt"] = ""
    return validate(apply_overrides(cfg, values))


def setting_of(error: ValueError, paths: List[str]) -> Optional[str]:
    """The control a validation message is about: the first of ``paths`` it names (its message starts
    with the setting, e.g. "guidance.tau = 0: must be > 0"), "prompt" for the prompt's own messages."""
    text = str(error)
    if text.startswith(("prompt", "the shapes world does not know", "no object in the shapes world")):
        return "prompt"
    named = [p for p in paths if p != "prompt" and (p in text or p.split(".")[-1] + " " in text[:40])]
    if "camera.resolution" in text or text.startswith("resolution"):
        named.insert(0, "resolution")
    return named[0] if named else None


def widget(f: FieldInfo, label: str, choices: Optional[List[Tuple[str, str]]] = None,
           **kwargs) -> gr.components.Component:
    """A control for config field ``f``: its value, help as the info line, its range."""
    common = dict(label=label, info=kwargs.pop("info", f.help), **kwargs)
    if choices is not None:  # other values reach the validator, which names what is allowed
        return gr.Dropdown(choices=choices, value=f.value, allow_custom_value=True, **common)
    if f.type is bool:
        return gr.Checkbox(value=f.value, **common)
    if f.type in (int, float):
        low = f.minimum if f.minimum is not None else f.above
        return gr.Number(value=f.value, precision=0 if f.type is int else None, minimum=low, maximum=f.maximum,
                         **common)
    if f.type is str:
        return gr.Textbox(value=f.value, **common)
    return gr.Textbox(value=json.dumps(f.value), **common)  # tuples and lists as JSON, parsed back by the config


def named(fn, names: List[str]):
    """``fn(*values, request=None)`` with a signature naming its parameters, so the API documents them by
    name (Gradio reads the signature; ``request`` stays a gr.Request it fills in)."""
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
    if "request" in inspect.signature(fn).parameters:
        params.append(inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=gr.Request))
    fn.__signature__ = inspect.Signature(params)
    return fn


def api_name(path: str) -> str:
    """A config path as an API parameter name: guidance.cfg_scale -> guidance_cfg_scale."""
    return path.replace(".", "_")


def control_id(path: str) -> str:
    """A config path as the element id of its control: guidance.cfg_scale -> ctl-guidance-cfg_scale."""
    return "ctl-" + path.replace(".", "-")


def build_demo(world: Optional[str] = None, why: str = "", runs_root: str = "runs/app",
               max_age_hours: float = 24.0, budget: Optional[int] = None, warnings: List[str] = (),
               max_cached_files: int = serve.MAX_CACHE_ENTRIES) -> gr.Blocks:
    """The page. Nothing heavy happens until Generate is pressed.

    budget: memory (bytes) a run may bring the process to (``psd_gs.run.memory``); default: the device's share.
    warnings: shown at the top of the page (a server reachable without a login).
    """
    if world is None:
        world, why = choose_world()
    base = preset(world)
    device = resolve_device(base.device)
    budget = budget or default_budget(device)
    sizes = [int(r) for r in RESOLUTIONS.get(world, ["64"])]
    offered = fitting_resolutions(base, budget, sizes)  # every size the page offers fits in memory
    prior_entry = PRIORS[base.prior.name]
    fields = {f.path: f for f in config_fields(base)}
    fields["resolution"] = FieldInfo("resolution", str, str(base.camera.resolution[-1][1]),
                                     "render size in pixels for the whole run (what this world and device can run)")
    fields["prompt"] = FieldInfo("prompt", str, "a sphere" if world == "shapes" else "", fields["prompt"].help)
    world_rewards = rewards_for(prior_entry.world)
    choices = {"prior.name": prior_choices(prior_entry.world),
               "guidance.method": [(e.label, name) for name, e in METHODS.items()],
               "reward": [(e.label, name) for name, e in world_rewards.items()],
               "resolution": [(f"{r} px", str(r)) for r in offered]}
    if base.camera.resolution[-1][1] not in offered and offered:  # the preset's size when it fits, else the largest
        fields["resolution"] = FieldInfo("resolution", str, str(offered[-1]), fields["resolution"].help)
    infos = {"guidance.method": METHODS[base.guidance.method].help, "reward": REWARDS[base.reward].help}
    cache = ModelCache()  # models stay loaded between clicks (and for Compare's SDS pass)
    runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="psd-gs-run")  # every run, one after another
    root = Path(runs_root)

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"## {TITLE} · text to 3D Gaussian splat, aligned with human preference\n"
                    f"<span class='psd-small'>**{prior_entry.label}**: {ui.esc(why)}. Renderer: "
                    f"{ui.esc(renderer_status(resolve_device()))}. PSD lets a reward model rank the prior's own "
                    "denoised guesses; that ranking, never the reward's pixel gradient, steers the scene.</span>",
                    elem_id="world")
        for warning in warnings:
            gr.Markdown(f"**Warning:** {ui.esc(warning)}", elem_id="no-login")
        if not offered:
            gr.Markdown(f"**No resolution fits this server's memory budget ({budget / 2 ** 30:.1f} GB)**: start it "
                        "with a larger --max-memory-gb.", elem_id="no-memory")
        owner_token = gr.BrowserState("", storage_key="psd-gs-owner")
        state = gr.State({})
        controls: Dict[str, gr.components.Component] = {}
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=300):
                controls["prompt"] = widget(fields["prompt"], "Prompt", elem_id="prompt", info=None,
                                            placeholder="a sphere" if world == "shapes" else "a corgi wearing a crown")
                with gr.Row():
                    go = gr.Button("Generate", variant="primary", elem_id="generate", min_width=100)
                    stop = gr.Button("Stop", variant="stop", elem_id="stop", min_width=80)
                for path in MAIN[1:]:
                    controls[path] = widget(fields[path], LABELS[path], choices.get(path), info=infos.get(path),
                                            elem_id=control_id(path))
                compare = gr.Checkbox(value=False, label="Compare with SDS (same seed, run after)", elem_id="compare")
                with gr.Accordion("Settings", open=False, elem_id="settings"):
                    for path in SETTINGS:
                        controls[path] = widget(fields[path], LABELS[path], choices.get(path), elem_id=control_id(path))
                with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                    for path in ADVANCED:
                        controls[path] = widget(fields[path], path, elem_id=control_id(path))
            with gr.Column(scale=7, min_width=300):
                status_box = gr.HTML(ui.status_html("Press Generate."), elem_id="status", label="Status")
                summary = gr.Markdown("", elem_id="summary", label="Result")
                with gr.Row(equal_height=False):
                    preview = gr.HTML(ui.placeholder_html("The live render appears here", 330), label="Live render",
                                      elem_id="preview", min_width=260, show_label=True, container=True,
                                      padding=True)
                    with gr.Column(min_width=280):
                        empty_reward, empty_loss = plots.run_plots([], base.steps, plots.window_end_step(base))
                        reward_plot = gr.HTML(ui.image_html(empty_reward, "reward chart"), label="Reward",
                                              elem_id="reward-plot", container=True, padding=True)
                        loss_plot = gr.HTML(ui.image_html(empty_loss, "loss chart"), label="Loss", elem_id="loss-plot",
                                            container=True, padding=True)
        with gr.Tabs(visible=False, elem_id="results") as results:
            with gr.Tab("Splat", id="splat"):
                model = gr.Model3D(label="Splat (.ply): drag to turn", elem_id="model3d", height=360,
                                   clear_color=PAGE_BACKGROUND, elem_classes="psd-viewer")
            with gr.Tab("Mesh", id="mesh") as mesh_tab:
                mesh_view = gr.Model3D(label="Mesh (.glb, vertex colours): drag to turn", elem_id="mesh3d",
                                       height=360, clear_color=PAGE_BACKGROUND, elem_classes="psd-viewer")
                mesh_kept = gr.State(None)
            # Gradio 6.31's mesh viewer (Babylon.js) draws nothing for a file it was given while its tab was
            # hidden (the splat viewer does): on the tab's select it is cleared and given its file again
            mesh_tab.select(lambda path: (None, path), mesh_view, [mesh_view, mesh_kept], queue=False,
                            show_progress="hidden", api_visibility="private").then(
                lambda path: path, mesh_kept, mesh_view, queue=False, show_progress="hidden", api_visibility="private")
            with gr.Tab("Turntable", id="turntable"):
                video = gr.Video(label="Turntable", elem_id="turntable", height=base.turntable_resolution + 40,
                                 width=base.turntable_resolution, autoplay=True, loop=True, interactive=False)
            with gr.Tab("Compare with SDS", id="compare"):
                compare_md = gr.Markdown("Tick Compare before Generate to run SDS with the same seed.",
                                         label="Comparison", elem_id="compare-words")
                with gr.Row():
                    model_main = gr.Model3D(label="This method", height=300, clear_color=PAGE_BACKGROUND,
                                            elem_classes="psd-viewer", elem_id="compare-main")
                    model_sds = gr.Model3D(label="SDS, same seed", height=300, clear_color=PAGE_BACKGROUND,
                                           elem_classes="psd-viewer", elem_id="compare-sds")
                compare_plot = gr.HTML("", label="Reward per orbit view", elem_id="compare-plot")
            with gr.Tab("Downloads", id="downloads"):
                files = gr.File(label="splat .ply, mesh .glb, config, metrics, logs", file_count="multiple",
                                interactive=False)
        examples = SHAPES_EXAMPLES if world == "shapes" else SD_EXAMPLES
        gr.Examples(examples, inputs=[controls["prompt"], controls["guidance.method"], controls["reward"],
                                      controls["seed"], compare],
                    label="Examples: the same prompt by PSD and by SDS (Compare), seeds where they differ")
        with gr.Accordion("Your recent runs (select one to show it again)", open=True):
            history = gr.Dataframe(headers=ui.HISTORY_COLUMNS, value=[], interactive=False, elem_id="history",
                                   wrap=True, label="History", show_label=False)
        if world == "shapes":
            with gr.Accordion("What the shapes world knows: these twelve objects (prompts name them by colour "
                              "and shape, e.g. 'a cube', 'a red cube', 'blue shapes')", open=False):
                gr.Gallery(value=ui.world_pictures(), columns=6, height=260, show_label=False,
                           allow_preview=False, elem_id="world-objects")

        paths = list(controls)
        run_outputs = [status_box, preview, reward_plot, loss_plot, summary, results, model, mesh_view, video, files,
                       compare_md, model_main, model_sds, compare_plot, history, go]

        def owner_of(token: str, request: gr.Request) -> str:
            return ui.owner_id(f"user:{request.username}" if request and request.username else f"browser:{token}")

        def check(state, token, compare_on, *values):
            """The validator: a message next to the control a bad value concerns; the run does not start,
            and what the user typed and the last result stay as they are. A run that would not fit in memory
            is refused here, in milliseconds, naming the sizes that would."""
            verdicts = [gr.validate(True, "") for _ in range(3 + len(values))]
            try:
                cfg = make_config(world, runs_root, dict(zip(paths, values)), offered)
                check_fits(cfg, budget, with_weights=not cache.has(cfg), resolutions=sizes)
            except ValueError as err:
                where = setting_of(err, paths)
                # shown as text by Gradio (not HTML): a prompt with markup reads as typed
                verdicts[3 + paths.index(where if where in paths else "prompt")] = gr.validate(False, str(err))
            return verdicts

        def show(result_cfg: RunConfig, metrics: Dict[str, object], folder: Path) -> Dict:
            """The page updates that show a finished run (its files served from copies, never the run folder)."""
            rplot, lplot = plots.run_plots(ui.run_logs(folder), result_cfg.steps, plots.window_end_step(result_cfg))
            ply, glb, video_file, *listed = serve.serve_copies(
                [folder / n for n in ("scene.ply", "mesh.glb", "turntable.mp4", "config.json", "metrics.json",
                                      "logs.json")])
            return {summary: ui.result_sentence(result_cfg, metrics), results: gr.Tabs(visible=True),
                    model: ply, mesh_view: glb, files: [f for f in [ply, glb, *listed] if f], video: video_file,
                    reward_plot: ui.image_html(rplot, "reward chart"), loss_plot: ui.image_html(lplot, "loss chart")}

        def tidy() -> None:
            """Old run folders, and the files served from copies, go after ``max_age_hours``."""
            clean_old_runs(root, max_age_hours * 3600.0)
            serve.prune(serve.SERVE_DIR, max_age_hours * 3600.0, max_cached_files)
            serve.prune(serve.gradio_cache(), max_age_hours * 3600.0, max_cached_files)

        def passes_of(cfg: RunConfig, compare_on: bool) -> List[Tuple[str, RunConfig]]:
            """(tag, config) of each pass: the run, then SDS with the same seed when Compare is on."""
            passes = [("", cfg)]
            if compare_on and cfg.guidance.method != "sds":
                sds_cfg = RunConfig.from_dict(cfg.to_dict())
                sds_cfg.guidance.method = "sds"
                passes.append((SDS_TAG, sds_cfg))
            return passes

        def work(passes: List[Tuple[str, RunConfig]], cancel: CancelToken, owner: str):
            """The run's own thread (``LiveRun``): per pass, the models (loaded once, kept), then generate()'s
            events, each as (tag, event, the prior's status line); a string while models load."""
            for tag, run_cfg in passes:
                if not cache.has(run_cfg):
                    yield f"{tag}Loading the models (kept for later runs)..."
                prior, reward = cache.for_run(run_cfg)
                if reward is None:  # the SD world's SDS: still measure the reward the page shows
                    reward = cache.reward(run_cfg.reward, resolve_device(run_cfg.device))
                for event in generate(run_cfg, prior, reward, cancel=cancel, owner=owner):
                    yield tag, event, prior.status()
                if cancel.is_set():
                    return

        def run(state, token, compare_on, *values, request: gr.Request = None):
            owner = owner_of(token, request)
            cfg = make_config(world, runs_root, dict(zip(paths, values)), offered)  # checked by the validator
            tidy()
            cancel = state["cancel"] = CancelToken()
            yield {go: gr.update(interactive=False), results: gr.Tabs(visible=False), summary: "",
                   status_box: ui.status_html("Starting..."),
                   preview: ui.placeholder_html("The live render appears after the first steps", 330)}
            passes = passes_of(cfg, compare_on)
            live = LiveRun(lambda: work(passes, cancel, owner), runner)
            page = ui.LivePage(cancel, passes)
            shown = {"status": status_box, "preview": preview, "reward_plot": reward_plot, "loss_plot": loss_plot}
            try:
                while not live.ended:  # one short poll per next(): a cancelled request is answered within it
                    events, _ = live.poll(POLL_S)
                    update = {shown[name]: value for name, value in page.absorb(events).items()}
                    yield update or {status_box: gr.skip()}  # nothing new: still hand control back
            except GeneratorExit:  # the request was cancelled (a client's cancel, a closed page): the run's own
                cancel.set()  # thread ends its step and writes what exists (scene, metrics, turntable, mesh)
                raise
            if live.error is not None:
                err = live.error
                if not isinstance(err, (ValueError, GenerationError, MissingWeightsError, RunFolderError, OSError)):
                    raise err
                text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
                text = serve.public_message(text, [root])  # no server paths for the user
                gr.Warning(ui.esc(text))
                yield {status_box: ui.status_html(f"Error: {text}", error=True), go: gr.update(interactive=True)}
                return
            results_by_tag = page.results
            if "" not in results_by_tag:  # stopped while the models loaded: nothing was made
                yield {status_box: ui.status_html("Stopped before the first step: nothing was made."),
                       go: gr.update(interactive=True)}
                return
            main = results_by_tag[""]
            update = show(cfg, main.metrics, main.out_dir)
            if len(results_by_tag) > 1:  # the live render shows the SDS pass now: show this method's object again
                update[preview] = ui.image_html(preview_image(main.scene, cfg, cfg.camera.resolution[-1][1]),
                                                "live render", 320)
            update[status_box] = ui.status_html("Done." if not main.cancelled else "Stopped: this is what existed.")
            if SDS_TAG in results_by_tag:
                other = results_by_tag[SDS_TAG]
                chart = ui.compare_plot(cfg.guidance.method, main.metrics, other.metrics)
                main_ply, sds_ply = serve.serve_copies([main.ply_path, other.ply_path])
                update.update({compare_md: ui.compare_words(cfg.guidance.method, main.metrics, other.metrics),
                               model_main: main_ply, model_sds: sds_ply,
                               compare_plot: ui.image_html(chart, "reward per view", 640) if chart is not None else "",
                               summary: update[summary] + "  \n" + ui.result_sentence(passes[1][1], other.metrics,
                                                                                      "SDS, same seed")})
            update[history] = [r.row() for r in ui.past_runs(root, owner)]
            update[go] = gr.update(interactive=True)
            yield update

        def stop_run(state):
            if "cancel" in state:
                state["cancel"].set()
            return ui.status_html("Stopping after the current step; what exists so far will be shown.")

        def init(token, request: gr.Request = None):
            token = token or uuid.uuid4().hex
            return token, [r.row() for r in ui.past_runs(root, owner_of(token, request))]

        def pick(token, evt: gr.SelectData, request: gr.Request = None):
            runs = ui.past_runs(root, owner_of(token, request))
            row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
            if not 0 <= row < len(runs):
                return {}
            past = runs[row]
            update = show(past.cfg, past.metrics, past.folder)
            update[status_box] = ui.status_html(f"Showing an earlier run: {past.cfg.prompt}")
            return update

        inputs = [state, owner_token, compare, *controls.values()]
        names = ["state", "owner_token", "compare"] + [api_name(p) for p in paths]
        # progress in one place: Gradio's own indicator (queue position while waiting) on the status line only
        go.click(named(run, names), inputs=inputs, outputs=run_outputs, api_name="generate", concurrency_limit=1,
                 validator=named(check, names), show_progress="minimal", show_progress_on=[status_box])
        stop.click(stop_run, inputs=state, outputs=status_box, queue=False, api_name="stop", show_progress="hidden")
        demo.load(init, inputs=owner_token, outputs=[owner_token, history], show_progress="hidden")
        # the help under Method and Reward follows the choice
        controls["guidance.method"].change(lambda m: gr.update(info=METHODS[m].help if m in METHODS else ""),
                                           controls["guidance.method"], controls["guidance.method"],
                                           show_progress="hidden", api_visibility="private")
        controls["reward"].change(lambda r: gr.update(info=REWARDS[r].help if r in REWARDS else ""),
                                  controls["reward"], controls["reward"], show_progress="hidden",
                                  api_visibility="private")
        history.select(pick, inputs=owner_token, outputs=run_outputs, show_progress="hidden")
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the psd-gs Gradio app.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default: %(default)s)")
    parser.add_argument("--runs", default="runs/app", help="run folders go below this (default: %(default)s)")
    parser.add_argument("--max-age-hours", type=float, default=24.0,
                        help="remove run folders and served files older than this (default: %(default)s)")
    parser.add_argument("--queue-size", type=int, default=8, help="waiting runs before new ones are refused "
                                                                   "(default: %(default)s)")
    parser.add_argument("--max-cached-files", type=int, default=serve.MAX_CACHE_ENTRIES,
                        help="files kept for downloads at most, the oldest removed first (default: %(default)s)")
    parser.add_argument("--max-memory-gb", type=float, default=None,
                        help="memory a run may bring the server to; the page offers and accepts only runs that fit "
                             "(default: 60%% of RAM on a CPU, 90%% of the GPU's free memory)")
    args = parser.parse_args(argv)
    try:
        auth = serve.parse_auth(os.environ.get("PSD_GS_AUTH"))
        root = check_runs_root(args.runs)  # before anything loads: a folder we cannot write would fail every run
    except (ValueError, RunFolderError) as e:
        raise SystemExit(f"psd-gs: {e}")
    recover_runs(root)  # runs a killed server left half-made, and cut-off writes
    warnings = serve.startup_warnings(args.host, auth)
    for warning in warnings:
        print(f"WARNING: {warning}", file=sys.stderr, flush=True)
    budget = int(args.max_memory_gb * 2 ** 30) if args.max_memory_gb else None
    demo = build_demo(runs_root=args.runs, max_age_hours=args.max_age_hours, budget=budget, warnings=warnings,
                      max_cached_files=args.max_cached_files)
    demo.queue(max_size=args.queue_size, default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, auth=serve.slow_auth(*auth) if auth else None, css=CSS,
        max_file_size=serve.MAX_UPLOAD)


if __name__ == "__main__":
    main()
