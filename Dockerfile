# psd-gs on a GPU host. Build: docker build -t psd-gs .   Run: docker compose up   (README "Deploy")
#
# CUDA 13.0 matches the pinned torch==2.14.1 wheels (cu130, requirements.txt); the devel image brings
# nvcc, which gsplat needs to compile its kernels. Python 3.11 as in development (deadsnakes PPA).
FROM nvidia/cuda:13.0.2-devel-ubuntu24.04

# GPU architectures gsplat's kernels are compiled for (A100, A10/3090, L4/L40/4090, H100, B200,
# RTX 50xx); "+PTX" also embeds PTX for the newest one, so a newer GPU still runs (JIT at first use).
# Narrow it to your GPU for a faster build: --build-arg TORCH_CUDA_ARCH_LIST="9.0".
ARG TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0;10.0;12.0+PTX"
# Parallel compile jobs: each nvcc job takes a few GB of RAM; lower it on small builders
# (--build-arg MAX_JOBS=2) rather than have the build killed.
ARG MAX_JOBS=4

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/data/hf \
    TORCH_EXTENSIONS_DIR=/opt/torch_extensions \
    TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST} \
    MAX_JOBS=${MAX_JOBS} \
    GRADIO_ANALYTICS_ENABLED=False

RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common ca-certificates curl \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev build-essential ninja-build \
 && rm -rf /var/lib/apt/lists/*

# A non-root user (uid 1000) owns the app, the compiled kernels and the data volumes. Ubuntu 24.04
# images already have a user "ubuntu" with uid/gid 1000 (useradd would exit 4, "UID 1000 is not
# unique"): remove it first, where it exists.
RUN if id -u ubuntu >/dev/null 2>&1; then userdel ubuntu && rm -rf /home/ubuntu; fi \
 && if getent group 1000 >/dev/null; then groupdel "$(getent group 1000 | cut -d: -f1)"; fi \
 && useradd --create-home --uid 1000 --user-group psd \
 && mkdir -p /app /data/hf /data/runs /opt/torch_extensions \
 && chown -R psd:psd /app /data /opt/torch_extensions

# Dependencies first, from the pinned file, so code changes do not reinstall them.
COPY requirements.txt /app/requirements.txt
RUN python3.11 -m venv /opt/venv \
 && /opt/venv/bin/pip install -r /app/requirements.txt
ENV PATH=/opt/venv/bin:$PATH

# Compile gsplat's CUDA kernels now, for every architecture in TORCH_CUDA_ARCH_LIST (A100, A10/3090,
# L4/L40/4090, H100, B200, RTX 50xx), so the first request does not wait minutes for the JIT build.
USER psd
RUN python -c "from gsplat.cuda._backend import _C; assert _C is not None, 'gsplat CUDA kernels did not build'"

# The app itself, installed as a package (its `psd-gs` command; the dependencies are already in).
USER root
COPY --chown=psd:psd . /app
RUN pip install --no-deps --no-build-isolation -e /app
USER psd
WORKDIR /app

VOLUME ["/data"]
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD curl -fsS http://127.0.0.1:7860/ > /dev/null || exit 1
CMD ["python", "app.py", "--host", "0.0.0.0", "--port", "7860", "--runs", "/data/runs"]
