"""Everything psd-gs can run, one table per kind: ``PRIORS``, ``REWARDS``, ``METHODS``.

Each entry says all that the rest of the code asks about a piece: where its code is, the weight
files it needs (what ``fetch-weights`` downloads and ``doctor`` checks), which world it belongs to,
whether a method needs a reward, and the label and help text the page and the CLI show. The CLI's
choices, the app's dropdowns, ``fetch-weights``, the run-folder pattern, validation and the
dispatch all read these tables, so adding a prior, a reward or a method is one new module plus one
entry here (README, "Adding a prior, a reward or a method").

Code is named as ``"module:attribute"`` and imported only when used (``resolve``), so reading the
tables costs no torch import: ``python -m psd_gs --help`` stays instant and the tables can be shown
anywhere. Worlds: a prior generates in one world ("shapes": the offline closed-form world; "image":
real images), and a reward lists the worlds whose images it can score.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Dict, Tuple


@dataclass(frozen=True)
class PriorEntry:
    """A diffusion prior.

    factory: ``fn(prior: PriorConfig, device) -> DiffusionPrior``.
    options: the dataclass of its own settings (``prior.options`` in a RunConfig).
    files: ``fn(prior: PriorConfig) -> [(hub repo, file)]``, the weights it loads ("" = none).
    check: ``fn(cfg: RunConfig)`` raising ValueError for what this prior cannot do (an unknown prompt
        word in the shapes world), before anything loads ("" = nothing to check).
    report: ``fn(scene, prompt, reward, cameras) -> dict``, what this world can say about a result
        beyond the reward (the shapes world: which object formed, its fidelity) ("" = nothing).
    retrieve: ``fn(views [V, H, W, 3], cameras, prompts [P], load_reward) -> [V, P]``, how well each view
        matches each prompt, for the suite's R-precision (``psd_gs.batch.suite``; ``load_reward(name)`` gives a
        loaded reward model) ("" = no R-precision in this world).
    memory: ``fn(cfg: RunConfig, with_weights: bool) -> {part: bytes}``, the prior's own memory in a run
        (weights, precomputed tables, activations), for ``psd_gs.run.memory`` ("" = nothing to add).
    needs_cuda: only offered where CUDA is.
    """

    factory: str
    options: str
    world: str
    label: str
    help: str
    files: str = ""
    check: str = ""
    report: str = ""
    retrieve: str = ""
    memory: str = ""
    needs_cuda: bool = False


@dataclass(frozen=True)
class RewardEntry:
    """A 2D reward model. factory: ``fn(device=None, **kwargs) -> RewardModel``; files: ``fn() ->
    [(hub repo, file)]`` with its default weights ("" = none); worlds: whose images it scores;
    weights_gb: its weights in memory (fp16 on CUDA), for ``psd_gs.run.memory``."""

    factory: str
    worlds: Tuple[str, ...]
    label: str
    help: str
    files: str = ""
    weights_gb: float = 0.0


@dataclass(frozen=True)
class MethodEntry:
    """A guidance method. cls: a ``psd_gs.guidance.base.Guidance`` subclass, built as
    ``cls(cfg: GuidanceConfig, prior, prompt, reward, seed)``; needs_reward: it ranks or ascends a reward."""

    cls: str
    needs_reward: bool
    label: str
    help: str


PRIORS: Dict[str, PriorEntry] = {
    "shapes": PriorEntry(
        factory="psd_gs.priors.analytic:load_shapes_prior", options="psd_gs.priors.analytic:ShapesOptions",
        world="shapes", label="Shapes world (offline)",
        help="closed-form mixture prior over twelve coloured reference objects; exact, runs on a CPU",
        check="psd_gs.priors.analytic:check_run", report="psd_gs.run.evaluate:shapes_report",
        retrieve="psd_gs.batch.suite:learned_clip_retrieval",
        memory="psd_gs.priors.analytic:memory"),
    "learned": PriorEntry(
        factory="psd_gs.priors.learned:load_learned_prior", options="psd_gs.priors.learned:LearnedOptions",
        world="shapes", label="Learned (small SD trained here)",
        help="a 4M-parameter Stable Diffusion (AutoencoderKL, UNet2DConditionModel, CLIPTextModel) trained on the "
             "shapes world's renders; the real SD code path on a CPU",
        check="psd_gs.priors.learned:check_run", report="psd_gs.run.evaluate:shapes_report",
        retrieve="psd_gs.batch.suite:learned_clip_retrieval", memory="psd_gs.priors.learned:memory"),
    "sd": PriorEntry(
        factory="psd_gs.priors.stable_diffusion:load_sd_prior", options="psd_gs.priors.stable_diffusion:SDOptions",
        world="image", label="Stable Diffusion 2.1 base",
        help="any epsilon-prediction SD 1.x/2.x checkpoint through diffusers; TAESD decodes one-step guesses",
        files="psd_gs.priors.stable_diffusion:weight_files", memory="psd_gs.priors.stable_diffusion:memory",
        retrieve="psd_gs.batch.suite:clip_retrieval",
        needs_cuda=True),
}

REWARDS: Dict[str, RewardEntry] = {
    "hpsv2": RewardEntry("psd_gs.rewards.hpsv2:load_hpsv2", ("image",), "HPS v2.1",
                         "Human Preference Score v2.1 (open_clip ViT-H-14), cosine of image and prompt",
                         files="psd_gs.rewards.hpsv2:weight_files", weights_gb=2.0),
    "pickscore": RewardEntry("psd_gs.rewards.pickscore:load_pickscore", ("image",), "PickScore",
                             "PickScore v1 (CLIP-H on Pick-a-Pic preferences), scaled cosine",
                             files="psd_gs.rewards.pickscore:weight_files", weights_gb=2.0),
    "aesthetic": RewardEntry("psd_gs.rewards.aesthetic:load_aesthetic", ("image",), "Aesthetic",
                             "LAION improved aesthetic predictor on CLIP ViT-L/14; ignores the prompt",
                             files="psd_gs.rewards.aesthetic:weight_files", weights_gb=0.9),
    "clip": RewardEntry("psd_gs.rewards.clip_score:load_clip_score", ("image",), "CLIP score",
                        "OpenAI CLIP ViT-L/14 cosine of image and prompt",
                        files="psd_gs.rewards.clip_score:weight_files", weights_gb=0.9),
    "shapes-warm": RewardEntry("psd_gs.rewards.shapes:load_warm", ("shapes",), "Warm colours",
                               "prefers warm colours, R - (G + B) / 2 over the object"),
    "shapes-cool": RewardEntry("psd_gs.rewards.shapes:load_cool", ("shapes",), "Cool colours",
                               "prefers cool colours, B - (R + G) / 2 over the object"),
    "shapes-size": RewardEntry("psd_gs.rewards.shapes:load_size", ("shapes",), "Bigger objects",
                               "prefers the object that covers more of the image (its silhouette's area)"),
    "shapes-low": RewardEntry("psd_gs.rewards.shapes:load_low", ("shapes",), "Low-slung objects",
                              "prefers the object whose mass sits low in the view (its silhouette's mean height)"),
    "learned-hps": RewardEntry("psd_gs.rewards.learned:load_learned_hps", ("shapes",), "Learned preference (HPS-style)",
                               "a small HPS v2.1-architecture reward trained here on noisy pairwise labels of a "
                               "hidden rule (python -m psd_gs train-reward); cosine of image and prompt"),
    "learned-clip": RewardEntry("psd_gs.rewards.learned:load_learned_clip", ("shapes",), "Learned CLIP score",
                                "a small CLIP trained here on the world's renders and captions, no preference; "
                                "cosine of image and prompt"),
}

METHODS: Dict[str, MethodEntry] = {
    "psd": MethodEntry("psd_gs.guidance.psd:PSDGuidance", True, "PSD (preference score distillation)",
                       "pulls toward the best of the prior's denoised guesses by the reward (and can learn a "
                       "negative prompt); no reward gradient"),
    "sds": MethodEntry("psd_gs.guidance.sds:SDSGuidance", False, "SDS",
                       "plain score distillation, the base of every method"),
    "reward_grad": MethodEntry("psd_gs.guidance.reward_grad:RewardGradGuidance", True, "Reward gradient (baseline)",
                               "SDS plus the reward's pixel gradient: the baseline that hacks the reward"),
}


def resolve(ref: str) -> Any:
    """The object a ``"module:attribute"`` reference names, imported now."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def rewards_for(world: str) -> Dict[str, RewardEntry]:
    """The rewards that score images of ``world``."""
    return {name: e for name, e in REWARDS.items() if world in e.worlds}
