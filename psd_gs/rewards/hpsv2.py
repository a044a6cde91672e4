"""HPS v2 / v2.1 (Human Preference Score, Wu et al. 2023): the reward the PSD paper ranks with.

An open_clip ViT-H-14 fine-tuned on human preferences. Loaded without the ``hpsv2`` package (it
ships without its BPE vocabulary and pins old pytest): the architecture is open_clip's own
"ViT-H-14" and the tokenizer open_clip's bundled BPE, as in the authors' code.

Checkpoint format, from the authors' ``hpsv2/img_score.py`` and ``hpsv2/utils.py``
(github.com/tgxs002/HPSv2): ``hf_hub_download("xswu/HPSv2", hps_version_map[version])`` with
``{"v2.0": "HPS_v2_compressed.pt", "v2.1": "HPS_v2.1_compressed.pt"}``, then
``model.load_state_dict(torch.load(cp)["state_dict"])`` into open_clip ``ViT-H-14``
(laion2B-s32B-b79K architecture, built with ``create_model_and_transforms``). Here the file is read
with ``torch.load(weights_only=True)``.

Score, as the authors compute it: with ``output_dict=True`` open_clip returns L2-normalised
features, and ``hps_score = diagonal(image_features @ text_features.T)``: the plain cosine, *not*
multiplied by ``logit_scale`` (typical values 0.2-0.35). Their preprocessing is open_clip's
evaluation transform (Resize 224 bicubic + CenterCrop 224 + OpenAI mean/std), reproduced in torch
by ``preprocess.clip_preprocess``.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch

from .clip_score import OpenClipReward, load_open_clip

HPS_REPO = "xswu/HPSv2"
HPS_FILES = {"v2.1": "HPS_v2.1_compressed.pt", "v2.0": "HPS_v2_compressed.pt"}
HPS_MODEL_NAME = "ViT-H-14"


def weight_files() -> list[tuple[str, str]]:
    """The hub file the default "hpsv2" reward loads (HPS v2.1)."""
    return [(HPS_REPO, HPS_FILES["v2.1"])]


def load_hpsv2(weights: str | os.PathLike = HPS_REPO, version: str = "v2.1", *,
               filename: str | None = None, model_name: str = HPS_MODEL_NAME,
               model_config: Mapping[str, Any] | None = None,
               device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> OpenClipReward:
    """The "hpsv2" reward: HPS v2.1 (default) or v2.0, score = cos(image, prompt) in [-1, 1].

    weights: hub repo id (default "xswu/HPSv2"), a local checkpoint file, or a folder holding the
        version's file. The checkpoint is {"state_dict": open_clip state dict} (a bare state dict
        is accepted too).
    version: "v2.1" -> HPS_v2.1_compressed.pt, "v2.0" -> HPS_v2_compressed.pt.
    filename: overrides the version's file name.
    model_name / model_config: the open_clip architecture (default "ViT-H-14"; see
        ``clip_score.build_open_clip``), for tiny test models.
    device: None -> CUDA if available else CPU. dtype: None -> float16 on CUDA, float32 elsewhere.
    Raises MissingWeightsError if the hub file is neither cached nor downloadable.
    """
    if version not in HPS_FILES:
        raise ValueError(f"version must be one of {sorted(HPS_FILES)}, got {version!r}")
    model, tokenizer = load_open_clip(weights, filename or HPS_FILES[version], "hpsv2", model_name,
                                      model_config, key="state_dict")
    return OpenClipReward(model, tokenizer, name="hpsv2", device=device, dtype=dtype)
