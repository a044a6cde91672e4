"""Fetch ahead of time every checkpoint a prior and its rewards need, so a host can run offline.

``required_files(prior, rewards)`` lists (hub repo, file) pairs from the registry entries
(``psd_gs.registry``: each prior's and reward's ``files``); ``status`` says which are in the Hugging
Face cache; ``fetch`` downloads the missing ones with ``hf_hub_download`` (progress bars from
huggingface_hub). After that, ``HF_HUB_OFFLINE=1`` runs never touch the network. The cache is
huggingface_hub's own ($HF_HOME / $HF_HUB_CACHE, ~/.cache/huggingface by default).
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

from ..config import PriorConfig
from ..registry import PRIORS, REWARDS, resolve

File = Tuple[str, str]  # (repo id, path in the repo)


def prior_files(prior: PriorConfig) -> List[File]:
    """The hub files ``prior`` loads ([] for a prior without weights, or one read from a local folder)."""
    if prior.name not in PRIORS:
        raise ValueError(f"prior {prior.name!r} is unknown; choose one of {', '.join(PRIORS)}")
    ref = PRIORS[prior.name].files
    return list(resolve(ref)(prior)) if ref else []


def reward_files(name: str) -> List[File]:
    """The hub files reward ``name`` loads with its default weights ([] for the shapes rewards)."""
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; known rewards: {', '.join(sorted(REWARDS))}")
    ref = REWARDS[name].files
    return list(resolve(ref)()) if ref else []


def required_files(prior: Optional[PriorConfig], rewards: Sequence[str]) -> List[File]:
    """Every (repo, file) ``prior`` (None: no prior) and the given rewards load, without duplicates."""
    files = prior_files(prior) if prior is not None else []
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
