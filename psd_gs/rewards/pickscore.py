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
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .base import RewardModel
from .preprocess import broadcast_prompts, check_images, clip_preprocess
from .weights import freeze, resolve_device, resolve_dtype, resolve_folder

PICKSCORE_REPO = "yuvalkirstain/PickScore_v1"
PICKSCORE_TOKENIZER = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
# Fetched from the hub: safetensors only, never the pickled pytorch_model.bin.
PICKSCORE_FILES = ("config.json", "model.safetensors")
TOKENIZER_FILES = ("tokenizer.json",)
MAX_LENGTH = 77


class PickScoreReward(RewardModel):
    """score = exp(logit_scale) * cos(E_img(image), E_txt(prompt)) with a frozen transformers CLIPModel.

    Text features are computed once per distinct prompt (no grad) and cached as float32 unit vectors.
    """

    name = "pickscore"

    def __init__(self, model: torch.nn.Module, tokenizer: Any, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = freeze(model).to(device=self.device, dtype=self.dtype)
        self.tokenizer = tokenizer
        self.logit_scale = float(model.logit_scale.detach().float().exp())
        self._text_cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """[N, D] float32 unit vectors for ``prompts`` (cached per prompt), on ``self.device``."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            # Cached features must outlive an inference_mode() caller: build them as normal tensors.
            with torch.inference_mode(False):
                inputs = self.tokenizer(missing, padding=True, truncation=True, max_length=MAX_LENGTH,
                                        return_tensors="pt").to(self.device)
                out = self.model.get_text_features(input_ids=inputs["input_ids"],
                                                   attention_mask=inputs["attention_mask"])
                feats = F.normalize(out.pooler_output.float(), dim=-1)
                self._text_cache.update(zip(missing, feats))
        return torch.stack([self._text_cache[p] for p in prompts])

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> [B, D] float32 unit vectors, differentiable."""
        x = clip_preprocess(images.to(self.device)).to(self.dtype)
        out = self.model.get_image_features(pixel_values=x)
        return F.normalize(out.pooler_output.float(), dim=-1)

    def score(self, images: torch.Tensor, prompts: str | Sequence[str]) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1]; prompts: one or B strings. Returns [B] float32 on images' device."""
        check_images(images)
        prompts = broadcast_prompts(prompts, images.shape[0])
        cos = (self.image_features(images) * self.text_features(prompts)).sum(dim=-1)
        return (self.logit_scale * cos).to(images.device)


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
