"""Per-component FLOP counts of the real Stable Diffusion 2.1 base pipeline and the reward towers.

Every module is built from the config dicts below on the meta device (`with torch.device("meta")`):
no weights, no hub access, no memory. Each forward (and where asked, backward) is run on meta
tensors under `torch.utils.flop_counter.FlopCounterMode`, per single sample (batch 1), at a 512x512
image / 64x64x4 latent, and 224x224 for the reward image towers.

What is counted: only the ops FlopCounterMode has formulas for, i.e. matmuls (mm, addmm, bmm,
baddbmm), convolutions (forward and backward) and fused attention kernels; a multiply-add counts as 2
FLOPs. Not counted: normalisation, activations, softmax, residual adds, up/down-sampling
interpolation, resizing and normalising the reward input. `uncounted_elements` gives a rough size
for those (output elements of every other non-view op); they are memory-bound, not compute-bound.

Backward passes are taken with all weights frozen (requires_grad False), so they count only the
gradient with respect to the input asked for (grad_input of convs/matmuls, no grad_weight):
- unet_bwd_emb: backward of one noise prediction to encoder_hidden_states (the learned negative),
- vae_enc_bwd: backward of the VAE encoder to the 512x512 image (SDS's only backward),
- <tower>_bwd_img: backward of a reward image tower to its 224x224 input (reward-gradient baseline).
A backward count is (forward+backward) minus the forward of the same call.

On meta tensors `F.scaled_dot_product_attention` falls back to the math path, so attention shows up
as two bmm's per head group (QK^T and AV); the FLOPs are those of a fused kernel.

Command (prints the table): `.venv/bin/python bench/flops.py`
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

# ---------------------------------------------------------------------------------------------
# Configs (written out here; they match the hub configs of stabilityai/stable-diffusion-2-1-base,
# madebyollin/taesd and the open_clip model_configs ViT-H-14.json / ViT-L-14.json).
# ---------------------------------------------------------------------------------------------

SD21_BASE_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[320, 640, 1280, 1280],
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=1024,
    attention_head_dim=[5, 10, 20, 20],
    use_linear_projection=True,
    dual_cross_attention=False,
    upcast_attention=False,
)

SD21_BASE_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)

# OpenCLIP ViT-H/14 text tower as SD 2.x uses it: penultimate layer, so 23 of its 24 layers.
SD21_BASE_TEXT = dict(
    vocab_size=49408,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=512,
)

TAESD = dict()  # diffusers AutoencoderTiny() defaults are the TAESD (SD 1/2) architecture

# open_clip vision towers (image side only; the text side is cached per prompt).
OPENCLIP_VIT_H_14 = dict(embed_dim=1024, vision_cfg=dict(image_size=224, layers=32, width=1280, head_width=80, patch_size=14))
OPENCLIP_VIT_L_14 = dict(embed_dim=768, vision_cfg=dict(image_size=224, layers=24, width=1024, patch_size=14))

REWARD_TOWERS = {
    "hpsv2": OPENCLIP_VIT_H_14,  # HPSv2.1: open_clip ViT-H-14
    "pickscore": OPENCLIP_VIT_H_14,  # PickScore: ViT-H-14 as well
    "aesthetic": OPENCLIP_VIT_L_14,  # LAION aesthetic / CLIP score: ViT-L-14 (+ a tiny MLP, not counted)
}

IMAGE = 512
LATENT = 64
REWARD_INPUT = 224
TOKENS = 77

_VIEW_OPS = {
    "view", "_unsafe_view", "reshape", "transpose", "permute", "t", "expand", "unsqueeze", "squeeze",
    "slice", "select", "split", "split_with_sizes", "chunk", "unbind", "as_strided", "alias", "detach",
    "empty", "empty_like", "empty_strided", "zeros", "zeros_like", "ones_like", "full", "new_empty",
    "new_zeros", "new_empty_strided", "lift_fresh", "_to_copy", "clone", "contiguous", "arange",
    "copy_", "fill_", "scalar_tensor", "_local_scalar_dense", "embedding", "index", "sym_size",
    "_reshape_alias", "unfold", "narrow", "cat",
}


class _ElementCounter(TorchDispatchMode):
    """Sums output elements of every op FlopCounterMode does not count, views/copies excluded."""

    def __init__(self):
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket not in flop_registry and func.overloadpacket.__name__ not in _VIEW_OPS:
            for o in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(o, torch.Tensor):
                    self.elements += o.numel()
        return out


def _count(fn) -> tuple[int, int]:
    """(FLOPs, uncounted output elements) of fn() on meta tensors."""
    with FlopCounterMode(display=False) as fc:
        fn()
    with _ElementCounter() as ec:
        fn()
    return fc.get_total_flops(), ec.elements


def _frozen(module: torch.nn.Module) -> torch.nn.Module:
    module.requires_grad_(False)
    return module.eval()


def build_unet():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return _frozen(UNet2DConditionModel.from_config(SD21_BASE_UNET))


def build_vae():
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        return _frozen(AutoencoderKL.from_config(SD21_BASE_VAE))


def build_taesd():
    from diffusers import AutoencoderTiny

    with torch.device("meta"):
        return _frozen(AutoencoderTiny.from_config(TAESD))


def build_text():
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        return _frozen(CLIPTextModel(CLIPTextConfig(**SD21_BASE_TEXT)))


def build_tower(cfg: dict):
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    with torch.device("meta"):
        return _frozen(_build_vision_tower(cfg["embed_dim"], CLIPVisionCfg(**cfg["vision_cfg"])))


def _meta(*shape, grad=False):
    return torch.randn(*shape, device="meta", requires_grad=grad)


def _fwd_bwd(fn, x):
    """Forward and backward of fn(x) to x (weights frozen)."""

    def run():
        y = fn(x)
        y.backward(torch.ones_like(y))

    return run


def component_flops(verbose: bool = False) -> dict[str, dict]:
    """name -> {"flops": int, "elements": int, "params": int, "note": str}, per sample (batch 1)."""
    out: dict[str, dict] = {}

    def add(name, counted, params, note):
        out[name] = dict(flops=counted[0], elements=counted[1], params=params, note=note)
        if verbose:
            print(f"  {name:22s} {counted[0] / 1e12:8.4f} TFLOP", flush=True)

    nparam = lambda m: sum(p.numel() for p in m.parameters())

    unet = build_unet()
    z, t = _meta(1, 4, LATENT, LATENT), torch.full((1,), 500, device="meta", dtype=torch.long)
    emb = _meta(1, TOKENS, 1024)
    emb_g = _meta(1, TOKENS, 1024, grad=True)
    with torch.no_grad():
        fwd = _count(lambda: unet(z, t, emb).sample)
    add("unet_fwd", fwd, nparam(unet), "one noise prediction, 64x64 latent, 77x1024 context")
    both = _count(_fwd_bwd(lambda e: unet(z, t, e).sample, emb_g))
    add("unet_fwd_bwd_emb", both, nparam(unet), "forward + backward to encoder_hidden_states")
    add("unet_bwd_emb", (both[0] - fwd[0], both[1] - fwd[1]), nparam(unet), "backward to encoder_hidden_states only")
    del unet

    vae = build_vae()
    img = _meta(1, 3, IMAGE, IMAGE)
    img_g = _meta(1, 3, IMAGE, IMAGE, grad=True)
    enc = lambda x: vae.encode(x).latent_dist.mean
    with torch.no_grad():
        fwd = _count(lambda: enc(img))
    add("vae_enc_fwd", fwd, nparam(vae.encoder) + nparam(vae.quant_conv), "512^2 image -> 64^2 latent (encoder + quant_conv)")
    both = _count(_fwd_bwd(enc, img_g))
    add("vae_enc_bwd", (both[0] - fwd[0], both[1] - fwd[1]), nparam(vae.encoder), "backward to the image only")
    with torch.no_grad():
        dec = _count(lambda: vae.decode(z).sample)
    add("vae_dec_fwd", dec, nparam(vae.decoder) + nparam(vae.post_quant_conv), "64^2 latent -> 512^2 image")
    del vae

    taesd = build_taesd()
    with torch.no_grad():
        dec = _count(lambda: taesd.decode(z).sample)
    add("taesd_dec_fwd", dec, nparam(taesd.decoder), "TAESD decoder, 64^2 latent -> 512^2 image")
    del taesd

    text = build_text()
    ids = torch.zeros(1, TOKENS, dtype=torch.long, device="meta")
    with torch.no_grad():
        fwd = _count(lambda: text(ids).last_hidden_state)
    add("text_fwd", fwd, nparam(text), "CLIP text (OpenCLIP ViT-H, 23 layers), 77 tokens; cached per prompt")
    del text

    towers: dict[int, tuple] = {}
    for name, cfg in REWARD_TOWERS.items():
        key = id(cfg)
        if key not in towers:
            tower = build_tower(cfg)
            x = _meta(1, 3, REWARD_INPUT, REWARD_INPUT)
            xg = _meta(1, 3, REWARD_INPUT, REWARD_INPUT, grad=True)
            with torch.no_grad():
                fwd = _count(lambda: tower(x))
            both = _count(_fwd_bwd(tower, xg))
            towers[key] = (fwd, (both[0] - fwd[0], both[1] - fwd[1]), nparam(tower))
            del tower
        fwd, bwd, n = towers[key]
        arch = "ViT-H-14" if cfg is OPENCLIP_VIT_H_14 else "ViT-L-14"
        add(f"{name}_fwd", fwd, n, f"open_clip {arch} image tower at 224^2")
        add(f"{name}_bwd_img", bwd, n, "backward to the 224^2 input only")

    # Reward preprocessing (512^2 -> 224^2 resize, normalise): not matmul/conv, so FlopCounterMode
    # gives 0; analytic: bicubic 16 taps x 2 FLOPs + normalise 2 FLOPs per output element.
    pre = 3 * REWARD_INPUT * REWARD_INPUT * (16 * 2 + 2)
    out["reward_preprocess"] = dict(flops=0, elements=3 * REWARD_INPUT**2, params=0,
                                    note=f"resize+normalise: counted 0; analytic ~{pre / 1e6:.1f} MFLOP")
    return out


def print_table(comps: dict[str, dict]) -> None:
    print(f"| component | TFLOP / sample | uncounted out. elements (M) | params (M) | what |")
    print("|---|---:|---:|---:|---|")
    for name, c in comps.items():
        print(f"| {name} | {c['flops'] / 1e12:.4f} | {c['elements'] / 1e6:.0f} | {c['params'] / 1e6:.1f} | {c['note']} |")


if __name__ == "__main__":
    print_table(component_flops())
