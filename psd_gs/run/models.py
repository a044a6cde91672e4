"""Load once, run many: models kept between runs, keyed by what defines them.

The app keeps one ``ModelCache`` for the server's life, so a second Generate click (or the SDS pass of
"Compare") loads nothing; the batch runner keeps one per worker. A prior is defined by its
``PriorConfig`` (name, source, resolved options) and the device; a reward by its name and the device.
One prior is kept (a second one replaces it, since priors are the large part) and the
``max_rewards`` most recently used rewards.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Optional, Tuple

import torch

from ..config import PriorConfig, RunConfig
from ..device import resolve_device
from .export import release_memory
from ..priors import DiffusionPrior, load_prior
from ..registry import METHODS, PRIORS
from ..rewards import RewardModel, load_reward
from .validate import validate


class ModelCache:
    """Priors and rewards loaded on first use and reused while their definition is the same."""

    def __init__(self, max_rewards: int = 2):
        self.max_rewards = max_rewards
        self._prior: Tuple[Optional[tuple], Optional[DiffusionPrior]] = (None, None)
        self._rewards: "OrderedDict[tuple, RewardModel]" = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how many models were actually loaded (tests and the README's timing read it)

    @staticmethod
    def prior_key(prior: PriorConfig, device: torch.device) -> tuple:
        return prior.name, prior.source, json.dumps(prior.options, sort_keys=True, default=str), str(device)

    def prior(self, prior: PriorConfig, device: torch.device) -> DiffusionPrior:
        """The prior ``prior`` defines on ``device`` (options resolved by ``validate``), loaded if needed."""
        key = self.prior_key(prior, device)
        with self._lock:
            if self._prior[0] != key:
                self._prior = (None, None)
                release_memory(device)  # the old prior's memory back before the new one loads
                self._prior = (key, load_prior(prior, device))
                self.loads += 1
            return self._prior[1]

    def reward(self, name: str, device: torch.device) -> RewardModel:
        """The reward ``name`` on ``device``, loaded if needed (least recently used ones are dropped)."""
        key = (name, str(device))
        with self._lock:
            if key not in self._rewards:
                while len(self._rewards) >= self.max_rewards:
                    self._rewards.popitem(last=False)
                self._rewards[key] = load_reward(name, device=device)
                self.loads += 1
            self._rewards.move_to_end(key)
            return self._rewards[key]

    def has(self, cfg: RunConfig) -> bool:
        """Whether the prior and reward ``cfg`` needs are loaded already (their weights are in memory)."""
        device = resolve_device(cfg.device)
        return self._prior[0] == self.prior_key(cfg.prior, device) and (cfg.reward, str(device)) in self._rewards

    def for_run(self, cfg: RunConfig) -> Tuple[DiffusionPrior, Optional[RewardModel]]:
        """(prior, reward) for ``generate(cfg, prior, reward)``: the reward when the method needs it or the
        prior's world reports on results with it, else None. Validates ``cfg`` first."""
        validate(cfg)
        device = resolve_device(cfg.device)
        needs_reward = METHODS[cfg.guidance.method].needs_reward or bool(PRIORS[cfg.prior.name].report)
        return self.prior(cfg.prior, device), (self.reward(cfg.reward, device) if needs_reward else None)
