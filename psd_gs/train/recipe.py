"""What the learned prior's training depends on (``PriorRecipe``), apart from its code: no torch here, so the
command line can list every field as an option without importing it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PriorRecipe:
    """Everything the training depends on (saved in train.json; the defaults made the shipped model)."""

    seed: int = 0
    resolution: int = 64
    train_poses: int = 500
    val_poses: int = 24
    vae_steps: int = 500
    vae_batch: int = 32
    vae_lr: float = 5e-4
    kl_weight: float = 1e-6
    unet_steps: int = 3600
    batch: int = 64
    lr: float = 5e-4
    warmup: int = 200
    caption_dropout: float = 0.1
    snr_gamma: float = 5.0
    ema_decay: float = 0.999
    text_width: int = 64
    unet_channels: tuple = (32, 64, 128)
    vae_channels: tuple = (32, 64, 64)


@dataclass
class RewardRecipe:
    """Everything the learned rewards' training depends on (saved in train.json; the defaults made the shipped
    checkpoints). Widths: the ViT's and the text transformer's; steps: the contrastive stage's and each
    preference stage's."""

    seed: int = 0
    train_poses: int = 300
    val_poses: int = 24
    clip_steps: int = 1500
    pref_steps: int = 800
    batch: int = 64
    lr: float = 5e-4
    warmup: int = 100
    embed_dim: int = 64
    vision_width: int = 64
    vision_layers: int = 3
    patch_size: int = 32
    text_width: int = 64
    text_layers: int = 2
    context_length: int = 32
