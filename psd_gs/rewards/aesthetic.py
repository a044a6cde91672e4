"""LAION improved aesthetic predictor: a small MLP over CLIP ViT-L/14 image embeddings. Prompt ignored.

Architecture and use, from christophschuhmann/improved-aesthetic-predictor ``simple_inference.py``:
``MLP(768)`` = Linear(768, 1024), Dropout(0.2), Linear(1024, 128), Dropout(0.2), Linear(128, 64),
Dropout(0.1), Linear(64, 16), Linear(16, 1) (no nonlinearities: the ReLUs are commented out), fed
the L2-normalised ``encode_image`` features of OpenAI CLIP ViT-L/14 (``clip.load("ViT-L/14")``,
QuickGELU, Resize 224 bicubic + CenterCrop). State-dict keys ``layers.{0,2,4,6,7}.{weight,bias}``.

Weights: TRL's DDPO example (huggingface/trl ``examples/scripts/ddpo.py``) uses the same MLP from
the hub repo ``trl-lib/ddpo-aesthetic-predictor`` file ``aesthetic-model.pth``, loaded with
``torch.load(..., weights_only=True)`` and ``mlp.load_state_dict`` (so it is a plain state dict).
The original ``sac+logos+ava1-l14-linearMSE.pth`` (same keys) loads as a local path. The CLIP
image tower comes from ``clip_score``'s OpenAI ViT-L/14 checkpoint.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..device import resolve_device
from .base import RewardModel
from .clip_score import CLIP_MODEL_NAME, CLIP_REPO, OPEN_CLIP_FILES, build_open_clip
from .preprocess import check_images, clip_preprocess
from .weights import freeze, load_into, load_state_dict, resolve_dtype, resolve_weights

AESTHETIC_REPO = "trl-lib/ddpo-aesthetic-predictor"
AESTHETIC_FILE = "aesthetic-model.pth"


def weight_files() -> list[tuple[str, str]]:
    """The hub files the default "aesthetic" reward loads (its MLP and the CLIP ViT-L/14 it reads)."""
    return [(AESTHETIC_REPO, AESTHETIC_FILE), (CLIP_REPO, OPEN_CLIP_FILES[0])]


class AestheticMLP(nn.Module):
    """The improved-aesthetic-predictor head: [B, input_size] unit CLIP embeddings -> [B, 1] score."""

    def __init__(self, input_size: int = 768):
        super().__init__()
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embed: torch.Tensor) -> torch.Tensor:
        return self.layers(embed)


class AestheticReward(RewardModel):
    """score = MLP(normalise(E_img(image))), roughly a 1-10 rating; the prompt is ignored.

    visual: open_clip image tower (``CLIP.visual``), run in ``dtype``; the MLP runs in float32.
    """

    name = "aesthetic"

    def __init__(self, visual: nn.Module, mlp: AestheticMLP, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.visual = freeze(visual).to(device=self.device, dtype=self.dtype)
        self.mlp = freeze(mlp).to(device=self.device, dtype=torch.float32)

    def score(self, images: torch.Tensor, prompts: str | Sequence[str] | None = None) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1]; prompts ignored. Returns [B] float32 on images' device."""
        check_images(images)
        x = clip_preprocess(images.to(self.device)).to(self.dtype)
        embed = F.normalize(self.visual(x).float(), dim=-1)
        return self.mlp(embed).squeeze(-1).to(images.device)


def load_aesthetic(weights: str | os.PathLike = AESTHETIC_REPO, *, filename: str = AESTHETIC_FILE,
                   clip_weights: str | os.PathLike = CLIP_REPO,
                   clip_filename: str | Sequence[str] = OPEN_CLIP_FILES,
                   model_name: str = CLIP_MODEL_NAME, model_config: Mapping[str, Any] | None = None,
                   device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> AestheticReward:
    """The "aesthetic" reward: LAION improved aesthetic predictor on CLIP ViT-L/14 (OpenAI) embeddings.

    weights: MLP state dict: hub repo id (default "trl-lib/ddpo-aesthetic-predictor"), local file,
        or folder holding ``filename``.
    clip_weights / clip_filename: the open_clip CLIP checkpoint whose image tower embeds the images
        (as for ``clip_score.load_clip_score``).
    model_name / model_config: the open_clip architecture; its embedding width must equal the MLP's
        input size (768 for ViT-L/14).
    device: None -> CUDA if available else CPU. dtype: None -> float16 on CUDA, float32 elsewhere.
    Raises MissingWeightsError if a hub file is neither cached nor downloadable.
    """
    # 1. Resolve both files before building anything.
    mlp_path = resolve_weights(weights, filename, "aesthetic")
    clip_path = resolve_weights(clip_weights, clip_filename, "aesthetic")
    # 2. The MLP, sized from its own weights.
    mlp_state = load_state_dict(mlp_path)
    if "layers.0.weight" not in mlp_state:
        raise ValueError(f"{str(mlp_path)!r} is not an aesthetic-predictor MLP state dict "
                         f"(no 'layers.0.weight'; keys: {sorted(mlp_state)[:8]})")
    mlp = AestheticMLP(input_size=mlp_state["layers.0.weight"].shape[1])
    load_into(mlp, mlp_state, mlp_path, "aesthetic")
    # 3. The CLIP image tower.
    model, _ = build_open_clip(model_name, model_config)
    load_into(model, load_state_dict(clip_path, key="state_dict"), clip_path, "aesthetic")
    width = model.visual.output_dim
    if width != mlp.input_size:
        raise ValueError(f"aesthetic MLP expects {mlp.input_size}-d embeddings but the CLIP model "
                         f"{model_name if model_config is None else 'model_config'} gives {width}-d")
    return AestheticReward(model.visual, mlp, device=device, dtype=dtype)
