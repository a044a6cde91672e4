"""What every trainer here shares: seeded per-step generators, atomic checkpoints, and the time budget that
pauses a stage with its checkpoint saved (the same command resumes it)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

from ..priors.shapes_world import ShapesWorld


def _gen(seed: int, stage: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + stage * 100_003 + step)


def _save(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _load(path: Path) -> Optional[dict]:
    return torch.load(path, weights_only=True) if path.exists() else None


class Paused(Exception):
    """Training stopped at its time budget after saving its checkpoint; the same command resumes it."""


class Trainer:
    """Runs its stages into ``work`` and writes its model(s) under ``out``. ``log(line)`` gets one line per
    stage. save_every_s: checkpoint period of a training stage. budget_s: this invocation's time; once it is
    spent the stage saves its checkpoint and raises Paused (None: no limit; 0: one step per stage and call)."""

    def __init__(self, out: str | Path, work: str | Path, recipe, log: Callable[[str], None] = print,
                 save_every_s: float = 120.0, budget_s: Optional[float] = None):
        self.out, self.work, self.r, self.log = Path(out), Path(work), recipe, log
        self.save_every_s = save_every_s
        self.deadline = math.inf if budget_s is None else time.perf_counter() + budget_s
        self.work.mkdir(parents=True, exist_ok=True)
        self.world = ShapesWorld()
        self.stats: Dict[str, object] = {}

    def _due(self, last: float, final: bool) -> bool:
        now = time.perf_counter()
        return final or now - last > self.save_every_s or now >= self.deadline

    def _pause_if_spent(self, unfinished: bool, stage: str, step: int) -> float:
        """After a checkpoint: Paused when the budget is spent and the stage is not done; else the time now."""
        if unfinished and time.perf_counter() >= self.deadline:
            raise Paused(f"paused in the {stage} stage at step {step} (time budget spent); run the same command "
                         "again to resume")
        return time.perf_counter()
