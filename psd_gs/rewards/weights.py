"""Model loading shared by the reward models: device and dtype defaults, freezing, weight files.

``resolve_weights`` turns "a hub repo id or a local file/folder" into a local file
(``huggingface_hub.hf_hub_download`` for repo ids) and raises ``MissingWeightsError`` saying how to
fetch it ahead of time; ``load_state_dict`` reads safetensors or ``torch.load(weights_only=True)``
and nothing else, so a checkpoint can never run code.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ..priors.base import MissingWeightsError

# A Hugging Face repo id: "owner/name" (letters, digits, "-", "_", "."), nothing else.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_dtype(dtype: torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None`` -> float16 on CUDA, float32 elsewhere (CPU half kernels are slow or missing)."""
    if dtype is not None:
        return dtype
    return torch.float16 if device.type == "cuda" else torch.float32


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """eval() mode and requires_grad False on every parameter; returns ``module``."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


# ---------------------------------------------------------------------------------------------
# Weight files
# ---------------------------------------------------------------------------------------------


def fetch_hint(reward: str, repo_id: str, filename: str) -> str:
    """How to get ``repo_id/filename`` into the local cache ahead of time."""
    return (f"Fetch it while online with `python -m psd_gs fetch-weights --rewards {reward}` or "
            f"`hf download {repo_id} {filename}`, or pass a local path instead of the repo id.")


def hub_file(repo_id: str, filenames: str | Sequence[str], reward: str) -> Path:
    """The first of ``filenames`` that ``hf_hub_download`` can provide from ``repo_id``.

    Uses the local cache when offline (HF_HUB_OFFLINE=1) or unreachable. Raises MissingWeightsError
    naming the repo and file(s), with the hub's error as the cause, when none is available.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    names = [filenames] if isinstance(filenames, str) else list(filenames)
    last: Exception | None = None
    for name in names:
        try:
            return Path(hf_hub_download(repo_id=repo_id, filename=name))
        except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError, HfHubHTTPError) as err:
            last = err  # LocalEntryNotFoundError (offline, not cached) is an EntryNotFoundError
    shown = " or ".join(names)
    raise MissingWeightsError(
        f"reward {reward!r}: {shown} from the Hugging Face repo {repo_id!r} is not in the local cache "
        f"and could not be downloaded. {fetch_hint(reward, repo_id, names[0])}") from last


def resolve_weights(source: str | os.PathLike, filenames: str | Sequence[str], reward: str) -> Path:
    """A local weight file from ``source``: a file, a folder holding one of ``filenames``, or a hub repo id.

    source: path to a file (used as is); path to a folder (the first of ``filenames`` found in it);
        otherwise a Hugging Face repo id "owner/name", resolved with ``hub_file``.
    Raises FileNotFoundError for a local folder without any of ``filenames`` or a path that does not
    exist and is not a repo id; MissingWeightsError for a repo file that is neither cached nor reachable.
    """
    names = [filenames] if isinstance(filenames, str) else list(filenames)
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"reward {reward!r}: folder {str(path)!r} holds none of {names}")
    if _REPO_ID.match(str(source)):
        return hub_file(str(source), names, reward)
    raise FileNotFoundError(f"reward {reward!r}: {str(source)!r} is neither an existing file or folder "
                            f"nor a Hugging Face repo id (owner/name)")


def resolve_folder(source: str | os.PathLike, required: Sequence[str], reward: str) -> Path:
    """A local folder for ``from_pretrained``: ``source`` itself, or a hub repo's cached snapshot.

    source: a local folder (used as is), or a hub repo id whose ``required`` files are fetched with
        ``hub_file`` (each may raise MissingWeightsError) into one snapshot folder, which is returned.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if _REPO_ID.match(str(source)):
        files = [hub_file(str(source), name, reward) for name in required]
        return files[0].parent
    raise FileNotFoundError(f"reward {reward!r}: {str(source)!r} is neither an existing folder "
                            f"nor a Hugging Face repo id (owner/name)")


def load_state_dict(path: str | os.PathLike, key: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors from a weight file, on the CPU, without ever unpickling code.

    path: ``*.safetensors`` (safetensors) or anything else (``torch.load(weights_only=True)``).
    key: if the file holds a dict with this entry (HPSv2 checkpoints: "state_dict"), return that.
    A leading "module." (DistributedDataParallel) is stripped from every key.
    Raises pickle.UnpicklingError when the file holds anything but tensors and plain containers.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        obj: object = load_file(str(path), device="cpu")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise pickle.UnpicklingError(
                f"refusing to load {str(path)!r}: it holds objects other than tensors and plain "
                f"containers, and weights are only ever loaded with torch.load(weights_only=True)") from err
    if key is not None and isinstance(obj, Mapping) and key in obj:
        obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{str(path)!r} is not a state dict (name -> tensor)"
                         + (f" nor a dict with a {key!r} state dict" if key else ""))
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_into(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike,
              reward: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)``, with a ValueError naming the file and the
    missing, unexpected and mis-shaped keys when the checkpoint does not fit the architecture."""
    own = module.state_dict()
    problems = {
        "missing keys": [k for k in own if k not in state_dict],
        "unexpected keys": [k for k in state_dict if k not in own],
        "shape mismatches": [f"{k}: {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
                             for k, v in own.items() if k in state_dict and state_dict[k].shape != v.shape],
    }
    if any(problems.values()):
        found = "; ".join(f"{what} {items[:6]}{' ...' if len(items) > 6 else ''}"
                          for what, items in problems.items() if items)
        raise ValueError(f"reward {reward!r}: {str(path)!r} does not fit the model architecture: {found}")
    module.load_state_dict(state_dict, strict=True)
