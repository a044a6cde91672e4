"""How well the learned rewards learned (issue 25): the preference reward's agreement with its hidden rule on
held-out pairs, and the CLIP judge's retrieval of the world's objects; written into each model card.

Held-out: the renders of poses the training never saw (another seed), pairs and degradations drawn with
another seed. Agreement counts the pairs the rule decides (rule gap >= ``MIN_RULE_GAP``; below it a person's
label is a coin toss too) and is reported by kind: both images clean, at least one partly formed, and the
two images of one object (which differ only in pose and degradation).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Dict

import torch

from ..priors.shapes_world import ShapesWorld
from .data import Renders
from .reward_data import degrade, pairs

MIN_RULE_GAP = 0.02


@torch.no_grad()
def agreement(reward, val: Renders, n: int = 2000, seed: int = 1, batch: int = 100) -> Dict[str, tuple]:
    """{"clean", "partly formed", "same object", "all"}: (share of decided pairs where the reward orders the two
    images as the rule does, pairs counted). "clean": n pairs of clean renders; the others: n pairs drawn as in
    training (each image clean or degraded), "partly formed" those with a degraded image, "same object" those
    whose two images show one object."""
    world, gen, rng = ShapesWorld(), torch.Generator().manual_seed(seed), random.Random(seed)
    hits: Dict[str, list] = {"clean": [], "partly formed": [], "same object": [], "all": []}
    for clean_only in (True, False):
        for _ in range(n // batch):
            p = pairs(val, world, batch, gen, rng, clean_only)
            sa, sb = reward.score(p.a, p.prompts).float().cpu(), reward.score(p.b, p.prompts).float().cpu()
            decided = (p.ra - p.rb).abs() >= MIN_RULE_GAP
            agree = (sa - sb) * (p.ra - p.rb) > 0
            degraded = (p.kinds > 0).any(1)
            groups = {"clean": decided} if clean_only else {
                "partly formed": decided & degraded, "same object": decided & (p.objects[:, 0] == p.objects[:, 1]),
                "all": decided}
            for name, mask in groups.items():
                hits[name] += agree[mask].tolist()
    return {name: (sum(v) / len(v) if v else float("nan"), len(v)) for name, v in hits.items()}


@torch.no_grad()
def retrieval(judge, val: Renders, seed: int = 2, clean_only: bool = False) -> float:
    """Share of held-out images (clean or degraded) whose best caption among the world's twelve "a <colour>
    <shape>" is their own object's."""
    world, gen = ShapesWorld(), torch.Generator().manual_seed(seed)
    names = [f"a {o.name}" for o in world.objects]
    text = judge.text_features(names)
    right = []
    for start in range(0, len(val), 96):
        idx = torch.arange(start, min(start + 96, len(val)))
        images, _ = degrade(val, idx, gen, clean_only)
        best = (judge.image_features(images) @ text.T).argmax(1).cpu()
        right += (best == val.objects[idx]).tolist()
    return sum(right) / len(right)


def model_card(folder: Path, title: str, body: str) -> None:
    """README.md of a learned reward's folder."""
    (folder / "README.md").write_text(f"# {title}\n\n{body.strip()}\n")



def write_cards(folders: Dict[str, Path], trainer, n: int = 2000) -> Dict[str, object]:
    """Measure the trained rewards (loaded through the real loaders) on ``n`` held-out pairs of each kind and
    write each shipped folder's model card and ``eval.json``; returns the numbers."""
    import json
    from dataclasses import asdict

    from ..rewards.learned import load_learned_clip, load_learned_hps

    val = trainer.data()["val"]
    numbers = {"hps": agreement(load_learned_hps("cpu", folders["hps"]), val, n),
               "hps_clean": agreement(load_learned_hps("cpu", folders["hps_clean"]), val, n)}
    judge = load_learned_clip("cpu", folders["clip"])
    numbers["clip"] = {"clean": retrieval(judge, val, clean_only=True), "clean and partly formed": retrieval(judge, val)}
    recipe = json.dumps(asdict(trainer.r))
    command = "python -m psd_gs train-reward"

    def rows(a: Dict[str, tuple]) -> str:
        return "\n".join(f"| {name} | {share:.1%} | {n} |" for name, (share, n) in a.items())

    model_card(folders["hps"], "learned-hps: a preference reward in HPS v2.1's architecture, trained on the shapes world", f"""
An open_clip CLIP (ViT image tower, {trainer.r.patch_size} px patches on the 224 px input; transformer text tower over open_clip's
49408-token BPE; `open_clip_config.json`), saved as HPS v2.1 is (`HPS_v2.1_compressed.pt`, {{"state_dict": ...}},
float16) and read by `psd_gs.rewards.hpsv2.load_hpsv2`. Score: cos(image, prompt), as HPS's.

Trained by `{command}` (psd_gs/train/reward.py): contrastive pretraining on the world's renders and
captions (clean and partly formed: blurred, faded, two objects blended, speckled), then HPS's preference loss
on pairs of images for one prompt labelled by a hidden rule (the warm colour preference, R - (G + B) / 2 over
the foreground) through Bradley-Terry noise at temperature 0.02, as people label.

Agreement with the rule on held-out pairs (poses, seeds and degradations never trained on; pairs the rule
decides by at least {MIN_RULE_GAP}):

| pairs | agreement | pairs counted |
|---|---:|---:|
{rows(numbers["hps"])}

The same recipe on clean references only (kept in the training's work folder, not shipped):

| pairs | agreement | pairs counted |
|---|---:|---:|
{rows(numbers["hps_clean"])}

Recipe: `{recipe}`
""")
    model_card(folders["clip"], "learned-clip: a CLIP judge trained on the shapes world", f"""
The contrastive stage of `{command}` (psd_gs/train/reward.py), saved in the `clip` reward's format
(`open_clip_model.safetensors`, float16, with `open_clip_config.json`) and read by
`psd_gs.rewards.clip_score.load_clip_score`. No preference: it tells which object an image shows, as the
held-out suite's R-precision asks.

Held-out retrieval (the image's own "a <colour> <shape>" ranked first among the world's twelve):
{numbers["clip"]["clean"]:.1%} on clean renders, {numbers["clip"]["clean and partly formed"]:.1%} on clean and
partly formed ones.

Recipe: `{recipe}`
""")
    for name in ("hps", "clip"):
        (folders[name] / "eval.json").write_text(json.dumps(numbers[name] if name == "clip" else
                                                            {"agreement": numbers["hps"],
                                                             "clean_only_variant": numbers["hps_clean"]}, indent=1))
    return numbers
