"""CLIP preprocessing in torch and prompt broadcasting, shared by every reward model.

Preprocessing (``clip_preprocess``) reproduces the evaluation transform that CLIP, HPSv2, PickScore
and the LAION aesthetic predictor were all used with: resize the shorter side to 224 (bicubic,
antialiased), centre-crop 224 x 224, normalise with the OpenAI CLIP mean/std. Their own transforms
run on PIL images (open_clip/OpenAI CLIP: torchvision ``Resize(224, BICUBIC)`` + ``CenterCrop(224)``;
PickScore: ``CLIPImageProcessor``, the same steps); ours is differentiable and stays on the device.
How it matches the PIL path: ``F.interpolate(mode="bicubic", antialias=True)`` is PyTorch's port of
PIL's separable resampling filter (cubic coefficient a = -0.5, support widened by the scale factor
when downsampling), and like PIL we resize width first, then height, clamping to [0, 1] after each
pass (PIL stores the intermediate image as 8-bit, which saturates it). The longer side is
``int(224 * long / short)`` (torchvision's rule, also CLIPImageProcessor's) and the crop offset
``round((size_in - 224) / 2)`` (torchvision). What differs:

- PIL rounds each pass to 8 bits; we stay in float (rounding would kill the gradient). Against
  open_clip's own transform on 8-bit inputs the result is within one 8-bit step per pixel
  (tests/rewards/test_preprocess.py holds it to that, for up- and downsampling, even on noise).
- CLIPImageProcessor (PickScore) floors the crop offset instead of rounding it, so for an odd
  margin its crop sits one pixel higher/further left.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


# open_clip.constants.OPENAI_DATASET_MEAN / _STD (transformers' OPENAI_CLIP_MEAN / _STD are the same
# numbers). Copied rather than imported: importing open_clip costs ~2 s, and PickScore needs no open_clip.
# tests/rewards/test_preprocess.py holds them equal to both libraries' constants.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SIZE = 224


# ---------------------------------------------------------------------------------------------
# Images and prompts
# ---------------------------------------------------------------------------------------------


def check_images(images: torch.Tensor) -> None:
    """Raise ValueError unless ``images`` is a floating [B, 3, H, W] tensor with B >= 1."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor [B, 3, H, W], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise ValueError(f"images must be [B, 3, H, W] with B >= 1, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")


def clip_preprocess(images: torch.Tensor, size: int = CLIP_SIZE,
                    mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """CLIP's evaluation transform in torch, differentiable in ``images``.

    images: [B, 3, H, W] in [0, 1], any H, W (up- or downsampled as needed).
    Returns [B, 3, size, size] float32, normalised: (x - mean) / std per channel.
    Steps: resize the shorter side to ``size`` (bicubic, antialiased, width then height, each pass
    clamped to [0, 1] as PIL does), centre-crop ``size`` x ``size``, normalise. See the module
    docstring for what differs from PIL.
    """
    check_images(images)
    x = images.float()
    h, w = x.shape[-2:]
    # torchvision's Resize(int): shorter side -> size, longer side -> int(size * long / short).
    if h <= w:
        new_h, new_w = size, int(size * w / h)
    else:
        new_h, new_w = int(size * h / w), size
    # PIL's order: horizontal pass, then vertical, each saturated to the valid range.
    if new_w != w:
        x = F.interpolate(x, size=(h, new_w), mode="bicubic", align_corners=False, antialias=True).clamp(0.0, 1.0)
    if new_h != h:
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True).clamp(0.0, 1.0)
    # torchvision's CenterCrop: offsets round((in - out) / 2).
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    x = x[..., top:top + size, left:left + size]
    mean_t = x.new_tensor(mean).view(1, 3, 1, 1)
    std_t = x.new_tensor(std).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def broadcast_prompts(prompts: str | Sequence[str], batch: int) -> list[str]:
    """One prompt per image: a single string (or a 1-list) is repeated ``batch`` times."""
    if isinstance(prompts, str):
        return [prompts] * batch
    prompts = list(prompts)
    if not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be strings, got {[type(p).__name__ for p in prompts]}")
    if len(prompts) == 1:
        return prompts * batch
    if len(prompts) != batch:
        raise ValueError(f"got {len(prompts)} prompts for {batch} images; pass one prompt or one per image")
    return prompts
