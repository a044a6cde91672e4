"""Tiny random checkpoints saved to disk, loaded back through the same loaders as real weights.

The tests and ``python -m psd_gs doctor`` use them to run the real code paths (SD prior, rewards,
guidance) without any download. Every component is built from a config with random weights
(``torch.manual_seed(0)``, so builds are deterministic) and written with ``save_pretrained`` or
``torch.save``, in the same folder layout or file format as the hub checkpoint.

Tiny Stable Diffusion (``build_tiny_sd``): VAE with 2 blocks (spatial factor 2) and a UNet with
sample_size 8, so the prior's resolution is 16 and latents are [B, 4, 8, 8]; CLIP text model with
hidden size 32 over a byte-level vocabulary of 514 tokens (every byte with and without "</w>", no
merges, then <|startoftext|> and <|endoftext|> like CLIP's own ordering). Tiny TAESD
(``build_tiny_taesd``): the same 4 latent channels and spatial factor 2. Tiny open_clip models
(``tiny_open_clip``, ``build_tiny_hps``): the real 49408-token vocabulary and 224 px input with a
56 px patch and width 32; ``build_tiny_hps`` writes one as an HPS v2.1 checkpoint file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from ..train.tokenizer import write_tokenizer

TINY_RESOLUTION = 16  # vae factor 2 * unet sample_size 8
TINY_LATENT = (4, 8, 8)  # [C, h, w]
TINY_EMB_DIM = 32  # CLIP hidden size == UNet cross_attention_dim


def _write_tokenizer(folder: Path) -> int:
    """vocab.json / merges.txt / tokenizer_config.json as in SD checkpoints; returns the vocab size."""
    return write_tokenizer(folder)


def build_tiny_sd(folder: str | Path, prediction_type: str = "epsilon") -> Path:
    """Write a tiny random Stable Diffusion checkpoint to ``folder``; returns the folder.

    Layout: unet/, vae/, text_encoder/, tokenizer/, scheduler/, model_index.json. The scheduler is
    SD's (scaled-linear betas 0.00085..0.012, 1000 steps) with the given ``prediction_type``.
    """
    folder = Path(folder)
    torch.manual_seed(0)
    vocab_size = _write_tokenizer(folder / "tokenizer")
    text_config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TINY_EMB_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    CLIPTextModel(text_config).save_pretrained(folder / "text_encoder")
    UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TINY_EMB_DIM,
        attention_head_dim=(2, 4),
        use_linear_projection=True,  # as in SD 2.x
    ).save_pretrained(folder / "unet")
    AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(32, 64),
        latent_channels=4,
        sample_size=TINY_RESOLUTION,
    ).save_pretrained(folder / "vae")
    DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        prediction_type=prediction_type,
    ).save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def build_tiny_taesd(folder: str | Path) -> Path:
    """Write a tiny random AutoencoderTiny (4 latent channels, spatial factor 2) to ``folder``."""
    folder = Path(folder)
    torch.manual_seed(0)
    AutoencoderTiny(
        encoder_block_out_channels=(16, 16),
        decoder_block_out_channels=(16, 16),
        num_encoder_blocks=(1, 1),  # one stride-2 conv: factor 2
        num_decoder_blocks=(1, 1),  # one 2x upsample: factor 2
        upsampling_scaling_factor=2,
        latent_channels=4,
    ).save_pretrained(folder)
    return folder


TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "head_width": 16, "patch_size": 56},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def tiny_open_clip(seed: int = 0, quick_gelu: bool = False):
    """A tiny random open_clip CLIP (TINY_OPEN_CLIP) in eval mode."""
    import open_clip

    torch.manual_seed(seed)
    return open_clip.CLIP(**TINY_OPEN_CLIP, quick_gelu=quick_gelu).eval()


def build_tiny_hps(folder: str | Path, seed: int = 1) -> Path:
    """Write a tiny open_clip model as ``HPS_v2.1_compressed.pt`` ({"state_dict": ...}, as on the hub)
    into ``folder``; load it with ``load_reward("hpsv2", weights=folder, model_config=TINY_OPEN_CLIP)``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": tiny_open_clip(seed=seed).state_dict()}, path)
    return path
