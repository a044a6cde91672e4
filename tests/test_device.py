"""One device rule: "auto" follows $PSD_GS_DEVICE, so the test suite stays on the CPU on a GPU host."""

import pytest
import torch

from psd_gs.device import resolve_device, to_device


def test_the_suite_runs_on_the_cpu_even_where_cuda_is_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device() == torch.device("cpu")  # conftest sets PSD_GS_DEVICE=cpu
    assert resolve_device("auto") == torch.device("cpu")
    from psd_gs.rewards.clip_like import resolve_device as rewards_rule
    from psd_gs.priors.stable_diffusion import resolve_device as prior_rule

    assert rewards_rule is resolve_device and prior_rule is resolve_device  # one rule everywhere


def test_auto_picks_cuda_when_available_and_unset(monkeypatch):
    monkeypatch.delenv("PSD_GS_DEVICE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None) == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_cuda_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available.*use cpu or auto"):
        resolve_device("cuda")


def test_to_device_on_the_cpu_is_a_plain_move():
    t = torch.arange(3.0)
    assert to_device(t, torch.device("cpu")) is t
