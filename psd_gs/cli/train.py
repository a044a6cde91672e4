"""``python -m psd_gs train-prior``: train the small latent diffusion model that the ``learned`` prior ships
(``psd_gs.train.prior``), added to the main parser by ``psd_gs.cli.main.build_parser``."""

from __future__ import annotations

import argparse
from dataclasses import fields, replace

from .common import EXIT_CANCELLED, EXIT_OK, Formatter, para
from ..train import SHIPPED_PRIOR

TRAIN_EXAMPLES = """\
examples:
  python -m psd_gs train-prior                                   # reproduces the shipped model (about 50 min, 2 cores)
  python -m psd_gs train-prior --out /tmp/prior --work /tmp/prior-work --unet-steps 200   # a quick try
"""


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
    from ..train.recipe import PriorRecipe

    for f in fields(PriorRecipe):
        if f.type in ("int", "float", int, float):
            p.add_argument("--" + f.name.replace("_", "-"), type=float if "float" in str(f.type) else int,
                           default=f.default, help=f"(default: {f.default})")
    p.set_defaults(func=cmd_train_prior)


def cmd_train_prior(args: argparse.Namespace) -> int:
    from ..train.prior import Paused, PriorTrainer
    from ..train.recipe import PriorRecipe
    from ..train.samples import write_samples

    recipe = replace(PriorRecipe(), **{f.name: getattr(args, f.name) for f in fields(PriorRecipe)
                                       if hasattr(args, f.name)})
    budget = None if args.minutes is None else 60 * args.minutes
    try:
        out = PriorTrainer(args.out, args.work, recipe, budget_s=budget).run()
    except Paused as paused:
        print(str(paused))
        return EXIT_CANCELLED
    write_samples(out)
    print(f"done: {out} (model card: {out / 'README.md'})")
    return EXIT_OK
