"""Images and preference pairs for the learned rewards (docs/design.md section 10, issue 25).

Images are the shapes world's renders (``psd_gs.train.data.render_poses``: every object from random poses
of the training cameras, 64 px) and, unless ``clean_only``, the partly formed images a reward meets during
a run: each image is, with equal odds, kept clean or ``degrade``d (blurred, faded toward the white
background, mixed with another object seen from the same pose, as a one-step guess at high noise blends
the objects a prompt allows, or speckled with noise). A reward that only ever saw clean references is the
paper's case; the command also trains that variant so the two can be compared.

The hidden rule a preference imitates: the shapes world's warm colour preference (``RULE``, R - (G + B) / 2
over the foreground), which the learned reward never sees as a formula. A pair is two images for one
prompt that allows both objects; its label is drawn as a person's would be, by Bradley-Terry on the
rule's scores, P(a preferred) = sigmoid((R(a) - R(b)) / ``LABEL_TEMPERATURE``): near-certain for two
different colours, a coin toss for two versions of one object.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import List, Tuple

import torch
import torch.nn.functional as F

from ..priors.shapes_world import ShapesWorld
from ..rewards.shapes import ShapesReward
from .data import Renders, caption

RULE = ShapesReward("warm")
LABEL_TEMPERATURE = 0.02
KINDS = ("clean", "blur", "fade", "mix", "noise")


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of [B, 3, H, W] with standard deviation ``sigma`` px (reflect padding)."""
    r = max(1, int(3 * sigma))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype) ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).to(x.device)
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)


def degrade(renders: Renders, idx: torch.Tensor, gen: torch.Generator, clean_only: bool = False
            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images [B, 3, H, W] in [0, 1] for renders ``idx`` [B], each clean or degraded (kind drawn uniformly from
    ``KINDS``; always clean with ``clean_only``), and their kinds [B] long (index into KINDS)."""
    x = renders.float_images(idx)
    B = len(idx)
    kinds = torch.zeros(B, dtype=torch.long) if clean_only else torch.randint(0, len(KINDS), (B,), generator=gen)
    u = torch.rand(B, generator=gen)
    K = int(renders.objects.max()) + 1
    for i in range(B):
        kind = KINDS[kinds[i]]
        if kind == "blur":
            x[i] = blur(x[i:i + 1], 0.7 + 2.3 * u[i].item())[0]
        elif kind == "fade":  # a scene still transparent: the object over the background
            a = 0.25 + 0.6 * u[i].item()
            x[i] = a * x[i] + (1 - a)
        elif kind == "mix":  # another object from the same pose (renders are pose-major, K per pose)
            j = int(idx[i]) - int(renders.objects[idx[i]]) + int(torch.randint(0, K, (1,), generator=gen))
            w = 0.3 + 0.4 * u[i].item()
            x[i] = w * x[i] + (1 - w) * renders.float_images(torch.tensor([j]))[0]
        elif kind == "noise":
            x[i] = (x[i] + 0.15 * torch.randn(x[i].shape, generator=gen)).clamp(0, 1)
    return x, kinds


@dataclass
class Pairs:
    """B preference pairs: images a, b [B, 3, H, W] in [0, 1], prompts (B strings allowing both objects),
    rule scores ra, rb [B], label [B] float (1: a preferred, drawn by Bradley-Terry), kinds [B, 2] long,
    objects [B, 2] long (index into the world's objects)."""

    a: torch.Tensor
    b: torch.Tensor
    prompts: List[str]
    ra: torch.Tensor
    rb: torch.Tensor
    label: torch.Tensor
    kinds: torch.Tensor
    objects: torch.Tensor


def pairs(renders: Renders, world: ShapesWorld, B: int, gen: torch.Generator, rng: random.Random,
          clean_only: bool = False) -> Pairs:
    """B pairs: object a and a caption of it, object b among those the caption allows (b may be a: then the
    two differ in pose and degradation only), each at a random pose."""
    n_poses = len(renders) // len(world)
    objs_a = [rng.randrange(len(world)) for _ in range(B)]
    prompts = [caption(world, k, rng) for k in objs_a]
    objs_b = [rng.choice(world.select(p)) for p in prompts]
    pose = torch.randint(0, n_poses, (2, B), generator=gen)
    idx_a = pose[0] * len(world) + torch.tensor(objs_a)
    idx_b = pose[1] * len(world) + torch.tensor(objs_b)
    a, ka = degrade(renders, idx_a, gen, clean_only)
    b, kb = degrade(renders, idx_b, gen, clean_only)
    with torch.no_grad():
        ra, rb = RULE.score(a), RULE.score(b)
    p = torch.sigmoid((ra - rb) / LABEL_TEMPERATURE)
    label = (torch.rand(B, generator=gen) < p).float()
    return Pairs(a, b, prompts, ra, rb, label, torch.stack([ka, kb], 1), torch.tensor([objs_a, objs_b]).T)
