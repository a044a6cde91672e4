"""What the page does when used: the validator, a run (in its own thread, ``psd_gs.app.live``), Stop, the
page load and the history, wired to the components ``psd_gs.app.page`` laid out.

One run at a time (Gradio's queue, bounded, and one run thread per server); each run writes only in its
own folder below the runs root, recorded with its owner, and a user's history lists only their own runs;
old run folders are removed after ``max_age_hours``. The API names its parameters after the config paths.
"""

from __future__ import annotations

import inspect
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Tuple

import gradio as gr

from ..config import RunConfig
from ..device import resolve_device
from ..priors.base import MissingWeightsError
from ..registry import METHODS, REWARDS
from ..run.export import preview_image
from ..run.folders import RunFolderError, clean_old_runs
from ..run.loop import CancelToken, GenerationError, generate
from ..run.memory import check_fits
from ..run.refine import SCHEDULE, load_input, place
from ..run.models import ModelCache
from . import plots, serve, ui
from .live import LiveRun
from .world import PageWorld, api_name, make_config, prior_defaults, setting_of

SDS_TAG = "SDS pass (for Compare): "
POLL_S = 0.4  # the page's handler takes the run's events this often; a cancel is answered within it
EXPECTED = (ValueError, GenerationError, MissingWeightsError, RunFolderError, OSError)  # said on the page


def named(method, names: List[str]):
    """``method(*values, request=None)`` as a function whose signature names its parameters, so the API
    documents them by name (Gradio reads the signature; ``request`` stays a gr.Request it fills in). A
    generator stays a generator function (Gradio streams those)."""
    if inspect.isgeneratorfunction(method):
        def fn(*args, **kwargs):
            yield from method(*args, **kwargs)
    else:
        def fn(*args, **kwargs):
            return method(*args, **kwargs)
    fn.__name__, fn.__doc__ = method.__name__, method.__doc__
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
    if "request" in inspect.signature(method).parameters:
        params.append(inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=gr.Request))
    fn.__signature__ = inspect.Signature(params)
    return fn


class Handlers:
    """The page's events for the world ``w`` and the components ``c`` (by name, as the page laid them out).
    Models stay loaded between clicks (``ModelCache``: a second Generate and Compare's SDS pass load nothing)."""

    def __init__(self, w: PageWorld, c: Dict[str, object]):
        self.w, self.c = w, c
        self.paths = list(c["controls"])
        self.cache = ModelCache()
        self.runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="psd-gs-run")  # runs, one after another
        self.outputs = [c[k] for k in ("status", "preview", "reward_plot", "loss_plot", "summary", "results", "model",
                                       "mesh", "video", "files", "compare_md", "model_main", "model_sds",
                                       "compare_plot", "history", "go", "input_view")] + [c["controls"]["scene.init"]]
        self.refine_paths = [p for p in SCHEDULE if p in self.paths]  # the refinement's settings on the page

    def wire(self, demo: gr.Blocks) -> None:
        """Generate (with its validator), Stop, the page load, the help under Method and Reward, the history."""
        c = self.c
        inputs = [c["state"], c["owner_token"], c["compare"], *c["controls"].values()]
        names = ["state", "owner_token", "compare"] + [api_name(p) for p in self.paths]
        # progress in one place: Gradio's own indicator (queue position while waiting) on the status line only
        c["go"].click(named(self.run, names), inputs=inputs, outputs=self.outputs, api_name="generate",
                      concurrency_limit=1, validator=named(self.check, names), show_progress="minimal",
                      show_progress_on=[c["status"]])
        c["stop"].click(self.stop, inputs=c["state"], outputs=c["status"], queue=False, api_name="stop",
                        show_progress="hidden")
        demo.load(self.init, inputs=c["owner_token"], outputs=[c["owner_token"], c["history"]], show_progress="hidden")
        c["history"].select(self.pick, inputs=c["owner_token"], outputs=self.outputs, show_progress="hidden")
        upload, prior = c["controls"]["scene.init"], c["controls"]["prior.name"]
        refine_outputs = [upload, c["input_view"], c["go"], *[c["controls"][p] for p in self.refine_paths]]
        upload.upload(self.uploaded, [upload, prior], refine_outputs, api_visibility="private")
        upload.clear(self.cleared, prior, refine_outputs, queue=False, api_visibility="private")
        for path, table in (("guidance.method", METHODS), ("reward", REWARDS)):  # the help follows the choice
            c["controls"][path].change(lambda v, table=table: gr.update(info=table[v].help if v in table else ""),
                                       c["controls"][path], c["controls"][path], show_progress="hidden",
                                       api_visibility="private")

    # ---- requests ------------------------------------------------------------------------------

    def owner_of(self, token: str, request: gr.Request) -> str:
        return ui.owner_id(f"user:{request.username}" if request and request.username else f"browser:{token}")

    def config(self, values) -> RunConfig:
        """The page's values (in the controls' order) as a checked RunConfig; ValueError names the first bad one."""
        return make_config(self.w.name, self.w.runs_root, dict(zip(self.paths, values)), self.w.offered)

    def check(self, state, token, compare_on, *values):
        """The validator: a message next to the control a bad value concerns; the run does not start, and
        what the user typed and the last result stay as they are. A run that would not fit in memory is
        refused here, in milliseconds, naming the sizes that would."""
        verdicts = [gr.validate(True, "") for _ in range(3 + len(values))]
        try:
            cfg = self.config(values)
            check_fits(cfg, self.w.budget, with_weights=not self.cache.has(cfg), resolutions=self.w.sizes)
        except ValueError as err:
            where = setting_of(err, self.paths)
            # shown as text by Gradio (not HTML): a prompt with markup reads as typed
            verdicts[3 + self.paths.index(where if where in self.paths else "prompt")] = gr.validate(
                False, self.public(str(err), values))
        return verdicts

    def public(self, text: str, values) -> str:
        """``text`` without server paths: the runs root, and the folder Gradio keeps an upload in."""
        upload = dict(zip(self.paths, values)).get("scene.init")
        return serve.public_message(text, [self.w.root] + ([Path(upload).parent] if upload else []))

    # ---- Refine a splat ----------------------------------------------------------------------------

    def uploaded(self, path, prior):
        """A .ply dropped on "Refine a splat": checked as the run will check it (``refine.load_input``, the frame),
        shown beside the live render, Generate becomes Refine and the refinement's settings fill the controls.
        A file the page cannot refine is deleted at once, and the message says why."""
        c, base = self.c, self.w.base
        try:
            scene = load_input(path, base.scene.max_gaussians)
            shown = place(scene, base).normalised(scene)
        except ValueError as err:
            Path(path).unlink(missing_ok=True)
            text = serve.public_message(str(err), [Path(path).parent])
            gr.Warning(ui.esc(text))
            return self.refining(None, prior) | {c["input_view"]: gr.update(
                visible=True, value=ui.status_html(f"Not refined: {text}", error=True))}
        image = ui.image_html(preview_image(shown, base, 256), "your splat", 320)
        caption = ui.esc(f"{Path(path).name}: {len(scene)} Gaussians, SH degree {scene.sh_degree}")
        return self.refining(path, prior) | {c["input_view"]: gr.update(
            visible=True, value=f"{image}<div class='psd-small' style='text-align:center'>{caption}</div>")}

    def cleared(self, prior):
        """The upload removed: back to text to 3D."""
        return self.refining(None, prior) | {self.c["input_view"]: gr.update(visible=False, value="")}

    def refining(self, path, prior) -> Dict:
        """The upload, the button's name and the settings the page shows for a refinement (``path``) or not."""
        c = self.c
        values = prior_defaults(self.w.name, prior or self.w.base.prior.name, self.refine_paths, refining=bool(path))
        return {c["controls"]["scene.init"]: path, c["go"]: gr.update(value="Refine" if path else "Generate"),
                **{c["controls"][p]: v for p, v in zip(self.refine_paths, values)}}

    def tidy(self) -> None:
        """Old run folders, and the files served from copies, go after ``max_age_hours``."""
        age, keep = self.w.max_age_hours * 3600.0, self.w.max_cached_files
        clean_old_runs(self.w.root, age)
        serve.prune(serve.SERVE_DIR, age, keep)
        serve.prune(serve.gradio_cache(), age, keep)

    # ---- a run -----------------------------------------------------------------------------------

    def run(self, state, token, compare_on, *values, request: gr.Request = None):
        """Generate: the run in its own thread, polled; its updates; then the result, or the error in words."""
        c, owner = self.c, self.owner_of(token, request)
        cfg = self.config(values)  # checked by the validator already
        self.tidy()
        cancel = state["cancel"] = CancelToken()
        yield {c["go"]: gr.update(interactive=False), c["results"]: gr.Tabs(visible=False), c["summary"]: "",
               c["status"]: ui.status_html("Starting..."),
               c["preview"]: ui.placeholder_html("The live render appears after the first steps", 330),
               c["input_view"]: gr.update(visible=bool(cfg.scene.init))}
        passes = passes_of(cfg, compare_on)
        live = LiveRun(lambda: self.work(passes, cancel, owner), self.runner)
        if cfg.scene.init:  # a refined upload lives on only in the run's folder (input.ply), not in Gradio's cache
            live.future.add_done_callback(lambda _: Path(cfg.scene.init).unlink(missing_ok=True))
        page = ui.LivePage(cancel, passes)
        try:
            while not live.ended:  # one short poll per next(): a cancelled request is answered within it
                events, _ = live.poll(POLL_S)
                update = {c[name]: value for name, value in page.absorb(events).items()}
                yield update or {c["status"]: gr.skip()}  # nothing new: still hand control back
        except GeneratorExit:  # the request was cancelled (a client's cancel, a closed page): the run's own
            cancel.set()  # thread ends its step and writes what exists (scene, metrics, turntable, mesh)
            raise
        update = self.finished(cfg, passes, page.results, live.error, owner)
        if cfg.scene.init:  # the upload went with the run's end (its copy is the run's input.ply): back to Generate
            update |= {c["controls"]["scene.init"]: None, c["go"]: gr.update(value="Generate", interactive=True)}
            if "" in page.results and live.error is None:
                done = "Done." if not page.results[""].cancelled else "Stopped: this is what existed."
                update[c["status"]] = ui.status_html(f"{done} Your splat's copy is kept in this run's folder "
                                                     "(input.ply); drop the file again to refine it another way.")
        yield update

    def work(self, passes: List[Tuple[str, RunConfig]], cancel: CancelToken, owner: str):
        """The run's own thread (``LiveRun``): per pass, the models (loaded once, kept), then generate()'s
        events, each as (tag, event, the prior's status line); a string while models load."""
        for tag, run_cfg in passes:
            if not self.cache.has(run_cfg):
                yield f"{tag}Loading the models (kept for later runs)..."
            prior, reward = self.cache.for_run(run_cfg)
            if reward is None:  # the SD world's SDS: still measure the reward the page shows
                reward = self.cache.reward(run_cfg.reward, resolve_device(run_cfg.device))
            for event in generate(run_cfg, prior, reward, cancel=cancel, owner=owner):
                yield tag, event, prior.status()
            if cancel.is_set():
                return

    def finished(self, cfg: RunConfig, passes, results: Dict[str, object], error, owner: str) -> Dict:
        """The last update of a run: its result (and Compare's), or what went wrong, in words."""
        c = self.c
        if error is not None:
            if not isinstance(error, EXPECTED):
                raise error
            text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            text = serve.public_message(text, [self.w.root])  # no server paths for the user
            gr.Warning(ui.esc(text))
            return {c["status"]: ui.status_html(f"Error: {text}", error=True), c["go"]: gr.update(interactive=True)}
        if "" not in results:  # stopped while the models loaded: nothing was made
            return {c["status"]: ui.status_html("Stopped before the first step: nothing was made."),
                    c["go"]: gr.update(interactive=True)}
        main = results[""]
        update = self.show(cfg, main.metrics, main.out_dir)
        if len(results) > 1:  # the live render shows the SDS pass now: show this method's object again
            update[c["preview"]] = ui.image_html(preview_image(main.scene, cfg, cfg.camera.resolution[-1][1]),
                                                 "live render", 320)
        update[c["status"]] = ui.status_html("Done." if not main.cancelled else "Stopped: this is what existed.")
        if SDS_TAG in results:
            update |= self.compared(cfg, main, results[SDS_TAG], passes[1][1], update[c["summary"]])
        update[c["history"]] = [r.row() for r in ui.past_runs(self.w.root, owner)]
        update[c["go"]] = gr.update(interactive=True)
        return update

    def compared(self, cfg: RunConfig, main, other, sds_cfg: RunConfig, summary: str) -> Dict:
        """The Compare tab: both objects, the reward per orbit view, the difference in words."""
        c = self.c
        chart = ui.compare_plot(cfg.guidance.method, main.metrics, other.metrics)
        main_ply, sds_ply = serve.serve_copies([main.ply_path, other.ply_path])
        return {c["compare_md"]: ui.compare_words(cfg.guidance.method, main.metrics, other.metrics),
                c["model_main"]: main_ply, c["model_sds"]: sds_ply,
                c["compare_plot"]: ui.image_html(chart, "reward per view", 640) if chart is not None else "",
                c["summary"]: summary + "  \n" + ui.result_sentence(sds_cfg, other.metrics, "SDS, same seed")}

    def show(self, result_cfg: RunConfig, metrics: Dict[str, object], folder: Path) -> Dict:
        """The page updates that show a finished run (its files served from copies, never the run folder)."""
        c = self.c
        rplot, lplot = plots.run_plots(ui.run_logs(folder), result_cfg.steps, plots.window_end_step(result_cfg))
        ply, glb, video, *listed = serve.serve_copies(
            [folder / n for n in ("scene.ply", "mesh.glb", "turntable.mp4", "config.json", "metrics.json",
                                  "logs.json")])
        summary = "  \n".join(s for s in (ui.result_sentence(result_cfg, metrics), ui.refine_sentence(metrics)) if s)
        return {c["summary"]: summary, c["results"]: gr.Tabs(visible=True),
                c["model"]: ply, c["mesh"]: glb, c["files"]: [f for f in [ply, glb, *listed] if f], c["video"]: video,
                c["reward_plot"]: ui.image_html(rplot, "reward chart"),
                c["loss_plot"]: ui.image_html(lplot, "loss chart")}

    # ---- Stop, the page load, the history ----------------------------------------------------------

    def stop(self, state):
        if "cancel" in state:
            state["cancel"].set()
        return ui.status_html("Stopping after the current step; what exists so far will be shown.")

    def init(self, token, request: gr.Request = None):
        token = token or uuid.uuid4().hex
        return token, [r.row() for r in ui.past_runs(self.w.root, self.owner_of(token, request))]

    def pick(self, token, evt: gr.SelectData, request: gr.Request = None):
        runs = ui.past_runs(self.w.root, self.owner_of(token, request))
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not 0 <= row < len(runs):
            return {}
        past = runs[row]
        update = self.show(past.cfg, past.metrics, past.folder)
        update[self.c["status"]] = ui.status_html(f"Showing an earlier run: {past.cfg.prompt}")
        return update


def passes_of(cfg: RunConfig, compare_on: bool) -> List[Tuple[str, RunConfig]]:
    """(tag, config) of each pass: the run, then SDS with the same seed when Compare is on."""
    passes = [("", cfg)]
    if compare_on and cfg.guidance.method != "sds":
        sds_cfg = RunConfig.from_dict(cfg.to_dict())
        sds_cfg.guidance.method = "sds"
        passes.append((SDS_TAG, sds_cfg))
    return passes
