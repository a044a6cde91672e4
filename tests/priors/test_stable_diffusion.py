"""StableDiffusionPrior on tiny random checkpoints saved to disk and loaded by load_stable_diffusion."""

import shutil

import pytest
import torch

from psd_gs.priors.base import MissingWeightsError
from psd_gs.priors.stable_diffusion import load_stable_diffusion
from psd_gs.doctor.tiny import TINY_EMB_DIM, TINY_LATENT, TINY_RESOLUTION, build_tiny_sd, build_tiny_taesd

COMPONENTS = ("scheduler", "tokenizer", "text_encoder", "unet", "vae")


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="session")
def tiny_taesd(tmp_path_factory):
    return build_tiny_taesd(tmp_path_factory.mktemp("tiny_taesd"))


@pytest.fixture(scope="module", params=["taesd", "vae"])
def prior(request, tiny_sd, tiny_taesd):
    return load_stable_diffusion(tiny_sd, device="cpu", decoder=request.param, taesd=tiny_taesd)


def test_loaded_defaults_and_frozen_weights(prior):
    assert prior.device == torch.device("cpu") and prior.dtype == torch.float32
    assert prior.resolution == TINY_RESOLUTION  # vae factor 2 * unet sample_size 8
    assert (prior.decoder is prior.vae) == (prior.decoder_name == "vae")
    for net in (prior.unet, prior.vae, prior.text_encoder, prior.decoder):
        params = list(net.parameters())
        assert params and not any(p.requires_grad for p in params)
        assert not net.training


def test_alphas_cumprod(prior):
    a = prior.alphas_cumprod
    assert prior.num_train_timesteps == 1000 and a.shape == (1000,) and a.dtype == torch.float32
    assert (a[1:] < a[:-1]).all() and 0 < a[-1] and a[0] < 1


def test_encode_prompt_shape_and_cache(prior):
    emb = prior.encode_prompt("a red cube")
    assert emb.shape == (1, 77, TINY_EMB_DIM) and emb.dtype == torch.float32 and not emb.requires_grad
    assert prior.encode_prompt("a red cube") is emb
    assert not torch.allclose(prior.encode_prompt(""), emb)


def test_encode_images_shape_grad_and_resize(prior):
    rgb = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(0), requires_grad=True)
    z = prior.encode_images(rgb)
    assert z.shape == (2, *TINY_LATENT) and z.dtype == torch.float32
    assert torch.equal(z, prior.encode_images(rgb))  # posterior mean: deterministic
    z.square().sum().backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0

    # A 16x16 image and its 2x nearest upsampling encode alike: both are resized to 16 first.
    small = torch.rand(1, 3, TINY_RESOLUTION, TINY_RESOLUTION, generator=torch.Generator().manual_seed(1))
    big = small.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    with torch.no_grad():
        z_small = prior.encode_images(small)
        torch.testing.assert_close(prior.encode_images(big), z_small)
        # SD's convention: [0, 1] -> [-1, 1], posterior mean times scaling_factor
        ref = prior.vae.encode(small * 2 - 1).latent_dist.mean * prior.vae.config.scaling_factor
    torch.testing.assert_close(z_small, ref)


def test_resolution_override(tiny_sd, tiny_taesd):
    prior = load_stable_diffusion(tiny_sd, device="cpu", taesd=tiny_taesd, resolution=32)
    assert prior.encode_images(torch.rand(1, 3, 16, 16)).shape == (1, 4, 16, 16)


def test_decode_latents_range_size_and_scaling(prior):
    z = 2 * torch.randn(3, *TINY_LATENT, generator=torch.Generator().manual_seed(2))
    rgb = prior.decode_latents(z)
    assert rgb.shape == (3, 3, TINY_RESOLUTION, TINY_RESOLUTION) and rgb.dtype == torch.float32
    assert rgb.min() >= 0 and rgb.max() <= 1 and rgb.std() > 0
    # The full VAE undoes scaling_factor; TAESD (scaling_factor 1.0) reads the scaled latents as they are.
    with torch.no_grad():
        if prior.decoder_name == "vae":
            ref = prior.vae.decode(z / prior.vae.config.scaling_factor).sample
        else:
            assert prior.decoder.config.scaling_factor == 1.0
            ref = prior.decoder.decode(z).sample
    torch.testing.assert_close(rgb, ((ref + 1) / 2).clamp(0, 1))


def test_predict_noise_shape_and_grad_to_emb(prior):
    g = torch.Generator().manual_seed(3)
    z_t = torch.randn(2, *TINY_LATENT, generator=g)
    t = torch.tensor([10, 900])
    emb = torch.cat([prior.encode_prompt("a cube"), prior.encode_prompt("")]).clone().requires_grad_(True)
    eps = prior.predict_noise(z_t, t, emb)
    assert eps.shape == z_t.shape and eps.dtype == torch.float32
    assert not torch.allclose(eps[0], prior.predict_noise(z_t[:1], t[1:], emb[:1])[0])  # depends on t
    eps.square().sum().backward()
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="t of shape"):
        prior.predict_noise(z_t, t[:1], emb)


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated")  # diffusers' call
def test_missing_hub_id_offline():
    with pytest.raises(MissingWeightsError) as info:
        load_stable_diffusion("psd-gs-tests/no-such-model", device="cpu")
    msg = str(info.value)
    assert "psd-gs-tests/no-such-model" in msg and "scheduler" in msg
    assert "fetch-weights" in msg and "HF_HUB_OFFLINE" in msg
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.parametrize("component", COMPONENTS)
def test_missing_component_in_folder(tmp_path, tiny_sd, tiny_taesd, component):
    folder = tmp_path / "sd"
    shutil.copytree(tiny_sd, folder)
    shutil.rmtree(folder / component)
    with pytest.raises(MissingWeightsError) as info:
        load_stable_diffusion(folder, device="cpu", taesd=tiny_taesd)
    msg = str(info.value)
    assert str(folder) in msg and component in msg
    # every other component loads, so the error is about this one
    assert not any(f"the {other} of" in msg for other in COMPONENTS if other != component)


def test_missing_taesd_folder(tmp_path, tiny_sd):
    empty = tmp_path / "taesd"
    empty.mkdir()
    with pytest.raises(MissingWeightsError, match="TAESD decoder") as info:
        load_stable_diffusion(tiny_sd, device="cpu", taesd=empty)
    assert str(empty) in str(info.value) and isinstance(info.value.__cause__, OSError)
    # the full-VAE decoder does not need TAESD at all
    assert load_stable_diffusion(tiny_sd, device="cpu", decoder="vae", taesd=empty).decoder_name == "vae"


def test_unknown_decoder(tiny_sd):
    with pytest.raises(ValueError, match="'taesd', 'vae'"):
        load_stable_diffusion(tiny_sd, device="cpu", decoder="consistency")


def test_v_prediction_rejected(tmp_path):
    folder = build_tiny_sd(tmp_path / "sd_v", prediction_type="v_prediction")
    with pytest.raises(ValueError, match="v_prediction"):
        load_stable_diffusion(folder, device="cpu")


def test_decoder_with_other_latent_factor_rejected(tmp_path, tiny_sd):
    from diffusers import AutoencoderTiny

    AutoencoderTiny(  # three stages: spatial factor 4, where the tiny VAE has 2
        encoder_block_out_channels=(8, 8, 8),
        decoder_block_out_channels=(8, 8, 8),
        num_encoder_blocks=(1, 1, 1),
        num_decoder_blocks=(1, 1, 1),
    ).save_pretrained(tmp_path / "taesd4")
    with pytest.raises(ValueError, match="factor 4"):
        load_stable_diffusion(tiny_sd, device="cpu", taesd=tmp_path / "taesd4")
