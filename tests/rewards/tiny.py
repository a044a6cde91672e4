"""Tiny random reward models, saved the way the real checkpoints are and loaded back through the real loaders.

open_clip models (HPSv2, CLIP, the aesthetic predictor's image tower) keep the real text vocabulary
(49408, open_clip's bundled BPE) and the real 224 input with a 56-pixel patch (16 patches) and
width 32. PickScore's transformers CLIPModel is as small, and its tokenizer is a CLIPTokenizer
built from the same bundled BPE (the laion tokenizer cannot be downloaded here; the ids agree with
open_clip's, see test_pickscore_tokenizer_matches_open_clip).
"""

import gzip
from pathlib import Path

import torch

from psd_gs.doctor.tiny import TINY_OPEN_CLIP, tiny_open_clip  # noqa: F401 (re-exported for the tests)


def bpe_clip_tokenizer():
    """A transformers CLIPTokenizer with open_clip's bundled BPE vocabulary (49408 tokens)."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={v: i for i, v in enumerate(vocab)}, merges=merges)


def tiny_clip_config():
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 77},
        vision_config={"image_size": 224, "patch_size": 56, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 2},
        projection_dim=32,
    )


def load_tiny(name: str, weights_dir, **kwargs):
    """Reward ``name`` from the tiny checkpoints, through ``load_reward`` and the real factories."""
    from psd_gs.rewards import load_reward

    if name == "hpsv2":
        return load_reward("hpsv2", device="cpu", weights=weights_dir / "hps", model_config=TINY_OPEN_CLIP, **kwargs)
    if name == "clip":
        return load_reward("clip", device="cpu", weights=weights_dir / "clip",
                           model_config={**TINY_OPEN_CLIP, "quick_gelu": True}, **kwargs)
    if name == "aesthetic":
        return load_reward("aesthetic", device="cpu", weights=weights_dir / "aesthetic",
                           clip_weights=weights_dir / "clip", model_config={**TINY_OPEN_CLIP, "quick_gelu": True},
                           **kwargs)
    if name == "pickscore":
        return load_reward("pickscore", device="cpu", weights=weights_dir / "pickscore",
                           tokenizer=weights_dir / "tokenizer", **kwargs)
    raise KeyError(name)


def write_tiny_weights(root: Path) -> Path:
    """One tiny checkpoint per reward family under ``root``, each in its real file format; returns root."""
    from safetensors.torch import save_file
    from transformers import CLIPModel

    from psd_gs.doctor.tiny import build_tiny_hps
    from psd_gs.rewards.aesthetic import AestheticMLP

    # HPSv2: torch.save({"state_dict": open_clip state dict}), named as on the hub.
    build_tiny_hps(root / "hps", seed=1)
    # CLIP (OpenAI, QuickGELU): an open_clip state dict as safetensors, named as on the hub.
    clip = tiny_open_clip(seed=2, quick_gelu=True)
    (root / "clip").mkdir()
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()},
              str(root / "clip" / "open_clip_model.safetensors"))
    # Aesthetic MLP: a bare state dict (layers.N.*), as trl-lib/ddpo-aesthetic-predictor's aesthetic-model.pth.
    torch.manual_seed(3)
    (root / "aesthetic").mkdir()
    torch.save(AestheticMLP(input_size=32).state_dict(), root / "aesthetic" / "aesthetic-model.pth")
    # PickScore: CLIPModel.save_pretrained (config.json + model.safetensors) and a tokenizer folder.
    torch.manual_seed(4)
    CLIPModel(tiny_clip_config()).save_pretrained(root / "pickscore")
    bpe_clip_tokenizer().save_pretrained(root / "tokenizer")
    return root
