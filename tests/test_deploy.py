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


def test_the_app_user_gets_uid_1000_on_ubuntu_24_04_bases():
    """nvidia/cuda:*-ubuntu24.04 already has user "ubuntu" with uid 1000: useradd --uid 1000 alone exits 4."""
    lines = dockerfile()
    base = next(line for line in lines if line.startswith("FROM"))
    run = next(line for line in lines if line.startswith("RUN") and "useradd" in line)
    assert "--uid 1000" in run
    if "ubuntu24.04" in base or "ubuntu:24.04" in base:
        assert "userdel ubuntu" in run and run.index("userdel ubuntu") < run.index("useradd")
        assert re.search(r"if id -u ubuntu .*; then userdel ubuntu", run)  # only where the user exists


def test_cuda_arch_list_and_build_jobs_are_build_args():
    lines = dockerfile()
    args = {line.split()[1].split("=")[0]: line.split("=", 1)[1].strip('"') for line in lines
            if line.startswith("ARG") and "=" in line}
    assert args["TORCH_CUDA_ARCH_LIST"].endswith("+PTX")  # newer GPUs still run, from PTX
    for cc in ("8.0", "8.6", "8.9", "9.0"):
        assert cc in args["TORCH_CUDA_ARCH_LIST"]
    assert int(args["MAX_JOBS"]) >= 1
    env = " ".join(line for line in lines if line.startswith("ENV"))
    assert "TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST}" in env and "MAX_JOBS=${MAX_JOBS}" in env


def test_runs_live_on_a_named_volume_the_app_user_owns():
    """A bind-mounted ./runs that does not exist is created by the Docker daemon as root."""
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    mount = next(v for v in compose["services"]["psd-gs"]["volumes"] if v.endswith(":/data/runs"))
    name = mount.split(":")[0]
    assert not name.startswith((".", "/")) and name in compose["volumes"]
    assert any("/data/runs" in line and "chown -R psd:psd" in line for line in dockerfile())
