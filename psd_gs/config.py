"""Typed configs. DESIGN.md's symbols are noted next to each field.

Only ``GuidanceConfig`` exists so far; scene, camera and run configs and the named presets come with
the generation loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

METHODS = ("sds", "psd", "reward_grad")


@dataclass
class GuidanceConfig:
    """Every knob of the three guidance methods (DESIGN.md sections 3 and 4).

    Ablations: PSD without the pair term is ``lambda_p = 0``; without the adaptive negative,
    ``neg_lr = 0``; with both off PSD is exactly SDS.
    """

    method: str = "psd"  # "sds", "psd" or "reward_grad"
    negative_prompt: str = ""  # text of the reference negative embedding e_ref
    cfg_scale: float = 7.5  # s: classifier-free guidance scale; the adaptive negative needs s > 1
    t_min: float = 0.02  # lower end of t ~ U[t_min, t_max(step)], as a fraction of T
    t_max_start: float = 0.98  # t_max at step 0 ...
    t_max_end: float = 0.5  # ... annealed linearly to this at the last step
    # PSD pair term
    lambda_p: float = 1.0  # lambda_p: weight of the preference pair term
    tau: float = 0.01  # tau: reward gap at which k(d) = clamp(d / tau, 0, 1) saturates
    pair_window: Tuple[float, float] = (0.0, 0.5)  # fractions of the run where the pair term acts
    # PSD adaptive negative embedding e_n
    neg_lr: float = 1e-3  # Adam learning rate of e_n; 0 freezes e_n = e_ref
    neg_every: int = 8  # one e_n update every this many steps (cost: see bench/step_cost.py)
    beta: float = 1000.0  # beta: Diffusion-DPO inverse temperature
    gamma: float = 0.1  # gamma: weight of |e_n - e_ref|^2 (mean over elements)
    # reward-gradient baseline
    lambda_r: float = 1.0  # lambda_r: weight of -R(render), whose gradient flows into the pixels

    def check(self) -> "GuidanceConfig":
        """Raise ValueError naming the first field out of range; returns self."""
        def bad(name: str, why: str) -> None:
            raise ValueError(f"GuidanceConfig.{name} = {getattr(self, name)!r}: {why}")

        if self.method not in METHODS:
            bad("method", f"choose one of {list(METHODS)}")
        if not self.cfg_scale >= 1.0:
            bad("cfg_scale", "must be >= 1 (1 turns guidance off)")
        if not 0.0 <= self.t_min < self.t_max_end <= 1.0 or not self.t_min < self.t_max_start <= 1.0:
            bad("t_min", f"need 0 <= t_min < t_max_end, t_max_start <= 1 (t_max_start={self.t_max_start}, "
                         f"t_max_end={self.t_max_end})")
        for name in ("lambda_p", "neg_lr", "beta", "gamma", "lambda_r"):
            if not getattr(self, name) >= 0.0:
                bad(name, "must be >= 0")
        if not self.tau > 0.0:
            bad("tau", "must be > 0 (it divides the reward gap)")
        lo, hi = self.pair_window
        if not 0.0 <= lo <= hi <= 1.0:
            bad("pair_window", "must be (start, end) fractions of the run with 0 <= start <= end <= 1")
        if not (isinstance(self.neg_every, int) and self.neg_every >= 1):
            bad("neg_every", "must be a whole number >= 1")
        return self
