"""What a batch says at its end: a table per method, and a contact sheet of every object's front view.

``summary_rows(index)``: per method, jobs done and failed, the mean reward (over 8 orbit views, the
run's own reward) with its spread across jobs and, where the prior's world reports fidelity (the
shapes world), the mean PSNR to the nearest allowed object and the hit rate. ``markdown(rows)``
formats any list of row dicts as a table (the suite's too). ``contact_sheet(index)`` tiles every
job's preview.png, a row per prompt and a column per method and seed, labelled; a failed job is a
grey tile.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .runner import BatchIndex

TILE = 160  # px of one object on the contact sheet
LABEL = 18  # px of its caption


def mean_sd(values: Sequence[float]) -> Optional[tuple]:
    """(mean, sample standard deviation; 0 for one value) of the finite ``values``, None when there are none."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return None
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def fmt_mean_sd(values: Sequence[float], digits: int = 3) -> str:
    """"m ± sd (n)" or "-"."""
    ms = mean_sd(values)
    n = sum(v is not None for v in values)
    return "-" if ms is None else f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f} ({n})"


def summary_rows(index: BatchIndex) -> List[Dict[str, str]]:
    """One row per method, in the order methods first appear in the index."""
    by_method: Dict[str, List[Dict[str, Any]]] = {}
    for entry in index.jobs.values():
        by_method.setdefault(entry["job"]["method"], []).append(entry)
    rows = []
    for method, entries in by_method.items():
        done = [e for e in entries if e["status"] == "done"]
        evals = [e["metrics"].get("evaluation") or {} for e in done]
        row = {"method": method, "jobs": str(len(entries)), "done": str(len(done)),
               "failed": str(sum(e["status"] == "failed" for e in entries)),
               "reward (own, 8 views)": fmt_mean_sd([e["metrics"].get("reward") for e in done]),
               "s / job": fmt_mean_sd([e.get("seconds") for e in done], 1)}
        if any("psnr" in ev for ev in evals):
            row["fidelity (dB)"] = fmt_mean_sd([ev.get("psnr") for ev in evals], 1)
            row["hits"] = f"{sum(bool(ev.get('hit')) for ev in evals)}/{len(evals)}"
        rows.append(row)
    return rows


def markdown(rows: List[Dict[str, str]]) -> str:
    """Rows (dicts with the same keys, or a subset: a missing cell is "-") as a Markdown table."""
    if not rows:
        return "(no rows)\n"
    cols = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(row.get(c, "-")) for c in cols) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _tile(path: Optional[Path], caption: str) -> np.ndarray:
    """uint8 [TILE + LABEL, TILE, 3]: the image at ``path`` (grey when None) above its caption."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (TILE, TILE + LABEL), (255, 255, 255))
    if path is not None and path.is_file():
        img.paste(Image.open(path).convert("RGB").resize((TILE, TILE)), (0, 0))
    else:
        img.paste((170, 170, 170), (0, 0, TILE, TILE))
    ImageDraw.Draw(img).text((3, TILE + 3), caption[:26], fill=(0, 0, 0))
    return np.asarray(img)


def contact_sheet(index: BatchIndex, path: Path) -> Optional[Path]:
    """Every job's front view at ``path`` (PNG): a row per prompt, a column per (method, seed); None when
    the index has no jobs."""
    import imageio.v3 as iio

    entries = list(index.jobs.values())
    if not entries:
        return None
    prompts = list(dict.fromkeys(e["job"]["prompt"] for e in entries))
    columns = list(dict.fromkeys((e["job"]["method"], e["job"]["seed"]) for e in entries))
    cell = {(e["job"]["prompt"], e["job"]["method"], e["job"]["seed"]): e for e in entries}
    rows = []
    for prompt in prompts:
        tiles = []
        for method, seed in columns:
            e = cell.get((prompt, method, seed))
            done = e is not None and e["status"] == "done"
            preview = index.out_dir / e["folder"] / "preview.png" if done else None
            caption = f"{method} s{seed}" + ("" if done else f" {e['status'] if e else 'none'}")
            tiles.append(_tile(preview, caption))
        title = np.full((LABEL, TILE * len(columns), 3), 255, np.uint8)
        rows += [_caption(title, prompt), np.concatenate(tiles, axis=1)]
    iio.imwrite(path, np.concatenate(rows, axis=0))
    return path


def _caption(strip: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.fromarray(strip)
    ImageDraw.Draw(img).text((3, 3), text[:120], fill=(0, 0, 0))
    return np.asarray(img)
