"""Fetch ahead of time every checkpoint a preset and its rewards need, so a host can run offline.

``required_files(preset, rewards)`` lists (hub repo, file) pairs; ``status`` says which are in the
Hugging Face cache; ``fetch`` downloads the missing ones with ``hf_hub_download`` (progress bars from
huggingface_hub). After that, ``HF_HUB_OFFLINE=1`` runs never touch the network. The cache is
huggingface_hub's own ($HF_HOME / $HF_HUB_CACHE, ~/.cache/huggingface by default).
"""

from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

File = Tuple[str, str]  # (repo id, path in the repo)

SD_COMPONENT_FILES = (
    "model_index.json", "scheduler/scheduler_config.json",
    "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
    "text_encoder/config.json", "text_encoder/model.safetensors",
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
)
TAESD_FILES = ("config.json", "diffusion_pytorch_model.safetensors")


def reward_files(name: str) -> List[File]:
    """The hub files reward ``name`` loads with its default weights ([] for the shapes rewards)."""
    from .rewards.aesthetic import AESTHETIC_FILE, AESTHETIC_REPO
    from .rewards.clip_score import CLIP_REPO, OPEN_CLIP_FILES
    from .rewards.hpsv2 import HPS_FILES, HPS_REPO
    from .rewards.pickscore import PICKSCORE_FILES, PICKSCORE_REPO, PICKSCORE_TOKENIZER, TOKENIZER_FILES

    table = {
        "hpsv2": [(HPS_REPO, HPS_FILES["v2.1"])],
        "pickscore": [(PICKSCORE_REPO, f) for f in PICKSCORE_FILES] + [(PICKSCORE_TOKENIZER, f) for f in TOKENIZER_FILES],
        "aesthetic": [(AESTHETIC_REPO, AESTHETIC_FILE), (CLIP_REPO, OPEN_CLIP_FILES[0])],
        "clip": [(CLIP_REPO, OPEN_CLIP_FILES[0])],
        "shapes-warm": [], "shapes-cool": [],
    }
    if name not in table:
        raise ValueError(f"unknown reward {name!r}; known rewards: {', '.join(sorted(table))}")
    return table[name]


def required_files(preset: str, rewards: Sequence[str], model: str = "", taesd: str = "") -> List[File]:
    """Every (repo, file) the preset's prior and the given rewards load, without duplicates."""
    files: List[File] = []
    if preset == "sd":
        from .priors.stable_diffusion import DEFAULT_MODEL, DEFAULT_TAESD

        files += [(model or DEFAULT_MODEL, f) for f in SD_COMPONENT_FILES]
        files += [(taesd or DEFAULT_TAESD, f) for f in TAESD_FILES]
    elif preset != "shapes":
        raise ValueError(f"preset {preset!r} is unknown; choose shapes or sd")
    for name in rewards:
        files += reward_files(name)
    return list(dict.fromkeys(files))


def status(files: Iterable[File]) -> Tuple[List[File], List[File]]:
    """(present, missing) in the local Hugging Face cache; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    present, missing = [], []
    for repo, name in files:
        (present if isinstance(try_to_load_from_cache(repo, name), str) else missing).append((repo, name))
    return present, missing


def fetch(files: Iterable[File]) -> List[Tuple[File, str]]:
    """Download ``files`` into the cache; returns the ones that failed with the reason."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    failed = []
    for repo, name in files:
        try:
            hf_hub_download(repo, name)
        except (OSError, EntryNotFoundError) as e:  # offline, gated, absent repo or file: report, go on
            failed.append(((repo, name), f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
    return failed
