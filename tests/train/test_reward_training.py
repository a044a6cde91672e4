"""``train-reward`` on a tiny recipe: the two folders it writes load through the real HPS v2.1 and CLIP
loaders, and a run cut into pieces by its time budget resumes to exactly the weights of an uninterrupted
one. The pairs and their labels follow the hidden rule."""

import random

import torch
from safetensors.torch import load_file

from psd_gs.priors.shapes_world import ShapesWorld
from psd_gs.rewards.clip_score import load_clip_score
from psd_gs.rewards.hpsv2 import load_hpsv2
from psd_gs.rewards.learned import model_config
from psd_gs.train.recipe import RewardRecipe
from psd_gs.train.reward import CLIP_FILE, HPS_FILE, RewardTrainer
from psd_gs.train.reward_data import KINDS, RULE, degrade, pairs
from tests.train.pieces import run_in_pieces

TINY = RewardRecipe(train_poses=2, val_poses=1, clip_steps=2, pref_steps=2, batch=8, warmup=1)


def test_a_paused_training_resumes_to_the_same_weights_and_both_load(tmp_path):
    straight = RewardTrainer(tmp_path / "a", tmp_path / "work-a", TINY, log=lambda _: None).run()
    # budget 0: every stage does one step, saves and pauses
    pieces, pauses = run_in_pieces(lambda: RewardTrainer(tmp_path / "b", tmp_path / "work-b", TINY,
                                                         log=lambda _: None, budget_s=0))
    assert pauses == (TINY.clip_steps - 1) + 2 * (TINY.pref_steps - 1)
    a, b = load_file(straight["clip"] / CLIP_FILE), load_file(pieces["clip"] / CLIP_FILE)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ha = torch.load(straight["hps"] / HPS_FILE, weights_only=True)["state_dict"]
    hb = torch.load(pieces["hps"] / HPS_FILE, weights_only=True)["state_dict"]
    assert ha.keys() == hb.keys() and all(torch.equal(ha[k], hb[k]) for k in ha)
    # the real loaders, as they read the hub's files
    hps = load_hpsv2(straight["hps"], model_config=model_config(straight["hps"]), device="cpu")
    clip = load_clip_score(straight["clip"], model_config=model_config(straight["clip"]), device="cpu")
    images = torch.rand(2, 3, 64, 64)
    for reward in (hps, clip):
        s = reward.score(images, ["a red cube", "a blue sphere"])
        assert s.shape == (2,) and torch.isfinite(s).all() and (s.abs() <= 1.0 + 1e-5).all()  # cosines
    assert (straight["hps_clean"] / HPS_FILE).is_file()  # the clean-only variant, in the work folder


def test_pairs_allow_both_objects_and_labels_follow_the_rule():
    from psd_gs.train.data import render_poses

    world, renders = ShapesWorld(), render_poses(2, 0, 32)
    gen, rng = torch.Generator().manual_seed(0), random.Random(0)
    p = pairs(renders, world, 200, gen, rng)
    for prompt, (ka, kb) in zip(p.prompts, p.objects.tolist()):
        assert ka in world.select(prompt) and kb in world.select(prompt)
    assert torch.allclose(p.ra, RULE.score(p.a)) and set(p.kinds.flatten().tolist()) == set(range(len(KINDS)))
    clear = (p.ra - p.rb).abs() > 0.2  # two different colours: the label is the rule's, with rare noise
    assert clear.sum() > 20 and (p.label[clear] == (p.ra > p.rb)[clear].float()).float().mean() > 0.97
    close = (p.ra - p.rb).abs() < 0.005  # a coin toss, as for a person
    assert 0.2 < p.label[close].mean() < 0.8
    clean, kinds = degrade(renders, torch.arange(12), gen, clean_only=True)
    assert (kinds == 0).all() and torch.equal(clean, renders.float_images(torch.arange(12)))


def test_the_command_pauses_resumes_and_writes_model_cards(tmp_path, capsys):
    from psd_gs.cli.main import main

    args = ["train-reward", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--train-poses", "2",
            "--val-poses", "1", "--clip-steps", "2", "--pref-steps", "1", "--batch", "8", "--eval-pairs", "100"]
    assert main(args + ["--minutes", "0"]) == 130
    out = capsys.readouterr().out
    assert "paused in the clip stage at step 1" in out and "run the same command again" in out
    assert (tmp_path / "work" / "clip.pt").is_file() and not (tmp_path / "out").exists()
    assert main(args) == 0
    card = (tmp_path / "out" / "hps" / "README.md").read_text()
    assert "Agreement with the rule on held-out pairs" in card and "| clean |" in card and "| partly formed |" in card
    assert "retrieval" in (tmp_path / "out" / "clip" / "README.md").read_text().lower()
