"""What the CLIP-style rewards share (open_clip CLIP/HPSv2, transformers PickScore).

score = scale * cos(E_img(image), E_txt(prompt)). Image features are differentiable in the images;
text features are computed once per distinct prompt (no grad) and cached on the model's device as
float32 unit vectors. A subclass supplies ``encode_text(prompts)`` and ``encode_image(pixels)``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..device import resolve_device
from .base import RewardModel
from .preprocess import broadcast_prompts, check_images, clip_preprocess
from .weights import freeze, resolve_dtype


TEXT_CACHE = 256  # prompts whose text features are kept


class ClipLikeReward(RewardModel):
    """A frozen two-tower model scored by scaled cosine similarity."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, scale: float = 1.0,
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = freeze(model).to(device=self.device, dtype=self.dtype)
        self.tokenizer = tokenizer
        self.scale = float(scale)
        self._text_cache: dict[str, torch.Tensor] = {}

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Raw text features [N, D] of ``prompts``."""
        raise NotImplementedError

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Raw image features [B, D] of CLIP-preprocessed pixels [B, 3, 224, 224] (model dtype)."""
        raise NotImplementedError

    @torch.no_grad()
    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """[N, D] float32 unit vectors for ``prompts`` (the latest TEXT_CACHE prompts cached), on ``self.device``."""
        have = {p: self._text_cache[p] for p in dict.fromkeys(prompts) if p in self._text_cache}
        missing = [p for p in dict.fromkeys(prompts) if p not in have]
        if missing:
            # Cached features must outlive an inference_mode() caller: build them as normal tensors.
            with torch.inference_mode(False):
                feats = F.normalize(self.encode_text(missing).float(), dim=-1)
            have.update(zip(missing, feats))
            self._text_cache.update(zip(missing, feats))
            while len(self._text_cache) > TEXT_CACHE:  # a server sees many prompts: drop the oldest
                self._text_cache.pop(next(iter(self._text_cache)))
        return torch.stack([have[p] for p in prompts])

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> [B, D] float32 unit vectors, differentiable."""
        x = clip_preprocess(images.to(self.device)).to(self.dtype)
        return F.normalize(self.encode_image(x).float(), dim=-1)

    def score(self, images: torch.Tensor, prompts: str | Sequence[str]) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1]; prompts: one or B strings. Returns [B] float32 on images' device."""
        check_images(images)
        prompts = broadcast_prompts(prompts, images.shape[0])
        cos = (self.image_features(images) * self.text_features(prompts)).sum(dim=-1)
        return (self.scale * cos).to(images.device)
