"""What the app shows, computed without Gradio: status and time left, result sentences, the comparison
with SDS, the history of a user's runs, and the shapes world's pictures (charts: ``psd_gs.app.plots``). ``psd_gs.app.page`` lays them out.

Every piece of user text (prompts, error messages) that reaches HTML or Markdown goes through ``esc``,
so a prompt such as ``<img src=x onerror=alert(1)>`` is shown as text, never rendered.
"""

from __future__ import annotations

import hashlib
import html
import json
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Deque, Dict, List, Optional, Tuple

from ..config import RunConfig

OWNER_FILE = "owner"  # a run folder's owner id (a hash), written by generate(owner=...)


def esc(text: object) -> str:
    """``text`` safe as HTML or Markdown text: &, < and > escaped (never used inside attributes)."""
    return html.escape(str(text), quote=False)


def owner_id(secret: str) -> str:
    """The id stored with a user's runs: a hash of their login name or browser token, never the token."""
    return hashlib.sha256(secret.encode()).hexdigest()[:32]


# ---- progress -----------------------------------------------------------------------------------


class StepClock:
    """Seconds left, from the pace of the last ``window`` steps (the first steps and the setup before
    them are slower, so the mean over the whole run overestimates what is left)."""

    def __init__(self, window: int = 20, chart_every: float = 2.0):
        self.marks: Deque[Tuple[int, float]] = deque(maxlen=window)
        self.chart_every, self.last_chart = chart_every, float("-inf")

    def due_chart(self, now: Optional[float] = None) -> bool:
        """Whether the charts should be redrawn now (at most every ``chart_every`` seconds: drawing them
        costs about 0.2 s)."""
        now = time.perf_counter() if now is None else now
        if now - self.last_chart < self.chart_every:
            return False
        self.last_chart = now
        return True

    def left(self, step: int, total: int, now: Optional[float] = None) -> Optional[float]:
        self.marks.append((step, time.perf_counter() if now is None else now))
        (s0, t0), (s1, t1) = self.marks[0], self.marks[-1]
        if s1 <= s0:
            return None
        return (t1 - t0) / (s1 - s0) * (total - step)


def status_html(text: str, step: int = 0, total: int = 0, error: bool = False) -> str:
    """The one status line with the one progress bar (``text`` is escaped here)."""
    bar = f'<progress value="{step}" max="{total}" style="width:100%;height:10px"></progress>' if total else ""
    color = "color:#b91c1c;" if error else ""
    return f'<div style="{color}font-size:15px;line-height:1.5">{esc(text)}</div>{bar}'


def step_text(tag: str, step: int, total: int, elapsed: float, left: Optional[float], n_gaussians: int) -> str:
    eta = f"about {left:.0f} s left" if left is not None else "estimating the time left"
    return f"{tag}step {step} / {total} · {elapsed:.1f} s elapsed · {eta} · {n_gaussians} Gaussians"


class LivePage:
    """What the page shows of a live run, from the events its thread hands over (``psd_gs.app.live``): at most
    one status line, one live render and one pair of charts per poll, however many steps came in between.

    passes: (tag, RunConfig) of each pass ("" for the run, a tag such as "SDS pass: " for Compare's).
    Events: a string (a phase such as loading the models), or (tag, Progress | Result, the prior's status).
    ``absorb`` returns HTML by output name: "status", "preview", "reward_plot", "loss_plot".
    """

    def __init__(self, cancel, passes: List[Tuple[str, RunConfig]]):
        self.cancel = cancel
        self.cfgs = dict(passes)
        self.results: Dict[str, object] = {}  # tag -> generate()'s Result
        self.rows: List[Dict[str, float]] = []  # the current pass's per-step logs, for the charts
        self.tag: Optional[str] = None
        self.clock = StepClock()

    def absorb(self, events: List[object]) -> Dict[str, str]:
        from . import plots

        out: Dict[str, str] = {}
        latest, note, fresh = None, "", False  # fresh: new per-step logs for the charts
        for event in events:
            if isinstance(event, str):
                out["status"] = status_html(event)
                continue
            tag, item, note = event
            if tag != self.tag:  # a new pass: its own clock and charts
                self.tag, self.rows, self.clock = tag, [], StepClock()
            if hasattr(item, "scene"):  # a Result
                self.results[tag] = item
                continue
            self.rows.extend(item.history)
            latest, fresh = item, fresh or bool(item.history)
            if item.preview is not None:
                out["preview"] = image_html(item.preview, "live render", 320)
        if latest is not None:
            left = self.clock.left(latest.step, latest.total)
            text = step_text(self.tag, latest.step, latest.total, latest.elapsed, left, latest.n_gaussians)
            if self.cancel.is_set():
                text = f"Stopping: writing what exists so far (scene, turntable, mesh) · {text}"
            elif latest.step == latest.total:
                text += " · writing the splat, turntable and mesh"
            elif note:
                text += f" · {note}"
            out["status"] = status_html(text, latest.step, latest.total)
            cfg = self.cfgs[self.tag]
            # charts when there is something new to draw, at most every 2 s (an empty chart would use up the slot)
            if fresh and (latest.step == latest.total or self.clock.due_chart()):
                reward, loss = plots.run_plots(self.rows, cfg.steps, plots.window_end_step(cfg))
                out["reward_plot"], out["loss_plot"] = image_html(reward, "reward chart"), image_html(loss, "loss chart")
        return out


# ---- images -------------------------------------------------------------------------------------


def image_html(image, alt: str, max_width: Optional[int] = None) -> str:
    """uint8 [H, W, 3] as an inline PNG <img> (a data URL): the page shows it without Gradio writing a
    file for every frame. Small renders are drawn blocky (pixelated), not blurred, at up to ``max_width``."""
    import base64

    import imageio.v3 as iio

    data = base64.b64encode(iio.imwrite("<bytes>", image, extension=".png")).decode()
    width = f"max-width:{max_width}px;" if max_width else ""
    return (f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}" '
            f'style="width:100%;{width}display:block;margin:auto">')


def placeholder_html(text: str, height: int) -> str:
    """An empty box of ``height`` px with a line of grey text, where an image will come."""
    return (f'<div style="height:{height}px;display:flex;align-items:center;justify-content:center;'
            f'color:#999;border:1px dashed #ccc;border-radius:6px">{esc(text)}</div>')


# ---- results ------------------------------------------------------------------------------------


def result_sentence(cfg: RunConfig, metrics: Dict[str, object], label: str = "") -> str:
    """One Markdown line a person understands: what formed, its reward, and (shapes world) whether it is
    the preferred object and how closely it matches it; elsewhere the method's settings."""
    m, g = metrics, cfg.guidance
    head = f"{label}: " if label else ""
    done = f"{m['steps_done']} / {m['steps']} steps in {m['seconds']:.0f} s"
    if m.get("cancelled"):
        done += ", stopped early: this is what existed"
    if m.get("pair"):
        done += ". " + pair_sentence(m)[:-1]
    ev = m.get("evaluation")
    if ev and not ev.get("formed", True):
        return (f"{head}{'N' if not head else 'n'}o object formed (the nearest, the {esc(ev['nearest'])}, matches only "
                f"{ev['psnr']:.1f} dB over 8 views); reward {ev['reward']:.3f} ({esc(ev['judged_by'])}). {done}.")
    if ev:
        verdict = ("**the object the reward prefers**" if ev["hit"]
                   else f"not the one the reward prefers (the {esc(ev['preferred'])})")
        return (f"{head}{'F' if not head else 'f'}ormed the **{esc(ev['nearest'])}**, {verdict}; it matches its reference to "
                f"{ev['psnr']:.1f} dB over 8 views; reward {ev['reward']:.3f} ({esc(ev['judged_by'])}). {done}.")
    views = m.get("reward_views")
    reward = f"reward {views['mean']:.3f} over {len(views['per_view'])} views ({esc(cfg.reward)})" if views else ""
    knobs = f"{g.method}, CFG {g.cfg_scale:g}" + (f", preference weight {g.lambda_p:g}, tau {g.tau:g}"
                                                   if g.method == "psd" else "")
    return f"{head}{reward}{'; ' if reward else ''}{knobs}. {done}."


def pair_sentence(metrics: Dict[str, object]) -> str:
    """How PSD's pair term acted over the run (metrics["pair"]), in words; "" for a run without one. Says
    plainly when the chosen reward did not separate the candidates (PSD then ran as SDS)."""
    p = metrics.get("pair")
    if not p:
        return ""
    share, k = p["informative_share"], p["mean_k"]
    words = (f"Preference pairs: the reward separated the candidates in {share:.0%} of {p['steps']} pair steps, "
             f"mean weight k {k:.2f} (gap scale {p['gap_scale']:.3g} in the reward's units)")
    if share == 0 or k < 0.05:
        words += "; **the reward you chose did not steer this run** (PSD ran as SDS): try another reward"
    return words + "."


def refine_sentence(metrics: Dict[str, object]) -> str:
    """What a refinement did to its input (metrics["refine"]), in words; "" for a run from a random ball."""
    r = metrics.get("refine")
    if not r:
        return ""
    db = "identical" if r["psnr_to_input"] == float("inf") else f"{r['psnr_to_input']:.1f} dB"
    words = (f"The reward went from {r['reward_before']:.3f} to {r['reward_after']:.3f} over 8 views; against the "
             f"input the renders are at {db} (PSNR) and the silhouettes overlap {r['silhouette_iou']:.0%} (IoU)")
    if r["keep"] != "none":
        kept = "unchanged bit for bit" if r["kept_unchanged"] else "**changed** (a bug: please report it)"
        words += f"; its {r['keep']} is {kept}"
    return words + "."


def compare_words(method: str, main: Dict[str, object], sds: Dict[str, object]) -> str:
    """The difference between a method's result and SDS's with the same seed, in words."""
    a, b = main.get("evaluation"), sds.get("evaluation")
    ra = (a or {}).get("reward", (main.get("reward_views") or {}).get("mean"))
    rb = (b or {}).get("reward", (sds.get("reward_views") or {}).get("mean"))
    if ra is None or rb is None:
        return "No reward was measured for one of the two runs."
    diff = ra - rb
    words = (f"Against SDS with the same seed, {method.upper()} {'raised' if diff > 0 else 'lowered'} the reward by "
             f"{abs(diff):.3f} over 8 views")
    if a and b:
        if a["nearest"] == b["nearest"]:
            words += f"; both formed the {esc(a['nearest'])}"
        else:
            words += f"; {method.upper()} formed the {esc(a['nearest'])}, SDS the {esc(b['nearest'])}"
        words += f" (fidelity {a['psnr']:.1f} against {b['psnr']:.1f} dB)"
    return words + "."


def compare_plot(method: str, main: Dict[str, object], sds: Dict[str, object]):
    """The reward of each orbit view of both runs as grouped bars (an image), or None without rewards."""
    from .plots import bar_plot

    groups = {}
    for name, m in ((method.upper(), main), ("SDS", sds)):
        views = m.get("reward_views") or {}
        if views.get("per_view"):
            groups[name] = (views["azimuths"], views["per_view"])
    return bar_plot(groups, "Reward per orbit view, same seed") if groups else None


# ---- history ------------------------------------------------------------------------------------


@dataclass
class PastRun:
    folder: Path
    cfg: RunConfig
    metrics: Dict[str, object]
    finished: float  # time.time() of metrics.json

    def row(self) -> List[object]:
        ev = self.metrics.get("evaluation") or {}
        reward = ev.get("reward", (self.metrics.get("reward_views") or {}).get("mean"))
        return [time.strftime("%H:%M", time.localtime(self.finished)), self.cfg.prompt, self.cfg.guidance.method,
                self.cfg.reward, round(reward, 3) if reward is not None else None]


HISTORY_COLUMNS = ["time", "prompt", "method", "reward model", "reward"]


def past_runs(root: Path, owner: str, limit: int = 12) -> List[PastRun]:
    """The ``limit`` latest finished runs below ``root`` that belong to ``owner`` (newest first)."""
    runs = []
    if not root.is_dir() or not owner:
        return runs
    for folder in root.iterdir():
        try:
            if (folder / OWNER_FILE).read_text().strip() != owner or not (folder / "scene.ply").is_file():
                continue
            metrics_path = folder / "metrics.json"
            cfg = RunConfig.from_dict(json.loads((folder / "config.json").read_text()))
            runs.append(PastRun(folder, cfg, json.loads(metrics_path.read_text()), metrics_path.stat().st_mtime))
        except (OSError, ValueError, KeyError):
            continue  # not a run folder, someone else's, half-written, or from an older layout
    return sorted(runs, key=lambda r: r.finished, reverse=True)[:limit]


def run_logs(folder: Path) -> List[Dict[str, float]]:
    """The per-step logs a run saved (logs.json), [] if none."""
    try:
        return json.loads((folder / "logs.json").read_text())
    except (OSError, ValueError):
        return []


# ---- the shapes world ---------------------------------------------------------------------------


def world_pictures(size: int = 64) -> List[Tuple["object", str]]:
    """(image uint8 [size, size, 3], name) of each reference object of the shapes world."""
    import torch

    from ..scene.cameras import turntable
    from ..run.export import to_uint8
    from ..priors.shapes_world import ShapesWorld
    from ..render import rasterize

    world = ShapesWorld()
    cams = turntable(1, size, size, elevation=20.0, radius=2.0, start_azimuth=30.0)
    with torch.no_grad():
        return [(to_uint8(rasterize(world.build(k, 400), cams, world.background).rgb[0]), obj.name)
                for k, obj in enumerate(world.objects)]
