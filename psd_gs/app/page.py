"""The page: its settings for the world it serves (``PageWorld``), its sections top to bottom, and
``build_demo``, which lays them out and hands the events to ``psd_gs.app.handlers``.

The page, top to bottom: a one-line header with the world; the prompt with Generate and Stop, the method,
the reward and the examples beside the live render and the two plots (all on one screen at 1400x900);
then the result in tabs (splat, mesh, turntable, comparison, downloads), shown once there is one. Progress
shows only in the status line with its bar: no overlay covers the live render or the plots. The controls
are built from the config's own fields (``psd_gs.config``) and the registries (``psd_gs.registry``).
"""

from __future__ import annotations

import json
from typing import Dict, List, Optional, Tuple

import gradio as gr

from ..config import FieldInfo
from ..device import resolve_device
from ..render import renderer_status
from . import plots, serve, ui
from .handlers import Handlers
from .world import PageWorld, page_world, prior_defaults

TITLE = "psd-gs"
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
REFINE = ["scene.init", "scene.keep"]  # "Refine a splat": the upload and what stays as it is
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


def control_id(path: str) -> str:
    """A config path as the element id of its control: guidance.cfg_scale -> ctl-guidance-cfg_scale."""
    return "ctl-" + path.replace(".", "-")


# ---- the sections, top to bottom --------------------------------------------------------------------


def header(w: PageWorld, warnings: List[str]) -> None:
    """The world, why it runs, the renderer and one line on PSD; warnings; a budget too small for any size."""
    gr.Markdown(f"## {TITLE} · text to 3D Gaussian splat, aligned with human preference\n"
                f"<span class='psd-small'>**{w.prior_label}**: {ui.esc(w.why)}. Renderer: "
                f"{ui.esc(renderer_status(resolve_device()))}. PSD lets a reward model rank the prior's own "
                "denoised guesses; that ranking, never the reward's pixel gradient, steers the scene.</span>",
                elem_id="world")
    for warning in warnings:
        gr.Markdown(f"**Warning:** {ui.esc(warning)}", elem_id="no-login")
    if not w.offered:
        gr.Markdown(f"**No resolution fits this server's memory budget ({w.budget / 2 ** 30:.1f} GB)**: start it "
                    "with a larger --max-memory-gb.", elem_id="no-memory")


def controls_column(w: PageWorld, c: Dict[str, object]) -> None:
    """The prompt, Generate and Stop, the main controls, Compare, then Settings and Advanced (closed)."""
    controls = c["controls"] = {}
    f = w.fields
    controls["prompt"] = widget(f["prompt"], "Prompt", elem_id="prompt", info=None,
                                placeholder="a sphere" if w.shapes else "a corgi wearing a crown")
    with gr.Row():
        c["go"] = gr.Button("Generate", variant="primary", elem_id="generate", min_width=100)
        c["stop"] = gr.Button("Stop", variant="stop", elem_id="stop", min_width=80)
    for path in MAIN[1:]:
        controls[path] = widget(f[path], LABELS[path], w.choices.get(path), info=w.infos.get(path),
                                elem_id=control_id(path))
    c["compare"] = gr.Checkbox(value=False, label="Compare with SDS (same seed, run after)", elem_id="compare")
    with gr.Accordion("Settings", open=False, elem_id="settings"):
        for path in SETTINGS:
            controls[path] = widget(f[path], LABELS[path], w.choices.get(path), elem_id=control_id(path))
    with gr.Accordion("Advanced", open=False, elem_id="advanced"):
        for path in ADVANCED:
            controls[path] = widget(f[path], path, elem_id=control_id(path))
    with gr.Accordion("Refine a splat", open=False, elem_id="refine"):
        gr.Markdown(f"<span class='psd-small'>Drop a 3DGS `.ply` (LGM, TRELLIS, DiffSplat, gsplat, SuperSplat, psd-gs; "
                    f"SH degree 0-3, at most {w.base.scene.max_gaussians} Gaussians) and Refine moves it toward the "
                    "prompt and the reward with the method above, starting from your splat instead of a random "
                    "ball. The result keeps your file's frame and units; the file is kept only in your run's "
                    "folder.</span>")
        controls["scene.init"] = gr.File(label="Your splat (.ply)", file_types=[".ply"], type="filepath",
                                         file_count="single", elem_id=control_id("scene.init"), height=120)
        controls["scene.keep"] = gr.Radio([("Nothing", "none"), ("Its geometry (only colours and opacities change)",
                                            "geometry"), ("Its colours", "appearance")], value="none",
                                          label="Keep as it is", elem_id=control_id("scene.keep"))
    # choosing a prior shows its own preset's settings (the learned prior's CFG 7.5); make_config starts from it
    paths = [p for p in SETTINGS + ADVANCED if p not in ("prior.name", "resolution")]
    controls["prior.name"].change(lambda prior: prior_defaults(w.name, prior, paths), controls["prior.name"],
                                  [controls[p] for p in paths], queue=False, show_progress="hidden",
                                  api_visibility="private")


def live_column(w: PageWorld, c: Dict[str, object]) -> None:
    """The status line, the result sentence, the live render and the two charts."""
    c["status"] = gr.HTML(ui.status_html("Press Generate."), elem_id="status", label="Status")
    c["summary"] = gr.Markdown("", elem_id="summary", label="Result")
    with gr.Row(equal_height=False):
        c["input_view"] = gr.HTML("", label="Your splat", elem_id="input-view", min_width=200, show_label=True,
                                  container=True, padding=True, visible=False)
        c["preview"] = gr.HTML(ui.placeholder_html("The live render appears here", 330), label="Live render",
                               elem_id="preview", min_width=260, show_label=True, container=True, padding=True)
        with gr.Column(min_width=280):
            empty_reward, empty_loss = plots.run_plots([], w.base.steps, plots.window_end_step(w.base))
            c["reward_plot"] = gr.HTML(ui.image_html(empty_reward, "reward chart"), label="Reward",
                                       elem_id="reward-plot", container=True, padding=True)
            c["loss_plot"] = gr.HTML(ui.image_html(empty_loss, "loss chart"), label="Loss", elem_id="loss-plot",
                                     container=True, padding=True)


def viewer(label: str, elem_id: str, height: int) -> gr.Model3D:
    """A 3D viewer on the page's own background."""
    return gr.Model3D(label=label, elem_id=elem_id, height=height, clear_color=PAGE_BACKGROUND,
                      elem_classes="psd-viewer")


def result_tabs(w: PageWorld, c: Dict[str, object]) -> None:
    """Splat, mesh, turntable, comparison and downloads, hidden until there is a result."""
    with gr.Tabs(visible=False, elem_id="results") as c["results"]:
        with gr.Tab("Splat", id="splat"):
            c["model"] = viewer("Splat (.ply): drag to turn", "model3d", 360)
        with gr.Tab("Mesh", id="mesh") as mesh_tab:
            c["mesh"] = viewer("Mesh (.glb, vertex colours): drag to turn", "mesh3d", 360)
            kept = gr.State(None)
        # Gradio 6.31's mesh viewer (Babylon.js) draws nothing for a file it was given while its tab was
        # hidden (the splat viewer does): on the tab's select it is cleared and given its file again
        mesh_tab.select(lambda path: (None, path), c["mesh"], [c["mesh"], kept], queue=False,
                        show_progress="hidden", api_visibility="private").then(
            lambda path: path, kept, c["mesh"], queue=False, show_progress="hidden", api_visibility="private")
        with gr.Tab("Turntable", id="turntable"):
            c["video"] = gr.Video(label="Turntable", elem_id="turntable", height=w.base.turntable_resolution + 40,
                                  width=w.base.turntable_resolution, autoplay=True, loop=True, interactive=False)
        with gr.Tab("Compare with SDS", id="compare"):
            c["compare_md"] = gr.Markdown("Tick Compare before Generate to run SDS with the same seed.",
                                          label="Comparison", elem_id="compare-words")
            with gr.Row():
                c["model_main"] = viewer("This method", "compare-main", 300)
                c["model_sds"] = viewer("SDS, same seed", "compare-sds", 300)
            c["compare_plot"] = gr.HTML("", label="Reward per orbit view", elem_id="compare-plot")
        with gr.Tab("Downloads", id="downloads"):
            c["files"] = gr.File(label="splat .ply, mesh .glb, config, metrics, logs", file_count="multiple",
                                 interactive=False)


def below(w: PageWorld, c: Dict[str, object]) -> None:
    """The examples, the user's recent runs and (shapes world) the objects the world knows."""
    controls = c["controls"]
    gr.Examples(SHAPES_EXAMPLES if w.shapes else SD_EXAMPLES,
                inputs=[controls["prompt"], controls["guidance.method"], controls["reward"], controls["seed"],
                        c["compare"]],
                label="Examples: the same prompt by PSD and by SDS (Compare), seeds where they differ")
    with gr.Accordion("Your recent runs (select one to show it again)", open=True):
        c["history"] = gr.Dataframe(headers=ui.HISTORY_COLUMNS, value=[], interactive=False, elem_id="history",
                                    wrap=True, label="History", show_label=False)
    if w.shapes:
        with gr.Accordion("What the shapes world knows: these twelve objects (prompts name them by colour "
                          "and shape, e.g. 'a cube', 'a red cube', 'blue shapes')", open=False):
            gr.Gallery(value=ui.world_pictures(), columns=6, height=260, show_label=False,
                       allow_preview=False, elem_id="world-objects")


def build_demo(world: Optional[str] = None, why: str = "", runs_root: str = "runs/app",
               max_age_hours: float = 24.0, budget: Optional[int] = None, warnings: List[str] = (),
               max_cached_files: int = serve.MAX_CACHE_ENTRIES) -> gr.Blocks:
    """The page. Nothing heavy happens until Generate is pressed.

    budget: memory (bytes) a run may bring the process to (``psd_gs.run.memory``); default: the device's share.
    warnings: shown at the top of the page (a server reachable without a login).
    """
    w = page_world(world, why, runs_root, max_age_hours, budget, max_cached_files)
    c: Dict[str, object] = {}  # the components, by name
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        header(w, warnings)
        c["owner_token"] = gr.BrowserState("", storage_key="psd-gs-owner")
        c["state"] = gr.State({})
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=300):
                controls_column(w, c)
            with gr.Column(scale=7, min_width=300):
                live_column(w, c)
        result_tabs(w, c)
        below(w, c)
        Handlers(w, c).wire(demo)
    return demo
