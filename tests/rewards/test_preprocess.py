"""clip_preprocess against the transforms the reward models were trained with, and prompt broadcasting."""

import pytest
import torch

from psd_gs.rewards.preprocess import CLIP_MEAN, CLIP_STD, broadcast_prompts, check_images, clip_preprocess

SIZES = [(300, 180), (64, 96), (512, 512), (225, 301), (224, 224), (97, 1000)]


def test_constants_are_the_libraries_own():
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    assert CLIP_MEAN == tuple(OPENAI_DATASET_MEAN) == tuple(OPENAI_CLIP_MEAN)
    assert CLIP_STD == tuple(OPENAI_DATASET_STD) == tuple(OPENAI_CLIP_STD)


@pytest.mark.parametrize("hw", SIZES)
def test_matches_open_clip_pil_transform_within_one_8bit_step(hw, generator):
    """open_clip's evaluation transform (PIL Resize 224 bicubic + CenterCrop 224 + Normalize) on an
    8-bit image, against ours on the same values as floats. Uniform noise is the worst case for the
    bicubic overshoot that PIL saturates between its two passes."""
    import open_clip
    from PIL import Image

    u8 = torch.randint(0, 256, (1, 3, *hw), generator=generator, dtype=torch.uint8)
    reference = open_clip.image_transform(224, is_train=False)(Image.fromarray(u8[0].permute(1, 2, 0).numpy()))
    ours = clip_preprocess(u8.float() / 255)[0]
    assert ours.shape == reference.shape == (3, 224, 224)
    one_step = (1 / 255) / min(CLIP_STD)  # one 8-bit level, in normalised units
    diff = (ours - reference).abs()
    assert diff.max() <= 1.1 * one_step
    assert diff.mean() <= 0.5 * one_step


@pytest.mark.parametrize("hw", SIZES)
def test_shape_dtype_and_gradient(hw, generator):
    x = torch.rand(2, 3, *hw, generator=generator, dtype=torch.float64, requires_grad=True)
    y = clip_preprocess(x)
    assert y.shape == (2, 3, 224, 224) and y.dtype == torch.float32
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_square_224_is_only_normalised(generator):
    x = torch.rand(1, 3, 224, 224, generator=generator)
    expected = (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(clip_preprocess(x), expected)


def test_centre_crop_keeps_the_middle():
    """A 448 x 224 image needs no resize; torchvision's CenterCrop keeps rows 112..335."""
    x = torch.zeros(1, 3, 448, 224)
    x[..., 112:336, :] = 1.0
    y = clip_preprocess(x) * torch.tensor(CLIP_STD).view(1, 3, 1, 1) + torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    torch.testing.assert_close(y, torch.ones_like(y), atol=1e-5, rtol=0)


@pytest.mark.parametrize("bad", [torch.rand(3, 8, 8), torch.rand(1, 4, 8, 8), torch.rand(0, 3, 8, 8),
                                 torch.zeros(1, 3, 8, 8, dtype=torch.uint8)])
def test_check_images_rejects(bad):
    with pytest.raises(ValueError, match="images must be"):
        check_images(bad)


def test_broadcast_prompts():
    assert broadcast_prompts("a cube", 3) == ["a cube"] * 3
    assert broadcast_prompts(["a cube"], 2) == ["a cube"] * 2
    assert broadcast_prompts(("a", "b"), 2) == ["a", "b"]
    with pytest.raises(ValueError, match="3 prompts for 2 images"):
        broadcast_prompts(["a", "b", "c"], 2)
    with pytest.raises(ValueError, match="strings"):
        broadcast_prompts([1, 2], 2)
