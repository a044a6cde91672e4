"""Shared test set-up: offline hub libraries, bounded torch threads, seeded generators."""

import os

# Forced, not setdefault: tests must never reach the network, whatever the caller's shell says.
# Set before anything imports huggingface_hub / transformers / diffusers, which read them at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
# Tests run on the CPU even on a GPU host (their exactness and determinism checks assume CPU
# arithmetic; gsplat's backward uses atomic adds). Tests marked ``cuda`` ask for "cuda" explicitly.
os.environ["PSD_GS_DEVICE"] = "cpu"

import pytest  # noqa: E402
import torch  # noqa: E402

# Small CPU tensors gain nothing from many threads, and big CI hosts get oversubscribed; with pytest-xdist
# the cores are shared among its workers.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or max(1, min(4, (os.cpu_count() or 1) // WORKERS))))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` need a CUDA GPU: skipped, with the reason shown, where there is none."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `make test` on a GPU host)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """Deterministic CPU arithmetic for the tests that compare two runs bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def generator() -> torch.Generator:
    """A CPU torch.Generator seeded with 0, fresh for each test."""
    return torch.Generator().manual_seed(0)
