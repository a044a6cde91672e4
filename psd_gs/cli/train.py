"""``python -m psd_gs train-prior`` and ``train-reward``: train the small latent diffusion model that the
``learned`` prior ships (``psd_gs.train.prior``) and the learned rewards (``psd_gs.train.reward``), added to
the main parser by ``psd_gs.cli.main.build_parser``."""

from __future__ import annotations

import argparse
from dataclasses import fields, replace

from .common import EXIT_CANCELLED, EXIT_OK, Formatter, para
from ..train import SHIPPED_PRIOR, SHIPPED_REWARDS

TRAIN_EXAMPLES = """\
examples:
  python -m psd_gs train-prior                                   # reproduces the shipped model (about 50 min, 2 cores)
  python -m psd_gs train-prior --out /tmp/prior --work /tmp/prior-work --unet-steps 200   # a quick try
"""
REWARD_EXAMPLES = """\
examples:
  python -m psd_gs train-reward                                  # reproduces the shipped rewards
  python -m psd_gs train-reward --out /tmp/rewards --work /tmp/rewards-work --clip-steps 50 --pref-steps 20
"""


def recipe_options(p: argparse.ArgumentParser, recipe) -> None:
    """One --option per int or float field of the dataclass ``recipe``, defaulting to its value."""
    for f in fields(recipe):
        if f.type in ("int", "float", int, float):
            p.add_argument("--" + f.name.replace("_", "-"), type=float if "float" in str(f.type) else int,
                           default=f.default, help=f"(default: {f.default})")


def recipe_of(args: argparse.Namespace, recipe):
    """The dataclass ``recipe``'s defaults with the fields the command line set."""
    return replace(recipe(), **{f.name: getattr(args, f.name) for f in fields(recipe) if hasattr(args, f.name)})


def add_commands(sub) -> None:
    p = sub.add_parser(
        "train-prior", formatter_class=Formatter, epilog=TRAIN_EXAMPLES,
        help="train the small Stable-Diffusion-architecture model of the learned prior on the shapes world",
        description=para("Render the shapes world's objects from the training cameras' poses, train an AutoencoderKL, "
                          "then a UNet2DConditionModel with a CLIPTextModel on captions from the world's grammar, and "
                          "save a diffusers StableDiffusionPipeline folder (safetensors) with loss.png, samples.png and "
                          "train.json beside the weights. Seeded; rerun the same command to resume from --work."))
    p.add_argument("--out", default=str(SHIPPED_PRIOR), help=f"the pipeline folder to write (default: {SHIPPED_PRIOR}, the shipped model)")
    p.add_argument("--work", default=".cache/train-prior",
                   help="renders and resumable checkpoints (default: .cache/train-prior)")
    p.add_argument("--minutes", type=float, default=None,
                   help="stop after this many minutes with a checkpoint saved; rerun to resume (default: no limit)")
    from ..train.recipe import PriorRecipe, RewardRecipe

    recipe_options(p, PriorRecipe)
    p.set_defaults(func=cmd_train_prior)

    p = sub.add_parser(
        "train-reward", formatter_class=Formatter, epilog=REWARD_EXAMPLES,
        help="train the learned rewards on the shapes world: a CLIP judge and a preference reward in HPS v2.1's "
             "architecture and file format",
        description=para("Render the shapes world's objects, train a small open_clip CLIP contrastively on renders "
                          "(clean and partly formed) and captions (the CLIP judge, learned-clip), then from it a "
                          "preference reward on noisy pairwise labels of a hidden rule with HPS's loss "
                          "(learned-hps), and a variant on clean renders only (kept in --work). Writes "
                          "OUT/clip/open_clip_model.safetensors and OUT/hps/HPS_v2.1_compressed.pt, each with "
                          "open_clip_config.json and a model card of its measured agreement. Seeded; rerun the "
                          "same command to resume from --work."))
    p.add_argument("--out", default=str(SHIPPED_REWARDS),
                   help=f"the folder of the two rewards (default: {SHIPPED_REWARDS}, the shipped ones)")
    p.add_argument("--work", default=".cache/train-reward",
                   help="renders and resumable checkpoints (default: .cache/train-reward)")
    p.add_argument("--minutes", type=float, default=None,
                   help="stop after this many minutes with a checkpoint saved; rerun to resume (default: no limit)")
    p.add_argument("--eval-pairs", type=int, default=2000,
                   help="held-out pairs of each kind the model cards' agreement is measured on (default: 2000)")
    recipe_options(p, RewardRecipe)
    p.set_defaults(func=cmd_train_reward)


def cmd_train_prior(args: argparse.Namespace) -> int:
    from ..train.base import Paused
    from ..train.prior import PriorTrainer
    from ..train.recipe import PriorRecipe
    from ..train.samples import write_samples

    recipe = recipe_of(args, PriorRecipe)
    budget = None if args.minutes is None else 60 * args.minutes
    try:
        out = PriorTrainer(args.out, args.work, recipe, budget_s=budget).run()
    except Paused as paused:
        print(str(paused))
        return EXIT_CANCELLED
    write_samples(out)
    print(f"done: {out} (model card: {out / 'README.md'})")
    return EXIT_OK


def cmd_train_reward(args: argparse.Namespace) -> int:
    from ..train.base import Paused
    from ..train.recipe import RewardRecipe
    from ..train.reward import RewardTrainer
    from ..train.reward_eval import write_cards

    budget = None if args.minutes is None else 60 * args.minutes
    trainer = RewardTrainer(args.out, args.work, recipe_of(args, RewardRecipe), budget_s=budget)
    try:
        folders = trainer.run()
    except Paused as paused:
        print(str(paused))
        return EXIT_CANCELLED
    write_cards(folders, trainer, args.eval_pairs)
    print(f"done: {folders['hps']} and {folders['clip']} (model cards: README.md in each)")
    return EXIT_OK
