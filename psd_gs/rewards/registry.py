"""Reward models by name: ``REWARDS`` (a plain dict of factories) and ``load_reward``.

Each factory takes the model family's own keyword arguments (weights, file names, architecture,
``device``, ``dtype``) and returns a frozen ``RewardModel``. Another module adds a reward by adding
an entry here: ``REWARDS["shapes"] = load_shapes``. Importing this module imports neither
open_clip nor transformers; the factories do, when called.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .aesthetic import load_aesthetic
from .base import RewardModel
from .clip_score import load_clip_score
from .hpsv2 import load_hpsv2
from .pickscore import load_pickscore
from .shapes import ShapesReward

REWARDS: dict[str, Callable[..., RewardModel]] = {
    "hpsv2": load_hpsv2,          # HPS v2.1 (xswu/HPSv2), cosine; version="v2.0" for HPS v2
    "pickscore": load_pickscore,  # PickScore v1 (yuvalkirstain/PickScore_v1), exp(logit_scale) * cosine
    "aesthetic": load_aesthetic,  # LAION improved aesthetic predictor on CLIP ViT-L/14; prompt ignored
    "clip": load_clip_score,      # CLIP ViT-L/14 (OpenAI) cosine
    # the offline shapes world's colour preferences (no weights)
    "shapes-warm": lambda device=None: ShapesReward("warm", device),
    "shapes-cool": lambda device=None: ShapesReward("cool", device),
}


def load_reward(name: str, device: str | torch.device | None = None, **kwargs: Any) -> RewardModel:
    """The reward model ``name`` (a key of ``REWARDS``), built by its factory with ``device`` and ``kwargs``.

    Raises ValueError listing the known names for an unknown ``name``.
    """
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; known rewards: {', '.join(sorted(REWARDS))}")
    return REWARDS[name](device=device, **kwargs)
