"""Shared test set-up: offline hub libraries, bounded torch threads, seeded generators."""

import os

# Forced, not setdefault: tests must never reach the network, whatever the caller's shell says.
# Set before anything imports huggingface_hub / transformers / diffusers, which read them at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import pytest  # noqa: E402
import torch  # noqa: E402

# Small CPU tensors gain nothing from many threads, and big CI hosts get oversubscribed.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(4, os.cpu_count() or 1)))


@pytest.fixture
def generator() -> torch.Generator:
    """A CPU torch.Generator seeded with 0, fresh for each test."""
    return torch.Generator().manual_seed(0)
