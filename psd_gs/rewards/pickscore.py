"""PickScore v1 (Kirstain et al. 2023): a CLIP-H fine-tuned on Pick-a-Pic preferences.

Use as in the model card of ``yuvalkirstain/PickScore_v1``: ``AutoModel.from_pretrained`` (a
transformers ``CLIPModel``), processor from ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (text:
``padding=True, truncation=True, max_length=77``), unit-normalised ``get_image_features`` and
``get_text_features``, and ``scores = model.logit_scale.exp() * (text_embs @ image_embs.T)``
(typical values around 20). Only the processor's tokenizer is used; images go through
``preprocess.clip_preprocess``, which matches that repo's ``preprocessor_config.json`` (shortest
side 224, resample 3 = bicubic, centre crop 224, OpenAI CLIP mean/std) up to the differences listed
there. transformers 5 returns a ``BaseModelOutputWithPooling`` from ``get_*_features``; the
projected embedding is its ``pooler_output``.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .clip_like import ClipLikeReward
from .weights import resolve_folder

PICKSCORE_REPO = "yuvalkirstain/PickScore_v1"
PICKSCORE_TOKENIZER = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
# Fetched from the hub: safetensors only, never the pickled pytorch_model.bin.
PICKSCORE_FILES = ("config.json", "model.safetensors")
TOKENIZER_FILES = ("tokenizer.json",)
MAX_LENGTH = 77


def weight_files() -> list[tuple[str, str]]:
    """The hub files the default "pickscore" reward loads (model and tokenizer)."""
    return [(PICKSCORE_REPO, f) for f in PICKSCORE_FILES] + [(PICKSCORE_TOKENIZER, f) for f in TOKENIZER_FILES]


class PickScoreReward(ClipLikeReward):
    """score = exp(logit_scale) * cos(E_img(image), E_txt(prompt)) with a frozen transformers CLIPModel."""

    name = "pickscore"

    def __init__(self, model: torch.nn.Module, tokenizer: Any, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__(model, tokenizer, float(model.logit_scale.detach().float().exp()), device, dtype)

    @property
    def logit_scale(self) -> float:
        """exp(logit_scale) of the checkpoint: the cosine's multiplier."""
        return self.scale

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        inputs = self.tokenizer(prompts, padding=True, truncation=True, max_length=MAX_LENGTH,
                                return_tensors="pt").to(self.device)
        out = self.model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        return out.pooler_output

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values=pixels).pooler_output


def load_pickscore(weights: str | os.PathLike = PICKSCORE_REPO, tokenizer: str | os.PathLike = PICKSCORE_TOKENIZER,
                   *, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> PickScoreReward:
    """The "pickscore" reward: PickScore v1, score = exp(logit_scale) * cos(image, prompt).

    weights: hub repo id (default "yuvalkirstain/PickScore_v1"; config.json + model.safetensors are
        fetched) or a local folder written by ``CLIPModel.save_pretrained``.
    tokenizer: hub repo id (default "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"; tokenizer.json is
        fetched) or a local folder written by ``CLIPTokenizer.save_pretrained``.
    device: None -> CUDA if available else CPU. dtype: None -> float16 on CUDA, float32 elsewhere.
    Raises MissingWeightsError if a hub file is neither cached nor downloadable.
    """
    from transformers import CLIPModel, CLIPTokenizer

    # Resolve every file before loading anything.
    model_dir = resolve_folder(weights, PICKSCORE_FILES, "pickscore")
    tokenizer_dir = resolve_folder(tokenizer, TOKENIZER_FILES, "pickscore")
    # transformers reads safetensors, or *.bin with torch.load(weights_only=True).
    model = CLIPModel.from_pretrained(model_dir)
    tok = CLIPTokenizer.from_pretrained(tokenizer_dir)
    return PickScoreReward(model, tok, device=device, dtype=dtype)
