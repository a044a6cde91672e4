"""Weight resolution (local file / folder / hub cache) and weights-only loading."""

import pickle

import pytest
import torch
from huggingface_hub.errors import EntryNotFoundError
from safetensors.torch import save_file

from psd_gs.priors.base import MissingWeightsError
from psd_gs.rewards.weights import load_state_dict, resolve_folder, resolve_weights

EXECUTED = []


def _side_effect():
    EXECUTED.append(True)
    return "pwned"


class Payload:
    """Unpickling this calls ``_side_effect``: exactly what weights_only=True must refuse."""

    def __reduce__(self):
        return (_side_effect, ())


def fake_hub_file(cache, repo_id: str, filename: str, content: bytes | None = None, path=None):
    """Put a file into a Hugging Face cache the way hf_hub_download leaves it (offline lookups find it)."""
    commit = "0" * 40
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    target = repo_dir / "snapshots" / commit / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    if path is not None:
        target.write_bytes(path.read_bytes())
    else:
        target.write_bytes(content or b"")
    return target


def test_local_file_and_folder(tmp_path):
    f = tmp_path / "weights.pt"
    f.write_bytes(b"x")
    assert resolve_weights(f, "ignored.pt", "clip") == f
    (tmp_path / "b.bin").write_bytes(b"x")
    (tmp_path / "a.safetensors").write_bytes(b"x")
    # the first name in order of preference that the folder holds
    assert resolve_weights(tmp_path, ["a.safetensors", "b.bin"], "clip") == tmp_path / "a.safetensors"
    assert resolve_weights(tmp_path, ["c.safetensors", "b.bin"], "clip") == tmp_path / "b.bin"
    with pytest.raises(FileNotFoundError, match="holds none of"):
        resolve_weights(tmp_path, ["c.pt"], "clip")
    with pytest.raises(FileNotFoundError, match="neither an existing file or folder nor a Hugging Face repo id"):
        resolve_weights(tmp_path / "missing" / "w.pt", "w.pt", "clip")


def test_uncached_hub_file_raises_missing_weights_with_hint(empty_hub_cache):
    with pytest.raises(MissingWeightsError) as info:
        resolve_weights("psd-gs-test/absent", ["first.safetensors", "second.bin"], "hpsv2")
    msg = str(info.value)
    for part in ("'psd-gs-test/absent'", "first.safetensors or second.bin", "fetch-weights --rewards hpsv2",
                 "hf download psd-gs-test/absent first.safetensors"):
        assert part in msg
    assert isinstance(info.value.__cause__, EntryNotFoundError)  # the hub's own error is kept


def test_cached_hub_file_resolves_offline_in_order_of_preference(empty_hub_cache):
    only_bin = fake_hub_file(empty_hub_cache, "psd-gs-test/cached", "second.bin", b"x")
    found = resolve_weights("psd-gs-test/cached", ["first.safetensors", "second.bin"], "clip")
    assert found.resolve() == only_bin.resolve()
    fake_hub_file(empty_hub_cache, "psd-gs-test/cached", "config.json", b"{}")
    folder = resolve_folder("psd-gs-test/cached", ["config.json", "second.bin"], "pickscore")
    assert (folder / "config.json").is_file() and (folder / "second.bin").is_file()
    with pytest.raises(MissingWeightsError, match="model.safetensors"):
        resolve_folder("psd-gs-test/cached", ["config.json", "model.safetensors"], "pickscore")


def test_pickled_objects_are_refused_and_never_run(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "extra": Payload()}, path)
    EXECUTED.clear()
    with pytest.raises(pickle.UnpicklingError, match="weights_only=True"):
        load_state_dict(path, key="state_dict")
    assert EXECUTED == []


def test_state_dict_forms(tmp_path):
    w = {"a.weight": torch.randn(2, 3), "b": torch.zeros(1)}
    torch.save({"state_dict": w, "epoch": 3, "name": "run"}, tmp_path / "wrapped.pt")
    torch.save({f"module.{k}": v for k, v in w.items()}, tmp_path / "ddp.pt")
    save_file(w, str(tmp_path / "w.safetensors"))
    for name, key in (("wrapped.pt", "state_dict"), ("ddp.pt", None), ("w.safetensors", "state_dict")):
        got = load_state_dict(tmp_path / name, key=key)
        assert got.keys() == w.keys() and all(torch.equal(got[k], w[k]) for k in w)
    torch.save({"epoch": 3}, tmp_path / "not_weights.pt")
    with pytest.raises(ValueError, match="not a state dict"):
        load_state_dict(tmp_path / "not_weights.pt", key="state_dict")
