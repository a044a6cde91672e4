"""What can be checked by reading the Dockerfile and compose.yaml (Docker cannot run here)."""

import re
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def dockerfile():
    text = (REPO / "Dockerfile").read_text()
    return [line.strip() for line in re.sub(r"\\\n", " ", text).splitlines() if line.strip() and not line.startswith("#")]


def app_port() -> int:
    return int(re.search(r'"--port", type=int, default=(\d+)', (REPO / "app.py").read_text()).group(1))


def test_base_image_cuda_matches_the_torch_pin():
    base = next(line.split()[1] for line in dockerfile() if line.startswith("FROM"))
    m = re.match(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-(cudnn-)?devel-ubuntu", base)
    assert m, f"expected a CUDA devel image, got {base}"
    pin = re.search(r"^torch==(\S+)", (REPO / "requirements.txt").read_text(), re.M).group(1)
    assert torch.__version__.startswith(pin)  # the torch installed from the pin here ...
    assert f"{m.group(1)}.{m.group(2)}" == torch.version.cuda  # ... is built for the image's CUDA


def test_requirements_installed_from_the_file_and_kernels_built_at_build_time():
    lines = dockerfile()
    assert any("COPY requirements.txt" in line for line in lines)
    assert any(re.search(r"pip install -r /app/requirements.txt", line) for line in lines)
    arch = next(line for line in lines if "TORCH_CUDA_ARCH_LIST" in line)
    for cc in ("8.0", "8.6", "8.9", "9.0"):
        assert cc in arch
    assert any("from gsplat.cuda._backend import _C" in line for line in lines)


def test_runs_as_a_non_root_user_on_the_apps_port():
    lines = dockerfile()
    users = [line.split()[1] for line in lines if line.startswith("USER")]
    assert users and users[-1] not in ("root", "0")
    assert f"EXPOSE {app_port()}" in lines
    cmd = next(line for line in lines if line.startswith("CMD"))
    assert '"0.0.0.0"' in cmd and f'"{app_port()}"' in cmd
    health = next(line for line in lines if line.startswith("HEALTHCHECK"))
    assert f"127.0.0.1:{app_port()}" in health
    assert any(line.startswith("ENV") and "HF_HOME=/data/hf" in line for line in lines)


def test_compose_reserves_one_gpu_and_mounts_cache_and_runs():
    svc = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]["psd-gs"]
    assert svc["ports"] == [f"{app_port()}:{app_port()}"]
    gpu = svc["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["count"] == 1 and "gpu" in gpu["capabilities"]
    mounts = {v.split(":")[1] for v in svc["volumes"]}
    assert {"/data/hf", "/data/runs"} <= mounts
    assert svc["environment"]["HF_HUB_OFFLINE"] == "1"
