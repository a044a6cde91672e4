"""CLIP score: cosine similarity of CLIP ViT-L/14 (OpenAI weights) image and prompt embeddings.

Also home of what the open_clip-based rewards share (HPSv2 reuses ``OpenClipReward`` as is, the
aesthetic predictor reuses ``load_open_clip``).

Scale: the score is the plain cosine, in [-1, 1]. CLIPScore as published (Hessel et al. 2021) is
2.5 * max(cos, 0) and torchmetrics reports 100 * max(cos, 0); the clamp would zero the gradient of
badly matching images and the factor only rescales, so neither is applied here.

Weights: open_clip 3.x serves the OpenAI ViT-L/14 checkpoint from the hub repo
``timm/vit_large_patch14_clip_224.openai`` (open_clip's pretrained tag "openai" for "ViT-L-14";
the weights moved there in open_clip PR #970), as ``open_clip_model.safetensors`` or
``open_clip_pytorch_model.bin`` (open_clip's own order of preference). OpenAI's CLIP was trained
with QuickGELU; open_clip's plain "ViT-L-14" config uses nn.GELU and only *warns* about the
mismatch when built with ``pretrained="openai"``, so the default architecture here is
"ViT-L-14-quickgelu" (same shapes, the activation OpenAI trained with).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch

from .clip_like import ClipLikeReward
from .weights import load_into, load_state_dict, resolve_weights

CLIP_REPO = "timm/vit_large_patch14_clip_224.openai"
# open_clip's names for a full CLIP checkpoint on the hub, in its order of preference.
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
CLIP_MODEL_NAME = "ViT-L-14-quickgelu"


def weight_files() -> list[tuple[str, str]]:
    """The hub file the default "clip" reward loads."""
    return [(CLIP_REPO, OPEN_CLIP_FILES[0])]


def build_open_clip(model_name: str = CLIP_MODEL_NAME,
                    model_config: Mapping[str, Any] | None = None) -> tuple[torch.nn.Module, Any]:
    """A randomly initialised open_clip CLIP model and its tokenizer (no weights are loaded).

    model_name: an open_clip config name ("ViT-H-14", "ViT-L-14-quickgelu", or one registered with
        ``open_clip.add_model_config``); ignored when ``model_config`` is given.
    model_config: an open_clip model config dict ({"embed_dim", "vision_cfg", "text_cfg",
        "quick_gelu"?}) as in open_clip's model_configs/*.json, or open_clip_config.json's
        {"model_cfg": ...}. Only the standard CLIP (built-in text tower) is supported; text uses
        open_clip's bundled BPE tokenizer, so text_cfg.vocab_size must be 49408.
    Returns (model, tokenizer); tokenizer(list of str) -> LongTensor [N, context_length].
    """
    import open_clip

    if model_config is None:
        model_config = open_clip.get_model_config(model_name)
        if model_config is None:
            raise ValueError(f"unknown open_clip model_name {model_name!r}; known: {open_clip.list_models()}")
    cfg = dict(model_config.get("model_cfg", model_config))
    text_cfg = dict(cfg.get("text_cfg", {}))
    if cfg.pop("custom_text", False) or "hf_model_name" in text_cfg or "multimodal_cfg" in cfg:
        raise ValueError("only standard open_clip CLIP configs (built-in text tower, BPE tokenizer) are supported")
    if text_cfg.get("vocab_size", 49408) != 49408:
        raise ValueError(f"text_cfg.vocab_size must be 49408 (open_clip's bundled BPE tokenizer), "
                         f"got {text_cfg['vocab_size']}")
    # What open_clip.create_model(model_name, pretrained=None) builds, minus its "initialized
    # randomly" warning (weights are loaded right after).
    model = open_clip.CLIP(**cfg)
    tokenizer = open_clip.SimpleTokenizer(context_length=text_cfg.get("context_length", 77))
    return model, tokenizer


def load_open_clip(weights: str | os.PathLike, filenames: str | Sequence[str], reward: str,
                   model_name: str, model_config: Mapping[str, Any] | None,
                   key: str | None = None) -> tuple[torch.nn.Module, Any]:
    """Resolve a full open_clip checkpoint, build the architecture, load it strictly.

    weights: hub repo id, local file, or local folder holding one of ``filenames``.
    key: the checkpoint's state-dict entry, if it wraps one (HPSv2: "state_dict").
    The file is resolved (MissingWeightsError if unavailable) before the model is built.
    """
    path = resolve_weights(weights, filenames, reward)
    state = load_state_dict(path, key=key)
    model, tokenizer = build_open_clip(model_name, model_config)
    load_into(model, state, path, reward)
    return model, tokenizer


class OpenClipReward(ClipLikeReward):
    """score = scale * cos(E_img(image), E_txt(prompt)) with a frozen open_clip CLIP model."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, name: str, scale: float = 1.0,
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        super().__init__(model, tokenizer, scale, device, dtype)
        self.name = name

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(prompts).to(self.device))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)


def load_clip_score(weights: str | os.PathLike = CLIP_REPO, *,
                    filename: str | Sequence[str] = OPEN_CLIP_FILES,
                    model_name: str = CLIP_MODEL_NAME, model_config: Mapping[str, Any] | None = None,
                    device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> OpenClipReward:
    """The "clip" reward: cosine of CLIP ViT-L/14 (OpenAI) image and prompt embeddings.

    weights: hub repo id (default: open_clip's home of the OpenAI weights), a local checkpoint file,
        or a folder holding one of ``filename``; an open_clip CLIP state dict (safetensors or
        torch.save, optionally wrapped in {"state_dict": ...}).
    filename: file name(s) to look for in the repo/folder, first found wins.
    model_name / model_config: the open_clip architecture (see ``build_open_clip``).
    device: None -> CUDA if available else CPU. dtype: None -> float16 on CUDA, float32 elsewhere.
    Raises MissingWeightsError if the hub file is neither cached nor downloadable.
    """
    model, tokenizer = load_open_clip(weights, filename, "clip", model_name, model_config, key="state_dict")
    return OpenClipReward(model, tokenizer, name="clip", device=device, dtype=dtype)
