"""Fixtures: tiny checkpoints in the real formats (written once per session) and the rewards loaded from them."""

import pytest
import torch

from psd_gs.doctor.tiny import build_tiny_hps
from tests.rewards.tiny import bpe_clip_tokenizer, load_tiny, tiny_clip_config, tiny_open_clip


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory):
    """Checkpoints in the real formats, one per reward family, written once per session."""
    from transformers import CLIPModel

    root = tmp_path_factory.mktemp("reward_weights")
    # HPSv2: torch.save({"state_dict": open_clip state dict}), named as on the hub.
    build_tiny_hps(root / "hps", seed=1)
    # CLIP (OpenAI, QuickGELU): an open_clip state dict as safetensors, named as on the hub.
    from safetensors.torch import save_file

    clip = tiny_open_clip(seed=2, quick_gelu=True)
    (root / "clip").mkdir()
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()},
              str(root / "clip" / "open_clip_model.safetensors"))
    # Aesthetic MLP: a bare state dict (layers.N.*), as trl-lib/ddpo-aesthetic-predictor's aesthetic-model.pth.
    from psd_gs.rewards.aesthetic import AestheticMLP

    torch.manual_seed(3)
    (root / "aesthetic").mkdir()
    torch.save(AestheticMLP(input_size=32).state_dict(), root / "aesthetic" / "aesthetic-model.pth")
    # PickScore: CLIPModel.save_pretrained (config.json + model.safetensors) and a tokenizer folder.
    torch.manual_seed(4)
    CLIPModel(tiny_clip_config()).save_pretrained(root / "pickscore")
    bpe_clip_tokenizer().save_pretrained(root / "tokenizer")
    return root


@pytest.fixture(scope="session")
def tiny_rewards(weights_dir):
    """All four rewards, loaded once per session."""
    return {name: load_tiny(name, weights_dir) for name in ("hpsv2", "clip", "aesthetic", "pickscore")}


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache (tests are offline), so hub ids resolve to MissingWeightsError."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"
