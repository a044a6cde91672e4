"""Fixtures: tiny checkpoints in the real formats (written once per session) and the rewards loaded from them."""

import pytest

from tests.rewards.tiny import load_tiny, write_tiny_weights


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory):
    """Checkpoints in the real formats, one per reward family, written once per session."""
    return write_tiny_weights(tmp_path_factory.mktemp("reward_weights"))


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
