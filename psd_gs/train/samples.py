"""What a trained prior makes in 2D, judged by the shapes world: samples from ``StableDiffusionPipeline``, the
nearest reference render of each (over the world's 12 objects at the 120 poses of the training pose grid),
and whether that object is one the prompt allows. Also writes the model card's sample grid and text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from ..priors.shapes_world import ShapesWorld
from .data import vocabulary

#: partial prompts sampled beside the twelve object prompts (each allows several objects)
PARTIAL_PROMPTS = ("a cube", "a sphere", "a torus", "a cone", "red shapes", "blue shapes", "a green object",
                   "a yellow thing", "an orange shape", "a purple object", "a shape", "objects")


def eval_prompts(world: ShapesWorld, seeds_per_object: int = 3) -> List[Tuple[str, int]]:
    """(prompt, seed): every object prompt ``seeds_per_object`` times, then each partial prompt once (48)."""
    pairs = [(f"a {o.color} {o.shape}", s) for s in range(seeds_per_object) for o in world.objects]
    return pairs + [(p, 100 + i) for i, p in enumerate(PARTIAL_PROMPTS)]


@torch.no_grad()
def sample(pipe, prompts: Sequence[str], seeds: Sequence[int], steps: int = 50, guidance_scale: float = 7.5,
           batch: int = 16) -> torch.Tensor:
    """Images [N, 3, H, W] in [0, 1] from ``pipe`` (a StableDiffusionPipeline with its DDIM scheduler), one per
    (prompt, seed), each from its own seeded generator (the same image whatever the batch)."""
    out = []
    for i in range(0, len(prompts), batch):
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds[i:i + batch]]
        res = pipe(list(prompts[i:i + batch]), num_inference_steps=steps, guidance_scale=guidance_scale,
                   generator=gens, output_type="pt", return_dict=True)
        out.append(res.images.float().clamp(0, 1))
    return torch.cat(out)


@torch.no_grad()
def reference_renders(resolution: int = 64) -> torch.Tensor:
    """Every object at every pose of the shapes preset's training grid: [P, K, 3, H, W] in [0, 1]."""
    from ..config import preset
    from ..priors.analytic import AnalyticPrior
    from ..scene.cameras import make_cameras, orbit_grid

    cfg = preset("shapes")
    el, az = orbit_grid(cfg.camera.elevation, *cfg.prior.options["pose_grid"])
    cams = make_cameras(el, az, cfg.camera.radius[0], cfg.camera.fovy[0], resolution, resolution)
    prior = AnalyticPrior()
    rgb = torch.cat([prior.render_objects(cams[i:i + 8]) for i in range(0, len(cams), 8)])  # [P, K, H, W, 3]
    return rgb.clamp(0, 1).permute(0, 1, 4, 2, 3).contiguous()


def nearest_objects(images: torch.Tensor, refs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """For images [N, 3, H, W]: the object index [N] of the nearest reference render (refs [P, K, 3, H, W], by
    mean squared error over any pose) and that PSNR [N] in dB."""
    flat = refs.flatten(2)  # [P, K, D]
    best_k, best_mse = [], []
    for img in images:
        mse = (flat - img.flatten()[None, None]).square().mean(-1)  # [P, K]
        per_object = mse.amin(0)
        best_k.append(int(per_object.argmin())), best_mse.append(float(per_object.min()))
    mse = torch.tensor(best_mse).clamp_min(1e-10)
    return torch.tensor(best_k), -10 * torch.log10(mse)


def judge(images: torch.Tensor, prompts: Sequence[str], refs: torch.Tensor, world: ShapesWorld) -> Dict[str, object]:
    """The share of images whose nearest reference object the prompt allows, with per-sample detail."""
    nearest, db = nearest_objects(images, refs)
    rows = [{"prompt": p, "nearest": world.objects[int(k)].name, "psnr": round(float(d), 2),
             "allowed": int(k) in world.select(p)} for p, k, d in zip(prompts, nearest, db)]
    ok = sum(r["allowed"] for r in rows)
    return {"allowed": ok, "total": len(rows), "share": ok / len(rows), "samples": rows}


def grid_image(images: torch.Tensor, columns: int) -> np.ndarray:
    """images [N, 3, H, W] in [0, 1] as one uint8 grid [rows H, columns W, 3] (white where none)."""
    n, _, h, w = images.shape
    rows = -(-n // columns)
    canvas = torch.ones(rows * h, columns * w, 3)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = img.permute(1, 2, 0)
    return (canvas * 255).round().to(torch.uint8).numpy()


def write_samples(folder: str | Path, guidance_scale: float = 7.5, steps: int = 50) -> Dict[str, object]:
    """Sample the 48 evaluation prompts from the pipeline in ``folder``, judge them, and write samples.png
    (rows: the 12 objects x 3 seeds, then the partial prompts), samples.json and the model card README.md."""
    import imageio.v3 as iio
    from diffusers import StableDiffusionPipeline

    folder = Path(folder)
    world = ShapesWorld()
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    pairs = eval_prompts(world)
    prompts, seeds = [p for p, _ in pairs], [s for _, s in pairs]
    images = sample(pipe, prompts, seeds, steps=steps, guidance_scale=guidance_scale)
    result = judge(images, prompts, reference_renders(images.shape[-1]), world)
    result.update(guidance_scale=guidance_scale, steps=steps, scheduler="DDIM")
    iio.imwrite(folder / "samples.png", grid_image(images, 12))
    (folder / "samples.json").write_text(json.dumps(result, indent=2))
    (folder / "README.md").write_text(model_card(json.loads((folder / "train.json").read_text()), result))
    return result


def model_card(train: Dict[str, object], samples: Dict[str, object]) -> str:
    """The model card's text from train.json and samples.json."""
    r, vae, unet = train["recipe"], train["vae"], train["unet"]
    minutes = (vae["seconds"] + unet["seconds"]) / 60
    n_words = len(vocabulary(ShapesWorld()))
    return f"""# psd-gs learned prior: a small Stable Diffusion trained on the shapes world

A text-to-image latent diffusion model in Stable Diffusion's own classes, trained here on a CPU so that
psd-gs's real SD code path (tokenizer, CLIP text encoder, UNet with classifier-free guidance, the
scheduler's alphas, VAE encoding and decoding) runs end to end with learned weights. It knows only the
shapes world: twelve coloured objects (cube, sphere, torus, cone) on a white background.
`StableDiffusionPipeline.from_pretrained(this_folder)` samples from it; psd-gs runs it as the `learned` prior.

Reproduce: `python -m psd_gs train-prior` (seed {r["seed"]}; rerun to resume), then this card and the grid are
written by the same command.

## Data
- {r["train_poses"]} random poses x 12 objects = {12 * r["train_poses"]} renders at {r["resolution"]} px, from the
  shapes preset's training cameras (elevation -10..45 degrees, any azimuth, radius 2, fov-y 49.1, white
  background); {r["val_poses"]} held-out poses (seed + 10000) for the VAE's validation.
- Captions from the world's grammar: colour and shape ("a red cube"), shape only ("a cube"), colour only
  ("red shapes"), any ("an object"); {r["caption_dropout"]:.0%} dropped to "" for classifier-free guidance.

## Architecture
- `AutoencoderKL`: channels {tuple(r["vae_channels"])}, spatial factor 4 (64 px -> 4 x 16 x 16), no mid-block
  attention; {vae["params"] / 1e6:.2f}M parameters; scaling factor {train["scaling_factor"]:.4f} (1 / std of the
  training latents, as SD's 0.18215).
- `UNet2DConditionModel`: channels {tuple(r["unet_channels"])}, cross-attention at 8 x 8 and 4 x 4 and in the
  mid block on the text encoder's last hidden states; {unet["params"] / 1e6:.2f}M parameters.
- `CLIPTextModel`: width {r["text_width"]}, 2 layers, 77 tokens; {unet["text_params"] / 1e6:.2f}M parameters.
  `CLIPTokenizer`: CLIP's byte-level BPE with merges learned on the world's {n_words} words.
- Scheduler: SD's (scaled_linear 0.00085 -> 0.012, 1000 steps, epsilon prediction), saved as `DDIMScheduler`.

## Training (2 CPU cores)
- VAE: {vae["steps"]} steps of {r["vae_batch"]} images, MSE + {r["kl_weight"]:g} KL, {vae["seconds"] / 60:.1f} min;
  held-out reconstruction {vae["val_psnr_db"]} dB.
- UNet and text encoder together: {unet["steps"]} steps of {r["batch"]}, AdamW {r["lr"]:g} (warm-up {r["warmup"]},
  cosine), min-SNR weighting (gamma {r["snr_gamma"]:g}), EMA {r["ema_decay"]} (saved); {unet["seconds"] / 60:.1f} min;
  final loss (mean of the last 100 steps, unweighted eps MSE) {unet["final_loss"]}.
- Total training time {minutes:.0f} min. Loss curves: `loss.png`.

## Samples
`samples.png`: DDIM {samples["steps"]} steps, guidance scale {samples["guidance_scale"]:g}. Rows 1-3: the twelve
object prompts with seeds 0, 1, 2; row 4: {", ".join(f'"{p}"' for p in PARTIAL_PROMPTS)}.
Judged by the nearest reference render (12 objects x 120 poses of the training grid): **{samples["allowed"]} of
{samples["total"]} ({samples["share"]:.0%}) are an object their prompt allows** (`samples.json`).

## Limits
It has seen only the twelve objects on white at 64 px; any other word is refused by psd-gs before it loads.
"""
