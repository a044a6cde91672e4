"""The DiffusionPrior contract (docs/design.md section 2) that guidance methods are written against.

A prior works in its own latent space: ``encode_images`` maps renders to latents z0, the noise
model predicts eps on z_t = sqrt(a_t) z0 + sqrt(1 - a_t) eps, and ``decode_latents`` maps latents
back to images. Prompt embeddings are whatever the prior conditions on (Stable Diffusion: CLIP text
hidden states [1, 77, D]; the shapes prior: logits over its objects [1, K]); guidance only batches,
mixes and optimises them, so they must be float tensors with a leading batch dimension of 1.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional, Tuple

import torch

from ..scene.cameras import Cameras


class MissingWeightsError(RuntimeError):
    """A checkpoint is neither in the local cache nor reachable; the message says how to fetch it."""


class DiffusionPrior(ABC):
    """Frozen noise-prediction model with its encoder/decoder and noise schedule.

    Attributes:
        alphas_cumprod: [T] float32 on ``device``, a_t = prod_{s<=t} (1 - beta_s), decreasing in t.
        num_train_timesteps: T; timesteps are integers in [0, T).
        device: where the models run; inputs are moved there.
    """

    alphas_cumprod: torch.Tensor
    num_train_timesteps: int
    device: torch.device

    #: the fixed pose grid (n_elevation, n_azimuth) the prior can be trained on, or None for any pose;
    #: the loop draws training cameras from ``cameras.orbit_grid`` when it is set
    pose_grid: Optional[Tuple[int, int]] = None

    def prepare(self, cfg) -> None:
        """Get ready for the run ``cfg`` (a RunConfig) before its first step; default: nothing. Keep it short
        (a run cannot be stopped inside it): work that takes long belongs in the steps, as the shapes prior
        renders its pose grid pose by pose as the run's cameras reach them.

        The shapes prior registers its pose grid at each resolution of the run and reads its disk cache."""

    def status(self) -> str:
        """One line for people about work the prior is still doing for the current run ("" when none): the
        shapes prior says how much of its pose grid is rendered. The app shows it beside the step count."""
        return ""

    @abstractmethod
    def encode_prompt(self, text: str) -> torch.Tensor:
        """Embedding [1, ...] (float32, no grad) of ``text``; "" is the unconditional embedding."""

    @abstractmethod
    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb [B, 3, H, W] in [0, 1] -> latents z0 [B, C, h, w] (float32), differentiable in rgb."""

    @abstractmethod
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """latents [B, C, h, w] -> rgb [B, 3, H', W'] in [0, 1] (float32). Used without grad."""

    @abstractmethod
    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, cameras: Cameras) -> torch.Tensor:
        """eps_hat [M, C, h, w] (float32) for noisy latents z_t [M, C, h, w] at integer timesteps t [M]
        under embeddings emb [M, ...], seen from ``cameras`` (V views; M is a stack of V-view blocks:
        sample i belongs to view i % V). Differentiable in ``emb`` (the adaptive negative needs it);
        the prior's own weights are frozen. Stable Diffusion ignores the cameras; the shapes prior
        conditions on them; a multi-view prior would embed them."""
