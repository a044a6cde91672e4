"""Train a small text-to-image latent diffusion model in Stable Diffusion's own classes on the shapes world,
and save it as a diffusers folder that ``StableDiffusionPipeline.from_pretrained`` and the ``sd`` prior's
loader read as they read SD 2.1 (docs/design.md section 10).

Stages, each resumable from its checkpoint in ``work`` (rerunning the command goes on where it stopped):

1. data: ``train_poses`` random poses x 12 objects at 64 px, and ``val_poses`` held-out poses
   (``psd_gs.train.data``), kept in ``work/data.pt``.
2. VAE: ``AutoencoderKL``, spatial factor 4 (64 px -> 4 x 16 x 16), trained on MSE in [-1, 1] plus a
   small KL term (SD's autoencoder also keeps its KL weight tiny: the latent is nearly deterministic).
3. latents: the posterior mean and std of every training image; the scaling factor is 1 / std of the
   latents, as SD's 0.18215 was chosen, so the diffusion model sees unit-variance data.
4. diffusion: ``UNet2DConditionModel`` with cross-attention on a ``CLIPTextModel``'s last hidden states
   (both trained from scratch, together), SD's noise schedule (scaled_linear 0.00085 -> 0.012, 1000
   steps, epsilon), caption dropout for classifier-free guidance, min-SNR loss weighting (gamma 5),
   AdamW with warm-up and cosine decay, EMA of the weights (what is saved).
5. export: ``StableDiffusionPipeline.save_pretrained`` (safetensors) with a ``DDIMScheduler``, then the
   loss curve (loss.png), a sample grid (samples.png) and the numbers for the model card (train.json).

Every random draw of step s comes from generators seeded by (seed, stage, s), so a resumed run continues
exactly as an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .base import Trainer, _gen, _load, _save
from .data import Renders, caption, render_poses, vocabulary
from .recipe import PriorRecipe
from .tokenizer import write_tokenizer

SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type="epsilon")


def build_vae(r: PriorRecipe):
    from diffusers import AutoencoderKL

    n = len(r.vae_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(r.vae_channels),
                         layers_per_block=1, latent_channels=4, sample_size=r.resolution,
                         mid_block_add_attention=False)


def build_text_encoder(r: PriorRecipe, vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=r.text_width,
                                        intermediate_size=4 * r.text_width, num_hidden_layers=2,
                                        num_attention_heads=4, max_position_embeddings=77,
                                        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                                        pad_token_id=vocab_size - 1))


def build_unet(r: PriorRecipe, factor: int):
    """Attention at the two coarser levels only (at 16 x 16 it cost twice the time: bench in the model card)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=r.resolution // factor, in_channels=4, out_channels=4,
                                block_out_channels=tuple(r.unet_channels), layers_per_block=1,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                                cross_attention_dim=r.text_width, attention_head_dim=8, use_linear_projection=True)


class PriorTrainer(Trainer):
    """Runs the stages into ``work`` and writes the model to ``out`` (``Trainer``: log, checkpoints, budget)."""

    def __init__(self, out: str | Path, work: str | Path, recipe: PriorRecipe = PriorRecipe(),
                 log: Callable[[str], None] = print, save_every_s: float = 120.0, budget_s: Optional[float] = None):
        super().__init__(out, work, recipe, log, save_every_s, budget_s)

    # ---- 1. data --------------------------------------------------------------------------------
    def data(self) -> Dict[str, Renders]:
        path = self.work / "data.pt"
        saved = _load(path)
        if saved is None or saved["recipe"] != [self.r.seed, self.r.resolution, self.r.train_poses, self.r.val_poses]:
            t0 = time.perf_counter()
            bar = tqdm(total=self.r.train_poses + self.r.val_poses, desc="renders (poses)", unit="pose")
            sets, offset = {}, 0
            for name, n, seed in (("train", self.r.train_poses, self.r.seed),
                                  ("val", self.r.val_poses, 10_000 + self.r.seed)):
                sets[name] = render_poses(n, seed, self.r.resolution,
                                          progress=lambda done, _, o=offset: bar.update(o + done - bar.n))
                offset += n
            bar.close()
            saved = {"recipe": [self.r.seed, self.r.resolution, self.r.train_poses, self.r.val_poses]}
            for name, s in sets.items():
                saved[name] = {"images": s.images, "objects": s.objects, "poses": s.poses}
            _save(saved, path)
            self.log(f"data: {len(sets['train'])} training and {len(sets['val'])} held-out renders in "
                     f"{time.perf_counter() - t0:.0f} s")
        return {name: Renders(**saved[name]) for name in ("train", "val")}

    # ---- 2. VAE ---------------------------------------------------------------------------------
    def vae(self, data: Dict[str, Renders]):
        r, path = self.r, self.work / "vae.pt"
        torch.manual_seed(r.seed)
        vae = build_vae(r)
        opt = torch.optim.AdamW(vae.parameters(), lr=r.vae_lr, weight_decay=0.0)
        from diffusers.optimization import get_scheduler

        sched = get_scheduler("cosine", opt, num_warmup_steps=50, num_training_steps=r.vae_steps)
        state = _load(path) or {"step": 0, "losses": [], "seconds": 0.0}
        if state["step"]:
            vae.load_state_dict(state["model"]), opt.load_state_dict(state["opt"]), sched.load_state_dict(state["sched"])
        train = data["train"]
        bar = tqdm(total=r.vae_steps, initial=state["step"], desc="VAE", unit="step")
        t0, last = time.perf_counter() - state["seconds"], time.perf_counter()
        vae.train()
        for step in range(state["step"], r.vae_steps):
            g = _gen(r.seed, 2, step)
            idx = torch.randint(0, len(train), (r.vae_batch,), generator=g)
            x = train.float_images(idx) * 2 - 1
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
            rec = vae.decode(z).sample
            mse = F.mse_loss(rec, x)
            loss = mse + r.kl_weight * post.kl().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step(), sched.step()
            state["losses"].append(mse.item())
            bar.update(1), bar.set_postfix(mse=f"{mse.item():.4f}")
            state["step"] = step + 1
            if self._due(last, state["step"] == r.vae_steps):
                state.update(model=vae.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(),
                             seconds=time.perf_counter() - t0)
                _save(state, path)
                last = self._pause_if_spent(state["step"] < r.vae_steps, "VAE", state["step"])
        bar.close()
        vae.eval().requires_grad_(False)
        val = data["val"]
        with torch.no_grad():
            x = val.float_images(slice(None)) * 2 - 1
            rec = torch.cat([vae.decode(vae.encode(x[i:i + 64]).latent_dist.mean).sample for i in range(0, len(x), 64)])
        mse = F.mse_loss(((rec + 1) / 2).clamp(0, 1), (x + 1) / 2).item()
        self.stats["vae"] = {"steps": r.vae_steps, "seconds": round(state["seconds"]), "val_psnr_db":
                             round(-10 * math.log10(mse), 2), "params": sum(p.numel() for p in vae.parameters())}
        self.stats["vae_losses"] = state["losses"]
        self.log(f"VAE: held-out reconstruction {self.stats['vae']['val_psnr_db']} dB after {r.vae_steps} steps")
        return vae

    # ---- 3. latents -----------------------------------------------------------------------------
    @torch.no_grad()
    def latents(self, vae, train: Renders):
        means, stds = [], []
        for i in range(0, len(train), 128):
            post = vae.encode(train.float_images(slice(i, i + 128)) * 2 - 1).latent_dist
            means.append(post.mean), stds.append(post.std)
        mean, std = torch.cat(means), torch.cat(stds)
        sample = mean + std * torch.randn(mean.shape, generator=_gen(self.r.seed, 3, 0))
        scale = float(1.0 / sample.std())
        vae.register_to_config(scaling_factor=scale)
        self.stats["scaling_factor"] = scale
        self.log(f"latents: {tuple(mean.shape)}, scaling factor 1/std = {scale:.4f}")
        return mean, std

    # ---- 4. diffusion model ---------------------------------------------------------------------
    def diffusion(self, mean: torch.Tensor, std: torch.Tensor, train: Renders, factor: int):
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel, compute_snr
        from transformers import CLIPTokenizer

        r, path = self.r, self.work / "unet.pt"
        vocab = write_tokenizer(self.work / "tokenizer", vocabulary(self.world))
        tokenizer = CLIPTokenizer.from_pretrained(self.work / "tokenizer")
        torch.manual_seed(r.seed + 1)
        text, unet = build_text_encoder(r, vocab), build_unet(r, factor)
        params = list(unet.parameters()) + list(text.parameters())
        opt = torch.optim.AdamW(params, lr=r.lr, weight_decay=1e-2)
        sched = get_scheduler("cosine", opt, num_warmup_steps=r.warmup, num_training_steps=r.unet_steps)
        ema = EMAModel(params, decay=r.ema_decay, use_ema_warmup=True, power=0.75)
        noise_sched = DDPMScheduler(**SCHEDULE)
        state = _load(path) or {"step": 0, "losses": [], "seconds": 0.0}
        if state["step"]:
            unet.load_state_dict(state["unet"]), text.load_state_dict(state["text"])
            opt.load_state_dict(state["opt"]), sched.load_state_dict(state["sched"]), ema.load_state_dict(state["ema"])
        ids_of: Dict[str, torch.Tensor] = {}

        def ids(texts: List[str]) -> torch.Tensor:
            for t in set(texts) - set(ids_of):
                ids_of[t] = tokenizer(t, padding="max_length", max_length=77, truncation=True,
                                      return_tensors="pt").input_ids[0]
            return torch.stack([ids_of[t] for t in texts])

        scale = self.stats["scaling_factor"]
        bar = tqdm(total=r.unet_steps, initial=state["step"], desc="UNet + text encoder", unit="step")
        t0, last = time.perf_counter() - state["seconds"], time.perf_counter()
        unet.train(), text.train()
        for step in range(state["step"], r.unet_steps):
            g, rng = _gen(r.seed, 4, step), random.Random(r.seed * 1_000_003 + step)
            idx = torch.randint(0, len(train), (r.batch,), generator=g)
            z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * scale
            texts = ["" if rng.random() < r.caption_dropout else caption(self.world, int(k), rng)
                     for k in train.objects[idx]]
            t = torch.randint(0, SCHEDULE["num_train_timesteps"], (r.batch,), generator=g)
            noise = torch.randn(z0.shape, generator=g)
            z_t = noise_sched.add_noise(z0, noise, t)
            eps = unet(z_t, t, encoder_hidden_states=text(ids(texts)).last_hidden_state).sample
            snr = compute_snr(noise_sched, t)
            weight = torch.clamp(snr, max=r.snr_gamma) / snr  # min-SNR for epsilon prediction
            per_sample = (eps - noise).square().mean(dim=(1, 2, 3))
            loss = (weight * per_sample).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step(), sched.step(), ema.step(params)
            state["losses"].append(per_sample.mean().item())
            bar.update(1), bar.set_postfix(loss=f"{state['losses'][-1]:.4f}")
            state["step"] = step + 1
            if self._due(last, state["step"] == r.unet_steps):
                state.update(unet=unet.state_dict(), text=text.state_dict(), opt=opt.state_dict(),
                             sched=sched.state_dict(), ema=ema.state_dict(), seconds=time.perf_counter() - t0)
                _save(state, path)
                last = self._pause_if_spent(state["step"] < r.unet_steps, "UNet", state["step"])
        bar.close()
        ema.copy_to(params)
        self.stats["unet"] = {"steps": r.unet_steps, "seconds": round(state["seconds"]),
                              "params": sum(p.numel() for p in unet.parameters()),
                              "text_params": sum(p.numel() for p in text.parameters()),
                              "final_loss": round(sum(state["losses"][-100:]) / min(100, len(state["losses"])), 4)}
        self.stats["unet_losses"] = state["losses"]
        return unet.eval(), text.eval(), tokenizer

    # ---- 5. export ------------------------------------------------------------------------------
    def export(self, vae, unet, text, tokenizer) -> Path:
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        scheduler = DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.save_pretrained(self.out, safe_serialization=True)
        losses = {"VAE (MSE)": self.stats.pop("vae_losses"), "diffusion (eps MSE)": self.stats.pop("unet_losses")}
        save_loss_curve(losses, self.out / "loss.png")
        info = {"recipe": asdict(self.r), **self.stats}
        (self.out / "train.json").write_text(json.dumps(info, indent=2))
        self.log(f"saved the pipeline to {self.out}")
        return self.out

    def run(self) -> Path:
        data = self.data()
        vae = self.vae(data)
        factor = 2 ** (len(self.r.vae_channels) - 1)
        mean, std = self.latents(vae, data["train"])
        unet, text, tokenizer = self.diffusion(mean, std, data["train"], factor)
        return self.export(vae, unet, text, tokenizer)


def save_loss_curve(losses: Dict[str, List[float]], path: Path) -> None:
    """One panel per stage: the per-step loss (faint) and its 50-step running mean, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(losses), figsize=(5 * len(losses), 3.2))
    for ax, (name, values) in zip(axes, losses.items()):
        v = torch.tensor(values)
        smooth = torch.nn.functional.avg_pool1d(v[None, None], 50, 1).flatten() if len(v) >= 50 else v
        ax.plot(v.numpy(), alpha=0.25, lw=0.6)
        ax.plot(range(len(v) - len(smooth), len(v)), smooth.numpy(), lw=1.5)
        ax.set_yscale("log"), ax.set_title(name), ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
