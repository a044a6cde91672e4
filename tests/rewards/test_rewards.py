"""The four reward models, built tiny with random weights, saved, and loaded back through the real loaders."""

import inspect
import pickle

import pytest
import torch
import torch.nn.functional as F

from psd_gs.priors.base import MissingWeightsError
from psd_gs.rewards import REWARDS, RewardModel, load_reward
from psd_gs.rewards.aesthetic import AestheticMLP, load_aesthetic
from psd_gs.rewards.clip_score import load_clip_score
from psd_gs.rewards.hpsv2 import load_hpsv2
from psd_gs.rewards.pickscore import load_pickscore
from psd_gs.rewards.preprocess import clip_preprocess
from tests.rewards.test_weights import EXECUTED, Payload, fake_hub_file
from tests.rewards.tiny import TINY_OPEN_CLIP, load_tiny, tiny_open_clip

NAMES = ["hpsv2", "clip", "aesthetic", "pickscore"]
TEXT_REWARDS = ["hpsv2", "clip", "pickscore"]
PROMPTS = ["a red cube", "a blue sphere on a table"]


@pytest.fixture(params=NAMES)
def named(request, tiny_rewards):
    return request.param, tiny_rewards[request.param]


# ---------------------------------------------------------------------------------------------
# The RewardModel contract, for every reward
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(224, 224), (64, 64), (100, 300), (300, 100), (513, 384)])
def test_score_shape_dtype_finite_any_size(named, hw, generator):
    name, reward = named
    assert isinstance(reward, RewardModel) and reward.name == name
    images = torch.rand(2, 3, *hw, generator=generator)
    s = reward.score(images, PROMPTS)
    assert s.shape == (2,) and s.dtype == torch.float32 and s.device == images.device
    assert torch.isfinite(s).all()


def test_deterministic(named, generator):
    _, reward = named
    images = torch.rand(3, 3, 96, 128, generator=generator)
    assert torch.equal(reward.score(images, "a cube"), reward.score(images.clone(), "a cube"))


def test_gradient_reaches_the_images(named, generator):
    _, reward = named
    images = torch.rand(2, 3, 80, 120, generator=generator, requires_grad=True)
    reward.score(images, PROMPTS).sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()
    assert images.grad.abs().sum() > 0


def test_frozen(named):
    _, reward = named
    modules = [m for m in vars(reward).values() if isinstance(m, torch.nn.Module)]
    assert modules
    for module in modules:
        assert not module.training
        assert all(not p.requires_grad for p in module.parameters())


def test_prompts_broadcast(named, generator):
    _, reward = named
    images = torch.rand(3, 3, 64, 64, generator=generator)
    one = reward.score(images, "a cube")
    torch.testing.assert_close(reward.score(images, ["a cube"]), one, rtol=0, atol=0)
    torch.testing.assert_close(reward.score(images, ["a cube"] * 3), one, rtol=0, atol=0)


@pytest.mark.parametrize("name", TEXT_REWARDS)
def test_prompt_matters_and_count_is_checked(tiny_rewards, name, generator):
    reward = tiny_rewards[name]
    images = torch.rand(2, 3, 64, 64, generator=generator)
    assert not torch.equal(reward.score(images, "a cube"), reward.score(images, "a teapot"))
    with pytest.raises(ValueError, match="3 prompts for 2 images"):
        reward.score(images, ["a", "b", "c"])


def test_aesthetic_ignores_the_prompt(tiny_rewards, generator):
    reward = tiny_rewards["aesthetic"]
    images = torch.rand(2, 3, 64, 64, generator=generator)
    assert torch.equal(reward.score(images, "a cube"), reward.score(images, ["x", "y"]))


@pytest.mark.parametrize("name", TEXT_REWARDS)
def test_text_features_cached_per_prompt(weights_dir, name, generator):
    reward = load_tiny(name, weights_dir)
    calls = []
    tokenize = reward.tokenizer

    def counting(texts, *args, **kwargs):
        calls.append(list(texts))
        return tokenize(texts, *args, **kwargs)

    reward.tokenizer = counting
    images = torch.rand(3, 3, 64, 64, generator=generator)
    first = reward.score(images, ["a", "b", "a"])
    assert calls == [["a", "b"]]  # each distinct prompt tokenised once
    assert torch.equal(reward.score(images, ["a", "b", "a"]), first)
    reward.score(images, ["b", "c", "a"])
    assert calls == [["a", "b"], ["c"]]


def test_bfloat16_model_still_returns_float32(weights_dir, generator):
    reward = load_tiny("hpsv2", weights_dir, dtype=torch.bfloat16)
    assert next(reward.model.parameters()).dtype == torch.bfloat16
    s = reward.score(torch.rand(2, 3, 64, 64, generator=generator), "a cube")
    assert s.dtype == torch.float32 and torch.isfinite(s).all()


# ---------------------------------------------------------------------------------------------
# Each loader loads the saved weights and computes its authors' formula
# ---------------------------------------------------------------------------------------------


def test_hpsv2_is_the_authors_diagonal_cosine(tiny_rewards, generator):
    """HPSv2's img_score.py: model(image, text) with output_dict (unit features), diag(img @ txt.T)."""
    model = tiny_open_clip(seed=1)  # the weights saved as HPS_v2.1_compressed.pt
    model.output_dict = True
    images = torch.rand(2, 3, 90, 160, generator=generator)
    import open_clip

    out = model(clip_preprocess(images), open_clip.SimpleTokenizer()(PROMPTS))
    expected = torch.diagonal(out["image_features"] @ out["text_features"].T)
    torch.testing.assert_close(tiny_rewards["hpsv2"].score(images, PROMPTS), expected, rtol=1e-5, atol=1e-6)


def test_clip_is_the_cosine(tiny_rewards, generator):
    model = tiny_open_clip(seed=2, quick_gelu=True)
    images = torch.rand(2, 3, 90, 160, generator=generator)
    import open_clip

    img = model.encode_image(clip_preprocess(images), normalize=True)
    txt = model.encode_text(open_clip.SimpleTokenizer()(PROMPTS), normalize=True)
    torch.testing.assert_close(tiny_rewards["clip"].score(images, PROMPTS), (img * txt).sum(-1), rtol=1e-5, atol=1e-6)


def test_aesthetic_is_the_mlp_on_unit_image_embeddings(tiny_rewards, weights_dir, generator):
    clip = tiny_open_clip(seed=2, quick_gelu=True)
    mlp = AestheticMLP(32)
    mlp.load_state_dict(torch.load(weights_dir / "aesthetic" / "aesthetic-model.pth", weights_only=True))
    mlp.eval()
    images = torch.rand(2, 3, 90, 160, generator=generator)
    expected = mlp(F.normalize(clip.encode_image(clip_preprocess(images)), dim=-1)).squeeze(-1)
    torch.testing.assert_close(tiny_rewards["aesthetic"].score(images, PROMPTS), expected, rtol=1e-5, atol=1e-6)


def test_pickscore_is_the_model_cards_formula(tiny_rewards, weights_dir, generator):
    """The card: logit_scale.exp() * (text_embs @ image_embs.T), which is CLIPModel's logits_per_image."""
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(weights_dir / "pickscore").eval()
    tok = CLIPTokenizer.from_pretrained(weights_dir / "tokenizer")
    images = torch.rand(2, 3, 90, 160, generator=generator)
    inputs = tok(PROMPTS, padding=True, truncation=True, max_length=77, return_tensors="pt")
    logits = model(pixel_values=clip_preprocess(images), **inputs).logits_per_image
    torch.testing.assert_close(tiny_rewards["pickscore"].score(images, PROMPTS), torch.diagonal(logits),
                               rtol=1e-5, atol=1e-5)
    assert tiny_rewards["pickscore"].logit_scale == pytest.approx(model.logit_scale.exp().item())


def test_pickscore_tokenizer_matches_open_clip(tiny_rewards):
    """The test tokenizer (open_clip's BPE as a CLIPTokenizer) gives open_clip's ids, truncated at 77 with EOS."""
    import open_clip

    tok = tiny_rewards["pickscore"].tokenizer
    ids = tok("A Red cube, on a  table!")["input_ids"]
    ref = open_clip.SimpleTokenizer()(["A Red cube, on a  table!"])[0]
    assert ids == ref[: len(ids)].tolist() and ids[0] == 49406 and ids[-1] == 49407
    long = tok("word " * 200, truncation=True, max_length=77)["input_ids"]
    assert len(long) == 77 and long[-1] == 49407


def test_hpsv2_loads_from_file_bare_state_dict_and_hub_cache(weights_dir, tmp_path, empty_hub_cache, generator):
    images = torch.rand(1, 3, 64, 64, generator=generator)
    expected = load_tiny("hpsv2", weights_dir).score(images, "a cube")
    bare = tmp_path / "bare.pt"
    torch.save(tiny_open_clip(seed=1).state_dict(), bare)
    fake_hub_file(empty_hub_cache, "psd-gs-test/tiny-hps", "HPS_v2_compressed.pt",
                  path=weights_dir / "hps" / "HPS_v2.1_compressed.pt")
    for kwargs in ({"weights": weights_dir / "hps" / "HPS_v2.1_compressed.pt"}, {"weights": bare},
                   {"weights": "psd-gs-test/tiny-hps", "version": "v2.0"}):
        reward = load_hpsv2(**kwargs, model_config=TINY_OPEN_CLIP, device="cpu")
        torch.testing.assert_close(reward.score(images, "a cube"), expected, rtol=0, atol=0)


def test_registered_open_clip_name_works(weights_dir, tmp_path):
    """A tiny config registered with open_clip.add_model_config is usable by name."""
    import json

    import open_clip

    (tmp_path / "psd-gs-tiny-test.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(tmp_path / "psd-gs-tiny-test.json")
    reward = load_hpsv2(weights_dir / "hps", model_name="psd-gs-tiny-test", device="cpu")
    assert reward.score(torch.rand(1, 3, 64, 64), "a cube").shape == (1,)


# ---------------------------------------------------------------------------------------------
# Loader errors
# ---------------------------------------------------------------------------------------------


def test_defaults_are_the_real_checkpoints():
    def default(fn, arg):
        return inspect.signature(fn).parameters[arg].default

    assert default(load_hpsv2, "weights") == "xswu/HPSv2" and default(load_hpsv2, "version") == "v2.1"
    assert default(load_hpsv2, "model_name") == "ViT-H-14"
    assert default(load_pickscore, "weights") == "yuvalkirstain/PickScore_v1"
    assert default(load_pickscore, "tokenizer") == "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
    assert default(load_aesthetic, "weights") == "trl-lib/ddpo-aesthetic-predictor"
    assert default(load_aesthetic, "filename") == "aesthetic-model.pth"
    for fn, arg in ((load_clip_score, "weights"), (load_aesthetic, "clip_weights")):
        assert default(fn, arg) == "timm/vit_large_patch14_clip_224.openai"
    assert default(load_clip_score, "model_name") == "ViT-L-14-quickgelu"


@pytest.mark.parametrize("name, kwargs, repo, filename", [
    ("hpsv2", {}, "xswu/HPSv2", "HPS_v2.1_compressed.pt"),
    ("hpsv2", {"version": "v2.0"}, "xswu/HPSv2", "HPS_v2_compressed.pt"),
    ("pickscore", {}, "yuvalkirstain/PickScore_v1", "config.json"),
    ("aesthetic", {}, "trl-lib/ddpo-aesthetic-predictor", "aesthetic-model.pth"),
    ("clip", {}, "timm/vit_large_patch14_clip_224.openai",
     "open_clip_model.safetensors or open_clip_pytorch_model.bin"),
])
def test_missing_default_weights_say_how_to_fetch(empty_hub_cache, name, kwargs, repo, filename):
    with pytest.raises(MissingWeightsError) as info:
        load_reward(name, device="cpu", **kwargs)
    msg = str(info.value)
    assert repr(repo) in msg and filename in msg and f"fetch-weights --rewards {name}" in msg
    assert info.value.__cause__ is not None


def test_missing_second_file_is_named(empty_hub_cache, weights_dir):
    with pytest.raises(MissingWeightsError, match="tokenizer.json.*laion/CLIP-ViT-H-14-laion2B-s32B-b79K"):
        load_pickscore(weights_dir / "pickscore", device="cpu")
    with pytest.raises(MissingWeightsError, match="timm/vit_large_patch14_clip_224.openai"):
        load_aesthetic(weights_dir / "aesthetic", model_config=TINY_OPEN_CLIP, device="cpu")


def test_unknown_version_and_mismatched_weights(weights_dir):
    with pytest.raises(ValueError, match=r"version must be one of \['v2.0', 'v2.1'\]"):
        load_hpsv2(weights_dir / "hps", version="v3")
    wider = {**TINY_OPEN_CLIP, "embed_dim": 16}
    with pytest.raises(ValueError, match="does not fit the model architecture"):
        load_hpsv2(weights_dir / "hps", model_config=wider, device="cpu")


def test_aesthetic_width_mismatch(weights_dir, tmp_path):
    torch.save(AestheticMLP(input_size=16).state_dict(), tmp_path / "mlp16.pth")
    with pytest.raises(ValueError, match="expects 16-d embeddings"):
        load_aesthetic(tmp_path / "mlp16.pth", clip_weights=weights_dir / "clip",
                       model_config={**TINY_OPEN_CLIP, "quick_gelu": True}, device="cpu")


@pytest.mark.parametrize("name", ["hpsv2", "clip", "aesthetic"])
def test_checkpoints_with_code_are_refused(weights_dir, tmp_path, name):
    state = torch.load(weights_dir / "hps" / "HPS_v2.1_compressed.pt", weights_only=True)
    evil = tmp_path / "evil.pt"
    torch.save({**state, "payload": Payload()}, evil)
    EXECUTED.clear()
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        if name == "aesthetic":
            load_aesthetic(evil, clip_weights=weights_dir / "clip", model_config=TINY_OPEN_CLIP, device="cpu")
        else:
            load_reward(name, device="cpu", weights=evil, model_config=TINY_OPEN_CLIP)
    assert EXECUTED == []


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_registry_entries_name_importable_factories_and_files():
    from psd_gs.registry import RewardEntry, resolve

    assert type(REWARDS) is dict
    assert {"hpsv2", "pickscore", "aesthetic", "clip"} <= set(REWARDS)
    for name, entry in REWARDS.items():
        assert isinstance(entry, RewardEntry) and callable(resolve(entry.factory)) and entry.label and entry.help
        assert entry.worlds and (not entry.files or callable(resolve(entry.files))), name


def test_unknown_reward_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        load_reward("imagereward")
    for name in REWARDS:
        assert name in str(info.value)
    assert "'imagereward'" in str(info.value)


def test_registry_passes_device_and_kwargs(weights_dir, monkeypatch):
    seen = {}

    def factory(device=None, **kwargs):
        seen.update(device=device, **kwargs)
        return "built"

    import sys
    import types

    from psd_gs.registry import RewardEntry

    monkeypatch.setitem(sys.modules, "psd_gs_test_reward", types.SimpleNamespace(factory=factory))
    monkeypatch.setitem(REWARDS, "psd-gs-test", RewardEntry("psd_gs_test_reward:factory", ("image",), "test", "test"))
    assert load_reward("psd-gs-test", device="cpu", weights="w") == "built"
    assert seen == {"device": "cpu", "weights": "w"}


@pytest.mark.parametrize("name", TEXT_REWARDS)
def test_prompts_first_seen_under_inference_mode_still_allow_gradients(weights_dir, name, generator):
    """An evaluation under torch.inference_mode() must not leave inference tensors in the text cache."""
    reward = load_tiny(name, weights_dir)
    images = torch.rand(2, 3, 64, 64, generator=generator)
    with torch.inference_mode():
        first = reward.score(images, "a cube")
    assert all(not t.is_inference() and not t.requires_grad for t in reward._text_cache.values())
    x = images.clone().requires_grad_(True)
    s = reward.score(x, "a cube")
    s.sum().backward()
    assert x.grad.abs().sum() > 0
    torch.testing.assert_close(s.detach(), first, rtol=1e-5, atol=1e-6)  # kernels differ without autograd
