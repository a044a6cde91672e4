"""The learned rewards (issue 25): small open_clip models trained here on the shapes world (``python -m psd_gs
train-reward``), shipped in ``psd_gs/assets/learned_rewards`` with a model card beside each, and loaded through
the real rewards' own loaders:

- ``learned-hps``: a preference reward in HPS v2.1's architecture and file (``HPS_v2.1_compressed.pt``,
  {"state_dict": ...}), read by ``load_hpsv2``; score = cos(image, prompt), as HPS's. It imitates a hidden
  rule (the warm colour preference) from noisy pairwise labels, as HPS imitates people.
- ``learned-clip``: a CLIP judge in the ``clip`` reward's file (``open_clip_model.safetensors``), read by
  ``load_clip_score``; trained contrastively on renders and captions only, no preference.

Each folder's ``open_clip_config.json`` ({"model_cfg": ...}, open_clip's hub format) gives the architecture.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..train import SHIPPED_REWARDS
from .clip_score import OpenClipReward, load_clip_score
from .hpsv2 import load_hpsv2

CONFIG_FILE = "open_clip_config.json"


def model_config(folder: Path) -> dict:
    """The open_clip config saved beside a learned reward's weights."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: a learned reward's folder holds its weights and {CONFIG_FILE} "
                                "(python -m psd_gs train-reward writes both)")
    return json.loads(path.read_text())


def load_learned_hps(device: torch.device | str | None = None, weights: str | Path = SHIPPED_REWARDS / "hps"
                     ) -> OpenClipReward:
    """The registry's "learned-hps" factory (float32 on a CPU, as every reward)."""
    reward = load_hpsv2(weights, model_config=model_config(weights), device=device)
    reward.name = "learned-hps"
    return reward


def load_learned_clip(device: torch.device | str | None = None, weights: str | Path = SHIPPED_REWARDS / "clip"
                      ) -> OpenClipReward:
    """The registry's "learned-clip" factory."""
    reward = load_clip_score(weights, model_config=model_config(weights), device=device)
    reward.name = "learned-clip"
    return reward
