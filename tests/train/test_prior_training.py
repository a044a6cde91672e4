"""``train-prior`` on a tiny recipe: the folder it writes is a diffusers StableDiffusionPipeline, and a run cut
into pieces by its time budget resumes to exactly the weights of an uninterrupted run."""

import torch
from safetensors.torch import load_file

from psd_gs.train.prior import PriorRecipe, PriorTrainer
from tests.train.pieces import run_in_pieces

TINY = PriorRecipe(train_poses=3, val_poses=1, vae_steps=2, vae_batch=4, unet_steps=3, batch=4, warmup=1,
                   unet_channels=(32, 32, 32), vae_channels=(32, 32, 32))


def _weights(folder):
    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


def test_a_paused_training_resumes_to_the_same_weights_and_the_pipeline_loads(tmp_path):
    straight = PriorTrainer(tmp_path / "a", tmp_path / "work-a", TINY, log=lambda _: None).run()

    # budget 0: every stage does one step, saves and pauses
    pieces, pauses = run_in_pieces(lambda: PriorTrainer(tmp_path / "b", tmp_path / "work-b", TINY, log=lambda _: None,
                                                        budget_s=0))
    assert pauses == TINY.vae_steps - 1 + TINY.unet_steps - 1
    a, b = _weights(straight), _weights(pieces)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(straight)
    assert pipe.vae.config.scaling_factor != 0.18215  # measured on the training latents
    image = pipe("a red cube", num_inference_steps=2, output_type="pt",
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()
    assert (straight / "loss.png").is_file() and (straight / "train.json").is_file()


def test_the_renders_are_kept_per_recipe(tmp_path):
    """Renders are reused by a rerun of the same recipe and made again for another one, never reused stale."""
    first = PriorTrainer(tmp_path / "a", tmp_path / "w", TINY, log=lambda _: None).data()
    again = PriorTrainer(tmp_path / "a", tmp_path / "w", TINY, log=print).data()
    other = PriorTrainer(tmp_path / "a", tmp_path / "w", PriorRecipe(**{**TINY.__dict__, "train_poses": 2}),
                         log=lambda _: None).data()
    assert len(first["train"]) == 36 and len(other["train"]) == 24 and len(first["val"]) == 12
    assert torch.equal(first["train"].images, again["train"].images)
    assert set(first["train"].objects.tolist()) == set(range(12))


def test_the_command_pauses_at_its_time_budget_and_says_how_to_resume(tmp_path, capsys):
    from psd_gs.cli.main import main

    args = ["train-prior", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--minutes", "0",
            "--train-poses", "2", "--val-poses", "1", "--vae-steps", "3", "--vae-batch", "2", "--unet-steps", "2",
            "--batch", "2"]
    assert main(args) == 130
    out = capsys.readouterr().out
    assert "paused in the VAE stage at step 1" in out and "run the same command again" in out
    assert (tmp_path / "work" / "vae.pt").is_file() and not (tmp_path / "out").exists()
