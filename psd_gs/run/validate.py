"""One validation pass over a RunConfig, before any model loads (milliseconds, not a model load later).

``validate(cfg)`` checks the ranges (``RunConfig.check``), that the prior, the reward and the method
exist in ``psd_gs.registry``, that the reward scores the prior's world, the prior's own options and
its ``check`` hook (the shapes world's vocabulary), and the device. It also fills ``prior.options``
with every option's value, so config.json records the resolved settings. Each failure is a
ValueError that names the setting and the fix. The CLI, the app, the batch runner and ``generate``
all call it.
"""

from __future__ import annotations

import dataclasses

from ..config import RunConfig, prior_options
from ..registry import METHODS, PRIORS, REWARDS, resolve


def validate(cfg: RunConfig) -> RunConfig:
    """Raise ValueError naming the first problem of ``cfg``; returns ``cfg`` with its prior options resolved."""
    cfg.check()
    if cfg.prior.name not in PRIORS:
        raise ValueError(f"prior {cfg.prior.name!r} is unknown (prior.name); choose one of {', '.join(PRIORS)}")
    if cfg.guidance.method not in METHODS:
        raise ValueError(f"method {cfg.guidance.method!r} is unknown (guidance.method); choose one of "
                         f"{', '.join(METHODS)}")
    entry = PRIORS[cfg.prior.name]
    if cfg.reward not in REWARDS:
        raise ValueError(f"reward {cfg.reward!r} is unknown (reward); known rewards: {', '.join(REWARDS)}")
    if entry.world not in REWARDS[cfg.reward].worlds:
        fits = [name for name, r in REWARDS.items() if entry.world in r.worlds]
        raise ValueError(f"reward {cfg.reward!r} does not score the {cfg.prior.name} prior's images "
                         f"({entry.world} world); choose one of {', '.join(fits)}")
    cfg.prior.options = dataclasses.asdict(prior_options(cfg.prior))
    if entry.check:
        resolve(entry.check)(cfg)
    from ..device import resolve_device

    resolve_device(cfg.device)  # ValueError for cuda without CUDA
    return cfg
