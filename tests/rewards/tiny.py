"""Tiny random reward models, saved the way the real checkpoints are and loaded back through the real loaders.

open_clip models (HPSv2, CLIP, the aesthetic predictor's image tower) keep the real text vocabulary
(49408, open_clip's bundled BPE) and the real 224 input with a 56-pixel patch (16 patches) and
width 32. PickScore's transformers CLIPModel is as small, and its tokenizer is a CLIPTokenizer
built from the same bundled BPE (the laion tokenizer cannot be downloaded here; the ids agree with
open_clip's, see test_pickscore_tokenizer_matches_open_clip).
"""

import gzip

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
