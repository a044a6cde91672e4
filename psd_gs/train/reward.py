"""Train the learned rewards (issue 25, docs/design.md section 10): a CLIP judge in the ``clip`` reward's
format and a preference reward in HPS v2.1's, both open_clip CLIP models (ViT image tower, transformer text
tower over open_clip's own 49408-token BPE) at a small width, trained on the shapes world.

Stages, each resumable from its checkpoint in ``work``:

1. data: ``train_poses`` random poses x 12 objects at 64 px and ``val_poses`` held-out poses (another seed),
   kept in ``work/data.pt`` (``psd_gs.train.data.render_poses``).
2. clip: contrastive pretraining on (image, caption), images clean or degraded (``reward_data.degrade``),
   captions from the world's grammar. A caption such as "a cube" fits every cube of the batch, so the
   targets are multi-positive: image i's target is spread evenly over the captions that allow its object,
   and a caption's over the images it allows (CLIP's InfoNCE when every caption is unique).
   This model, exported, is the CLIP judge (``learned-clip``).
3. hps: from the clip stage's weights, as HPS v2 fine-tunes CLIP: preference pairs (``reward_data.pairs``)
   with HPS's loss, cross-entropy over the logit-scaled cosines of the two images with the prompt toward
   the labelled winner, plus the contrastive loss at half weight so the text stays grounded.
   ``hps_clean``: the same from clean references only (the paper's reward that never saw a partly formed
   image; kept in ``work`` for the comparison, not shipped).
4. export: the CLIP judge as ``open_clip_model.safetensors``, the preference reward as
   ``HPS_v2.1_compressed.pt`` ({"state_dict": ...}, as on the hub), each with ``open_clip_config.json``
   ({"model_cfg": ...}, open_clip's hub format) and, after evaluation, a model card. Weights are stored in
   float16 (the loaders cast them to the model's dtype); the stages train in float32.

Every random draw of step s comes from generators seeded by (seed, stage, s): a resumed run continues as an
uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..rewards.learned import CONFIG_FILE
from ..rewards.preprocess import clip_preprocess
from .base import Trainer, _gen, _load, _save
from .data import Renders, caption, render_poses
from .recipe import RewardRecipe
from .reward_data import degrade, pairs

HPS_FILE = "HPS_v2.1_compressed.pt"
CLIP_FILE = "open_clip_model.safetensors"
STAGES = {"clip": 1, "hps": 2, "hps_clean": 3}


def model_config(r: RewardRecipe) -> dict:
    """The open_clip CLIP config of both learned rewards: HPS v2.1's ViT-H-14 at a small width (GELU, image 224
    in ``patch_size`` px patches; open_clip's vocabulary, a context of ``context_length`` tokens, as the world's
    captions are at most 8 words, where HPS has 77). The CLIP judge uses it too,
    so the preference stage starts from the judge's weights in the same architecture."""
    return {"embed_dim": r.embed_dim, "quick_gelu": False,
            "vision_cfg": {"image_size": 224, "layers": r.vision_layers, "width": r.vision_width,
                           "head_width": 32, "patch_size": r.patch_size, "mlp_ratio": 2.0},
            "text_cfg": {"context_length": r.context_length, "vocab_size": 49408, "width": r.text_width, "heads": 2,
                         "layers": r.text_layers, "mlp_ratio": 2.0}}


def build(r: RewardRecipe):
    """(model, tokenizer): the architecture, randomly initialised (``rewards.clip_score.build_open_clip``)."""
    from ..rewards.clip_score import build_open_clip

    torch.manual_seed(r.seed)
    return build_open_clip(model_config=model_config(r))


def features(model, tokenizer, images: torch.Tensor, texts: List[str]):
    """Unit image features [B, D] of images [B, 3, H, W] in [0, 1] (the rewards' own preprocessing) and unit
    text features [T, D] (each distinct text encoded once: a batch repeats its captions)."""
    img = F.normalize(model.encode_image(clip_preprocess(images)), dim=-1)
    unique = list(dict.fromkeys(texts))
    txt = F.normalize(model.encode_text(tokenizer(unique)), dim=-1)
    return img, txt[torch.tensor([unique.index(t) for t in texts])]


def contrastive_loss(model, img: torch.Tensor, txt: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Multi-positive InfoNCE: allowed [B, B] bool, allowed[i, j] = caption j allows image i's object."""
    logits = model.logit_scale.exp() * img @ txt.T
    target = allowed.float()
    i2t = -(F.log_softmax(logits, 1) * target / target.sum(1, keepdim=True)).sum(1).mean()
    t2i = -(F.log_softmax(logits.T, 1) * target.T / target.T.sum(1, keepdim=True)).sum(1).mean()
    return (i2t + t2i) / 2


class RewardTrainer(Trainer):
    """Runs the stages into ``work`` and writes the two rewards under ``out`` (``out/hps``, ``out/clip``;
    ``Trainer``: log, checkpoints, budget)."""

    def __init__(self, out: str | Path, work: str | Path, recipe: RewardRecipe = RewardRecipe(),
                 log: Callable[[str], None] = print, save_every_s: float = 120.0, budget_s: Optional[float] = None):
        super().__init__(out, work, recipe, log, save_every_s, budget_s)

    # ---- 1. data --------------------------------------------------------------------------------
    def data(self) -> Dict[str, Renders]:
        path, key = self.work / "data.pt", [self.r.seed, self.r.train_poses, self.r.val_poses]
        saved = _load(path)
        if saved is None or saved["recipe"] != key:
            t0 = time.perf_counter()
            saved = {"recipe": key}
            for name, n, seed in (("train", self.r.train_poses, self.r.seed),
                                  ("val", self.r.val_poses, 20_000 + self.r.seed)):
                s = render_poses(n, seed, 64)
                saved[name] = {"images": s.images, "objects": s.objects, "poses": s.poses}
            _save(saved, path)
            self.log(f"data: {len(saved['train']['objects'])} training and {len(saved['val']['objects'])} held-out "
                     f"renders in {time.perf_counter() - t0:.0f} s")
        return {name: Renders(**saved[name]) for name in ("train", "val")}

    # ---- 2-3. training stages -------------------------------------------------------------------
    def contrastive_batch(self, model, tokenizer, train: Renders, gen, rng, clean_only: bool) -> torch.Tensor:
        idx = torch.randint(0, len(train), (self.r.batch,), generator=gen)
        images, _ = degrade(train, idx, gen, clean_only)
        objects = train.objects[idx].tolist()
        texts = [caption(self.world, k, rng) for k in objects]
        fits = {t: set(self.world.select(t)) for t in set(texts)}
        allowed = torch.tensor([[k in fits[t] for t in texts] for k in objects])
        img, txt = features(model, tokenizer, images, texts)
        return contrastive_loss(model, img, txt, allowed)

    def preference_loss(self, model, tokenizer, train: Renders, gen, rng, clean_only: bool) -> torch.Tensor:
        p = pairs(train, self.world, self.r.batch // 2, gen, rng, clean_only)
        img, txt = features(model, tokenizer, torch.cat([p.a, p.b]), p.prompts)
        n = len(p.prompts)
        s = model.logit_scale.exp() * (img.view(2, n, -1) * txt[None]).sum(-1)  # [2, n]: a's and b's scores
        return F.binary_cross_entropy_with_logits(s[0] - s[1], p.label)

    def train(self, stage: str, train: Renders, start_from: Optional[dict] = None):
        """One stage ("clip", "hps" or "hps_clean"), resumed from its checkpoint; the trained model."""
        r, path = self.r, self.work / f"{stage}.pt"
        model, tokenizer = build(r)
        steps = r.clip_steps if stage == "clip" else r.pref_steps
        opt = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / r.warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
        ck = _load(path)
        if ck is not None:
            model.load_state_dict(ck["model"]), opt.load_state_dict(ck["opt"]), sched.load_state_dict(ck["sched"])
            step, losses = ck["step"], ck["losses"]
        else:
            if start_from is not None:
                model.load_state_dict(start_from)
            step, losses = 0, []
        clean = stage == "hps_clean"
        model.train()
        bar = tqdm(total=steps, initial=step, desc=f"{stage} steps", unit="step")
        last = time.perf_counter()
        while step < steps:
            gen, rng = _gen(r.seed, STAGES[stage], step), random.Random(r.seed * 7919 + STAGES[stage] * 104729 + step)
            loss = self.contrastive_batch(model, tokenizer, train, gen, rng, clean)
            if stage != "clip":
                loss = self.preference_loss(model, tokenizer, train, gen, rng, clean) + 0.5 * loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step(), sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
            step += 1
            bar.update(1), bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            if self._due(last, step == steps):
                _save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                       "step": step, "losses": losses}, path)
                last = self._pause_if_spent(step < steps, stage, step)
        bar.close()
        self.stats[f"{stage}_losses"] = losses
        return model.eval()

    # ---- 4. export ------------------------------------------------------------------------------
    def write_config(self, folder: Path) -> Path:
        """``folder`` (made) with the architecture beside the weights, as open_clip's hub folders carry it."""
        folder.mkdir(parents=True, exist_ok=True)
        cfg = {"model_cfg": model_config(self.r),
               "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                                  "std": [0.26862954, 0.26130258, 0.27577711]}}
        (folder / CONFIG_FILE).write_text(json.dumps(cfg, indent=2))
        return folder

    def export(self, clip_model, hps_model, clean_model) -> Dict[str, Path]:
        """The CLIP judge and the preference reward under ``out``, the clean-only variant under ``work``; float16."""
        from safetensors.torch import save_file

        folders = {name: self.write_config(root / name)
                   for name, root in (("clip", self.out), ("hps", self.out), ("hps_clean", self.work))}
        save_file(_half(clip_model), str(folders["clip"] / CLIP_FILE))
        for name, model in (("hps", hps_model), ("hps_clean", clean_model)):
            torch.save({"state_dict": _half(model)}, folders[name] / HPS_FILE)
        self.log(f"saved the CLIP judge to {folders['clip']} and the preference reward to {folders['hps']}")
        return folders

    def run(self) -> Dict[str, Path]:
        data = self.data()
        clip_model = self.train("clip", data["train"])
        start = {k: v.clone() for k, v in clip_model.state_dict().items()}
        hps_model = self.train("hps", data["train"], start)
        clean_model = self.train("hps_clean", data["train"], start)
        folders = self.export(clip_model, hps_model, clean_model)
        (self.work / "train.json").write_text(json.dumps({"recipe": asdict(self.r), **self.stats}))
        return folders


def _half(model) -> Dict[str, torch.Tensor]:
    """The model's state dict in float16, contiguous (what ships)."""
    return {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
