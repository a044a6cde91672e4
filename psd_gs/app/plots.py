"""The app's charts, drawn with matplotlib (no pyplot: the Agg canvas of a ``Figure``, thread-safe) into
uint8 RGB images: named series in a legend, labelled axes, the x axis spanning the whole run, and a
dashed line where PSD's pair window ends. Images rather than Gradio's live chart components, which fix
their legend at the first frame and drop series that appear later (the window marker, a loss term that
starts after step 0).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

Points = List[Tuple[float, float]]

REWARD_SERIES = (("reward_w", "winner guess"), ("reward_l", "loser guess"), ("reward", "render"))
REWARD_COLORS = {"winner guess": "#2ca02c", "loser guess": "#ff7f0e", "render": "#d62728"}
LOSS_COLORS = {"sds": "#1f77b4", "negative": "#9467bd", "reward": "#d62728"}
WINDOW_MARK = "pair window ends"
SIZE = (3.8, 1.75)  # inches; at DPI 120: 456 x 210 px, about the size shown
DPI = 120


def window_end_step(cfg) -> Optional[int]:
    """The step at which PSD's pair window closes in run ``cfg`` (a RunConfig), for the marker; None for
    other methods, without the pair term, or when the window lasts the whole run."""
    g = cfg.guidance
    if g.method != "psd" or g.lambda_p <= 0 or g.pair_window[1] >= 1.0:
        return None
    return int(round(g.pair_window[1] * cfg.steps))


def series(history: List[Dict[str, float]]) -> Tuple[Dict[str, Points], Dict[str, Points]]:
    """(rewards, losses): series name -> [(step, value)] from per-step logs. Rewards: PSD's winner and loser
    guesses, the render's reward (reward-gradient); losses: one per loss term ("loss_<term>" logs)."""
    rewards: Dict[str, Points] = {}
    losses: Dict[str, Points] = {}
    for h in history:
        for key, name in REWARD_SERIES:
            if key in h:
                rewards.setdefault(name, []).append((h["step"], h[key]))
        for key, value in h.items():
            if key.startswith("loss_"):
                losses.setdefault(key[5:], []).append((h["step"], value))
    return rewards, losses


def _image(fig) -> np.ndarray:
    """The figure drawn on an Agg canvas, uint8 [H, W, 3]. Fixed margins: matplotlib's tight_layout took
    half of the 0.3 s a pair of charts cost, on every live update."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.17, right=0.95, top=0.88, bottom=0.25)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def line_plot(lines: Dict[str, Points], title: str, y_label: str, total: int, window_end: Optional[int] = None,
              colors: Optional[Dict[str, str]] = None) -> np.ndarray:
    """A small line chart, uint8 [210, 456, 3]."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE, dpi=DPI)
    ax = fig.add_subplot()
    for name, points in lines.items():
        xs, ys = zip(*points)
        ax.plot(xs, ys, lw=1.2, label=name, color=(colors or {}).get(name))
    if window_end is not None:
        ax.axvline(window_end, color="#555555", lw=1.0, ls="--", label=WINDOW_MARK)
    ax.set_xlim(0, max(total, 1))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step", fontsize=9)
    ax.set_ylabel(y_label, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    if lines or window_end is not None:
        ax.legend(fontsize=8, loc="upper right", framealpha=0.85)
    if not lines:
        ax.text(0.5, 0.5, "nothing logged yet", ha="center", va="center", transform=ax.transAxes, fontsize=9,
                color="#888888")
    return _image(fig)


def run_plots(history: List[Dict[str, float]], total: int, window_end: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(reward chart, loss chart) of a run's logs so far."""
    rewards, losses = series(history)
    # losses span decades: their log10 on a linear axis (matplotlib's log axis tripled the drawing time)
    losses = {name: [(x, float(np.log10(max(y, 1e-12)))) for x, y in points] for name, points in losses.items()}
    return (line_plot(rewards, "Reward", "reward", total, window_end, REWARD_COLORS),
            line_plot(losses, "Loss terms", "log10 loss", total, window_end, LOSS_COLORS))


def bar_plot(groups: Dict[str, Tuple[Sequence[float], Sequence[float]]], title: str) -> np.ndarray:
    """Grouped bars, name -> (view azimuths, rewards), uint8 [264, 624, 3]."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 2.2), dpi=DPI)
    ax = fig.add_subplot()
    width = 0.8 / max(len(groups), 1)
    for i, (name, (azimuths, values)) in enumerate(groups.items()):
        x = np.arange(len(values))
        ax.bar(x + i * width, values, width, label=name)
        ax.set_xticks(x + 0.4 - width / 2, [f"{a:.0f}°" for a in azimuths])
    ax.axhline(0, color="#888888", lw=0.8)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("view azimuth", fontsize=9)
    ax.set_ylabel("reward", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=8)
    return _image(fig)
