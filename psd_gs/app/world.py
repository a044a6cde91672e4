"""The world the page serves and what it offers there (``PageWorld``), and the page's values turned into a
checked RunConfig (``make_config``). Both the layout (``page``) and the handlers (``handlers``) read it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

from ..config import (PRESETS, FieldInfo, PriorConfig, RunConfig, apply_overrides, config_fields, preset,
                      preset_of_prior)
from ..device import resolve_device
from ..registry import METHODS, PRIORS, REWARDS, rewards_for
from ..run.fetch import prior_files, status
from ..run.memory import default_budget, fitting_resolutions
from ..run.refine import SCHEDULE, refine_config
from ..run.validate import validate

RESOLUTIONS = {"shapes": ["32", "64", "128"], "learned": ["64"], "sd": ["128", "256", "512"]}


def choose_world() -> Tuple[str, str]:
    """(preset name, why): the first preset whose prior can run here ("sd" needs CUDA and its weights in
    the local cache), else "shapes". PSD_GS_PRESET forces one."""
    forced = os.environ.get("PSD_GS_PRESET")
    if forced in PRESETS:
        return forced, f"set by PSD_GS_PRESET={forced}"
    on_cuda = resolve_device().type == "cuda"
    for name in ("sd", "shapes"):
        prior = preset(name).prior
        entry = PRIORS[prior.name]
        if entry.needs_cuda and not on_cuda:
            continue
        missing = status(prior_files(prior))[1]
        if missing:
            return "shapes", (f"CUDA is here but the {entry.label} weights are not in the local cache ({len(missing)} "
                              f"files missing); fetch them with `python -m psd_gs fetch-weights --prior "
                              f"{prior.name}`. Running the shapes world meanwhile")
        return name, (f"CUDA GPU and the {entry.label} weights found" if entry.needs_cuda else
                      "no CUDA GPU here, so the offline shapes world runs (closed-form prior, colour reward)")
    raise RuntimeError("no preset can run here")


def prior_choices(world: str) -> List[Tuple[str, str]]:
    """(label, name) of the priors of ``world`` that can run on this device; a prior whose weights are not
    cached is offered with that said (choosing it explains how to fetch them)."""
    on_cuda = resolve_device().type == "cuda"
    out = []
    for name, entry in PRIORS.items():
        if entry.world != world or (entry.needs_cuda and not on_cuda):
            continue
        missing = status(prior_files(PriorConfig(name)))[1]
        out.append((entry.label + (" (weights not cached)" if missing else ""), name))
    return out


def make_config(world: str, runs_root: str, values: Mapping[str, object],
                offered: Optional[List[int]] = None) -> RunConfig:
    """The page's values (config path -> value) on the world's preset, validated; ValueError names the first
    bad one. ``offered``: the resolutions the page offers (px); another one is refused, naming them. A prior
    chosen on the page starts from its own preset where it has one (``preset_of_prior``: the learned prior's
    four views a step), and the page's values go on top."""
    values = dict(values)
    init, keep = values.pop("scene.init", None) or "", values.pop("scene.keep", None) or "none"
    cfg = preset(preset_of_prior(str(values.get("prior.name") or preset(world).prior.name), world), out_dir=runs_root)
    if init:  # "Refine a splat": the upload, with the refinement schedule; the page's values go on top
        refine_config(cfg, init, keep)
    if "resolution" in values:
        size = values.pop("resolution")
        if offered is not None and str(size).strip() not in [str(r) for r in offered]:
            sizes = ", ".join(f"{r} px" for r in offered) or "none (the memory budget is too small)"
            raise ValueError(f"resolution {size}: this page offers {sizes}; choose one of those")
        values["camera.resolution"] = [[0.0, size]]
    if values.get("prompt") is None:
        values["prompt"] = ""
    return validate(apply_overrides(cfg, values))


def prior_defaults(world: str, prior: str, paths: List[str], refining: bool = False) -> List[object]:
    """The values of config ``paths`` in the preset a page of ``world`` starts from when ``prior`` is chosen
    (``preset_of_prior``), with the refinement schedule when ``refining``, as the page's controls hold them
    (tuples as JSON)."""
    cfg = apply_overrides(preset(preset_of_prior(prior, world)), SCHEDULE if refining else {})
    values = {f.path: f.value for f in config_fields(cfg, with_options=False)}
    return [json.dumps(values[p]) if isinstance(values[p], (tuple, list)) else values[p] for p in paths]


def setting_of(error: ValueError, paths: List[str]) -> Optional[str]:
    """The control a validation message is about: the first of ``paths`` it names (its message starts
    with the setting, e.g. "guidance.tau = 0: must be > 0"), "prompt" for the prompt's own messages."""
    text = str(error)
    if text.startswith(("prompt", "the shapes world does not know", "no object in the shapes world")):
        return "prompt"
    named = [p for p in paths if p != "prompt" and (p in text or p.split(".")[-1] + " " in text[:40])]
    if "camera.resolution" in text or text.startswith("resolution"):
        named.insert(0, "resolution")
    if not named and (".ply" in text or "splat" in text):  # the upload's own messages (refine)
        named = ["scene.init"]
    return named[0] if named else None


def api_name(path: str) -> str:
    """A config path as an API parameter name: guidance.cfg_scale -> guidance_cfg_scale."""
    return path.replace(".", "_")


@dataclass
class PageWorld:
    """What the page offers in the world it serves, fixed when the server starts.

    name, why: the preset and the reason it was chosen; base: that preset's RunConfig.
    budget: bytes a run may bring the process to; sizes: the world's resolutions; offered: those that fit.
    fields: config path -> FieldInfo (with the page's own "resolution" and "prompt"); choices: dropdowns.
    """

    name: str
    why: str
    base: RunConfig
    budget: int
    sizes: List[int]
    offered: List[int]
    fields: Dict[str, FieldInfo]
    choices: Dict[str, List[Tuple[str, str]]]
    infos: Dict[str, str]
    runs_root: str
    max_age_hours: float
    max_cached_files: int

    @property
    def root(self) -> Path:
        return Path(self.runs_root)

    @property
    def shapes(self) -> bool:
        """Whether the page serves the shapes world (the closed-form or the learned prior)."""
        return PRIORS[self.base.prior.name].world == "shapes"

    @property
    def prior_label(self) -> str:
        return PRIORS[self.base.prior.name].label


def page_world(world: Optional[str], why: str, runs_root: str, max_age_hours: float, budget: Optional[int],
               max_cached_files: int) -> PageWorld:
    """The page's settings for ``world`` (None: ``choose_world``): every size it offers fits ``budget``, and each
    control's default is the preset's (the preset's size when it fits, else the largest that does)."""
    if world is None:
        world, why = choose_world()
    base = preset(world)
    budget = budget or default_budget(resolve_device(base.device))
    sizes = [int(r) for r in RESOLUTIONS.get(world, ["64"])]
    offered = fitting_resolutions(base, budget, sizes)
    prior_world = PRIORS[base.prior.name].world
    fields = {f.path: f for f in config_fields(base)}
    size = base.camera.resolution[-1][1] if base.camera.resolution[-1][1] in offered or not offered else offered[-1]
    fields["resolution"] = FieldInfo("resolution", str, str(size),
                                     "render size in pixels for the whole run (what this world and device can run)")
    fields["prompt"] = FieldInfo("prompt", str, "a sphere" if prior_world == "shapes" else "", fields["prompt"].help)
    choices = {"prior.name": prior_choices(prior_world),
               "guidance.method": [(e.label, name) for name, e in METHODS.items()],
               "reward": [(e.label, name) for name, e in rewards_for(prior_world).items()],
               "resolution": [(f"{r} px", str(r)) for r in offered]}
    infos = {"guidance.method": METHODS[base.guidance.method].help, "reward": REWARDS[base.reward].help}
    return PageWorld(world, why, base, budget, sizes, offered, fields, choices, infos, runs_root, max_age_hours,
                     max_cached_files)
