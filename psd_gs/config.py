"""Typed configs, named presets, and one way to set any field (docs/design.md section 2).

``RunConfig`` holds everything one generation needs: the prompt and run length, the prior
(``PriorConfig``: which prior by name, its weights, its own options), the Gaussians (``SceneConfig``),
the training cameras (``CameraConfig``) and the guidance (``GuidanceConfig``). Every field is declared
with ``knob(default, help, ...)``: its help text and range live next to it, and the CLI (``--set``),
the app's Advanced panel and ``check()`` all read them from there.

Setting a field, from anywhere (CLI, app, batch jobs, code): a dotted path and a value,

    apply_overrides(cfg, {"guidance.tau": "0.3", "camera.resolution": "[[0, 64]]", "steps": 200})

Strings are parsed by the field's type (numbers, true/false, none, JSON for tuples and lists); a
prior's own options are ``prior.options.<name>``, typed by the prior's options dataclass
(``psd_gs.registry``). Choosing another prior (``prior.name``) clears the options and source of the old
one, so set those after the name. ``config_fields(cfg)`` lists every settable path with its type, value and help.

Presets are named bundles of defaults: ``preset("shapes")`` (the offline closed-form world, runs
anywhere), ``preset("learned")`` (the shapes world through the small SD trained here, runs anywhere) and
``preset("sd")`` (Stable Diffusion, GPU). They choose the prior by its name like any
other field; nothing downstream asks which preset a config came from. The resolved config is saved as
config.json at the start of each run.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union


def knob(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING,
         minimum: Optional[float] = None, maximum: Optional[float] = None, above: Optional[float] = None,
         choices: Optional[Tuple[str, ...]] = None) -> Any:
    """A dataclass field with its help text and range: ``minimum``/``maximum`` inclusive, ``above``
    exclusive, ``choices`` for strings. ``check_fields`` enforces them; the CLI and the app show them."""
    meta = {"help": help, "minimum": minimum, "maximum": maximum, "above": above, "choices": choices}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class GuidanceConfig:
    """Every knob of the guidance methods (docs/design.md sections 3 and 4).

    Ablations: PSD without the pair term is ``lambda_p = 0``; without the adaptive negative,
    ``neg_lr = 0``; with both off PSD is exactly SDS.
    """

    method: str = knob("psd", "guidance method, a name from psd_gs.registry.METHODS (sds, psd, reward_grad)")
    negative_prompt: str = knob("", "text of the reference negative embedding e_ref")
    cfg_scale: float = knob(7.5, "s: classifier-free guidance scale; 1 turns guidance off; the adaptive "
                                 "negative needs s > 1", minimum=1.0, maximum=100.0)
    t_min: float = knob(0.02, "lower end of t ~ U[t_min, t_max(step)], as a fraction of T", minimum=0.0, maximum=1.0)
    t_max_start: float = knob(0.98, "t_max at step 0, a fraction of T", minimum=0.0, maximum=1.0)
    t_max_end: float = knob(0.5, "t_max at the last step (annealed linearly)", minimum=0.0, maximum=1.0)
    # PSD pair term
    lambda_p: float = knob(1.0, "lambda_p: weight of PSD's preference pair term; 0 turns it off", minimum=0.0)
    tau: float = knob(3.0, "tau: the pair term reaches full weight at a reward gap tau times the median gap of the "
                           "pairs this run has built, k = clamp(d / (tau m), 0, 1) (pair_scale run; none: at a gap "
                           "of tau in the reward's own units)", above=0.0)
    pair_scale: str = knob("run", "the unit of a pair's reward gap d. run: the median gap m of every pair this run "
                                  "has built, so any reward's units cancel (a reward times 100 steers alike); none: "
                                  "the reward's own units (tau and min_gap then depend on the reward)",
                           choices=("run", "none"))
    pair_window: Tuple[float, float] = knob((0.0, 0.5), "(start, end) fractions of the run where the pair term acts")
    n_candidates: int = knob(2, "N: noisings of the render ranked per pair step; the best is the winner, the worst "
                                "the loser (more make a real choice likelier)", minimum=2, maximum=16)
    guess_steps: int = knob(1, "DDIM steps a candidate's guess takes from the pair's t to 0 (1: the one-step guess). "
                               "More make each guess a sample of one object rather than a blurred mean, for the "
                               "reward to rank and the pair term to pull toward, at guess_steps - 1 more prior "
                               "calls per pair step", minimum=1, maximum=50)
    guess_sds: bool = knob(False, "with guess_steps > 1: a pair step's SDS part pulls the render toward its candidate's "
                                  "multi-step guess, sqrt(a_t (1 - a_t)) (z0 - x0^b), instead of the one-step noise "
                                  "residual (the same pull when guess_steps = 1)")
    guess_space: str = knob("latent", "with guess_steps > 1, where a pair step pulls the render toward the winner's "
                                      "guess (and away from the loser's). latent: in the VAE's latent, as SDS does; "
                                      "image: in pixels, toward the decoded guesses, 0.5 |x - D(x0^w)|^2 (HiFA's image-"
                                      "space target), since a latent can match its target while the pixels do not",
                            choices=("latent", "image"))
    keep_winner: bool = knob(False, "a pair step's first candidate reuses the noise of the last informative winner, so "
                                    "the choice made persists from step to step (and the render is pulled toward one "
                                    "object, not an average of alternating ones) until a fresh candidate outscores it")
    rank_by: str = knob("scene", "scene: one winner for all views, by the reward summed over them (one object, one "
                                 "decision); view: each view picks its own", choices=("scene", "view"))
    pair_space: str = knob("noise", "noise: the pair term is w(t) times the noise bracket, sqrt(a_t (1 - a_t)) "
                                    "(x0_l - x0_w); x0: the guesses' difference itself, (x0_l - x0_w), so it keeps "
                                    "its weight at high noise where the choice is made", choices=("noise", "x0"))
    sds_t: str = knob("pair", "the t of a pair step's SDS term. pair: the pair's own t and the winner's noise "
                              "(the step is SDS on the winner plus the pair term); own: a separate t drawn as "
                              "SDS draws it, and a fresh noise, so the pair steps keep refining at low noise "
                              "while the pair decides at high noise (one more prior call per pair step)",
                      choices=("pair", "own"))
    sds_tail: float = knob(1.0, "from this fraction of the run on, every PSD step is plain SDS against e_ref (no "
                                "pair, no learned negative): the choice made, fidelity restored; 1 = never",
                           minimum=0.0, maximum=1.0)
    pair_t_min: float = knob(0.0, "inside the pair window t is drawn from [max(t_min, pair_t_min), t_max]: the "
                                  "candidates differ only at high noise, where the choice is made", minimum=0.0,
                             maximum=1.0)
    gate_render: bool = knob(False, "a pair informs only when its winner's guess scores above the render itself "
                                    "(decoded from its latent): nothing to prefer once the render is as good as "
                                    "any guess")
    min_gap: float = knob(0.0, "gap (in pair_scale's unit) below which a pair is uninformative: the step is plain "
                               "SDS (first candidate) and the learned negative skips it; a gap of 0 never informs",
                          minimum=0.0)
    # PSD adaptive negative embedding e_n
    neg_lr: float = knob(1e-3, "Adam learning rate of PSD's learned negative embedding e_n; 0 freezes it",
                         minimum=0.0)
    neg_every: int = knob(8, "one e_n update every this many steps (cost: bench/step_cost.py)", minimum=1)
    neg_views: int = knob(1, "views of the batch the e_n update uses (its UNet backward's memory grows with it)",
                          minimum=1)
    beta: float = knob(1000.0, "beta: Diffusion-DPO inverse temperature of the e_n update", minimum=0.0)
    gamma: float = knob(0.1, "gamma: weight of |e_n - e_ref|^2 (mean over elements)", minimum=0.0)
    # reward-gradient baseline
    lambda_r: float = knob(1.0, "lambda_r: weight of -R(render) in the reward-gradient baseline", minimum=0.0)

    def check(self) -> "GuidanceConfig":
        """Raise ValueError naming the first field out of range; returns self."""
        check_fields(self, "guidance.")
        if not (self.t_min < self.t_max_end <= 1.0 and self.t_min < self.t_max_start <= 1.0):
            raise ValueError(f"guidance.t_min = {self.t_min}: need t_min < t_max_end, t_max_start <= 1 "
                             f"(t_max_start={self.t_max_start}, t_max_end={self.t_max_end})")
        if self.guess_space == "image" and self.guess_steps == 1:
            raise ValueError("guidance.guess_space = image needs guidance.guess_steps > 1 (a one-step guess at high "
                             "noise is a blurred mean, no image to pull toward)")
        lo, hi = self.pair_window
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"guidance.pair_window = {self.pair_window}: must be (start, end) fractions of the run "
                             "with 0 <= start <= end <= 1")
        return self


@dataclass
class SceneConfig:
    """The Gaussians at step 0 and how they are optimised (learning rates are DreamGaussian's)."""

    init: str = knob("", "refine: start from this 3DGS .ply (any tool's, SH degree 0-3) instead of random Gaussians; "
                         "the run copies it into its folder as input.ply and writes scene.ply in its frame")
    keep: str = knob("none", "with init: what stays as the input had it. geometry: positions, scales, rotations "
                             "(only colours and opacities change); appearance: the colours; none",
                     choices=("none", "geometry", "appearance"))
    frame: str = knob("fit", "with init: where the cameras see the input. fit: centred, and scaled so that its visible "
                             "Gaussians reach init_radius (any tool's units); own: as it is, its units the cameras' "
                             "(psd-gs's own results, the shapes world's objects)", choices=("fit", "own"))
    n_init: int = knob(1000, "Gaussians at initialisation, uniform in a ball (with init: the input's count)", minimum=1)
    init_radius: float = knob(0.5, "radius of that ball, world units (with init: the input's visible Gaussians are "
                                   "seen as if scaled into it)", above=0.0)
    init_opacity: float = knob(0.1, "opacity of every Gaussian at step 0", above=0.0, maximum=0.999)
    sh_degree: int = knob(0, "spherical-harmonics degree of the colours", minimum=0, maximum=3)
    color_jitter: Optional[float] = knob(None, "none: a random colour per Gaussian; x: one colour per seed +- x",
                                         minimum=0.0)
    lr_means: float = knob(1e-3, "Adam learning rate of the positions at step 0", minimum=0.0)
    lr_means_final: float = knob(2e-5, "... decayed log-linearly to this at the last step", above=0.0)
    lr_quats: float = knob(5e-3, "Adam learning rate of the rotations", minimum=0.0)
    lr_scales: float = knob(5e-3, "Adam learning rate of the log scales", minimum=0.0)
    lr_opacities: float = knob(5e-2, "Adam learning rate of the opacity logits", minimum=0.0)
    lr_sh0: float = knob(1e-2, "Adam learning rate of the base colour", minimum=0.0)
    lr_shN: float = knob(5e-4, "Adam learning rate of the higher SH bands", minimum=0.0)
    color_floor: bool = knob(True, "after every step, project the base colour onto >= 0: the renderer clamps "
                             "colours at 0 (as gsplat), and a channel pushed below it gets no gradient again")
    densify: bool = knob(True, "grow and prune Gaussians with gsplat's DefaultStrategy")
    densify_from: float = knob(0.1, "densification starts at this fraction of the run", minimum=0.0, maximum=1.0)
    densify_until: float = knob(0.7, "... and stops at this fraction", minimum=0.0, maximum=1.0)
    densify_every: int = knob(50, "steps between densifications", minimum=1)
    grow_grad2d: float = knob(2e-4, "screen-space gradient above which a Gaussian is cloned or split", minimum=0.0)
    prune_opa: float = knob(0.01, "Gaussians below this opacity are pruned", minimum=0.0, maximum=1.0)
    opacity_reset_every: int = knob(0, "reset opacities every this many steps while densifying; 0 never",
                                    minimum=0)
    max_gaussians: int = knob(20000, "growth stops at this many Gaussians", minimum=1)


@dataclass
class CameraConfig:
    """Training cameras (psd_gs/scene/cameras.py conventions) and the render resolution schedule."""

    batch: int = knob(1, "views per step", minimum=1, maximum=64)
    elevation: Tuple[float, float] = knob((-10.0, 45.0), "(low, high) elevation range, degrees")
    azimuth: Tuple[float, float] = knob((-180.0, 180.0), "(low, high) azimuth range, degrees")
    radius: Tuple[float, float] = knob((2.5, 2.5), "(low, high) camera distance, world units")
    fovy: Tuple[float, float] = knob((49.1, 49.1), "(low, high) vertical field of view, degrees")
    resolution: Tuple[Tuple[float, int], ...] = knob(((0.0, 64),), "[(from fraction of the run, pixels), ...]")
    background: str = knob("white", "white, black, random (per step) or mixed (white or random)",
                           choices=("white", "black", "random", "mixed"))

    def resolution_at(self, step: int, total: int) -> int:
        frac = step / max(total, 1)
        return [res for start, res in self.resolution if start <= frac][-1]


@dataclass
class PriorConfig:
    """Which diffusion prior, by name (``psd_gs.registry.PRIORS``), its weights and its own options."""

    name: str = knob("shapes", "the diffusion prior that generates: shapes (the offline world) or sd (Stable "
                               "Diffusion); any name in psd_gs.registry.PRIORS")
    source: str = knob("", "hub id or local folder of its weights; '' = the prior's default")
    options: Dict[str, Any] = knob(factory=dict, help="the prior's own options (prior.options.<name>, typed by "
                                                      "the prior's options dataclass)")


@dataclass
class RunConfig:
    """One generation."""

    prompt: str = knob("a red cube", "what to make")
    steps: int = knob(400, "optimisation steps", minimum=1, maximum=100_000)
    seed: int = knob(0, "random seed", minimum=0, maximum=2 ** 63 - 1)
    out_dir: str = knob("runs", "each run writes only inside its own new folder below this")
    device: str = knob("auto", "auto (CUDA when available), cpu or cuda")
    reward: str = knob("shapes-warm", "reward model, a name from psd_gs.registry.REWARDS")
    preview_every: int = knob(10, "a preview image (and the logs) every this many steps; 0 never", minimum=0)
    checkpoint_every: int = knob(0, "save a resumable checkpoint every this many steps; 0 never", minimum=0)
    max_nan_steps: int = knob(5, "stop after this many non-finite steps in a row", minimum=1)
    turntable: bool = knob(True, "also write turntable.mp4 (a batch leaves it out unless asked: psd_gs.batch.runner)")
    turntable_views: int = knob(24, "frames of turntable.mp4", minimum=1, maximum=720)
    turntable_resolution: int = knob(256, "turntable.mp4 frame size in pixels (the app shows it at this size)",
                                     minimum=32, maximum=1024)
    mesh: bool = knob(True, "also write mesh.glb: the splat's surface as a coloured mesh (psd_gs.mesh.extract)")
    mesh_resolution: int = knob(128, "grid voxels along the mesh's bounding cube (time and memory grow with its cube)",
                                minimum=16, maximum=256)
    prior: PriorConfig = knob(factory=PriorConfig, help="the diffusion prior")
    scene: SceneConfig = knob(factory=SceneConfig, help="the Gaussians")
    camera: CameraConfig = knob(factory=CameraConfig, help="the training cameras")
    guidance: GuidanceConfig = knob(factory=GuidanceConfig, help="the guidance method")

    MAX_PROMPT = 300  # characters

    def check(self) -> "RunConfig":
        """Raise ValueError naming the first bad field and how to fix it; returns self. Checks what the
        config alone can tell; names of priors, rewards and methods are checked by psd_gs.run.validate."""
        text = self.prompt.strip()
        if not text:
            raise ValueError("prompt is empty: describe the object, e.g. 'a red cube'")
        if len(text) > self.MAX_PROMPT:
            raise ValueError(f"prompt has {len(text)} characters; keep it under {self.MAX_PROMPT}")
        for prefix, obj in (("", self), ("scene.", self.scene), ("camera.", self.camera)):
            check_fields(obj, prefix)
        for name in ("elevation", "azimuth", "radius", "fovy"):
            lo, hi = getattr(self.camera, name)
            if not lo <= hi:
                raise ValueError(f"camera.{name} = {(lo, hi)}: must be (low, high) with low <= high")
        if not self.camera.resolution or self.camera.resolution[0][0] != 0.0:
            raise ValueError(f"camera.resolution = {self.camera.resolution}: the first stage must start at 0.0")
        for _, res in self.camera.resolution:
            if res < 16 or res > 2048 or res % 8:
                raise ValueError(f"resolution {res}: must be a multiple of 8 between 16 and 2048")
        if self.scene.keep != "none" and not self.scene.init:
            raise ValueError(f"scene.keep = {self.scene.keep!r} keeps part of an input splat: set scene.init to a "
                             ".ply (python -m psd_gs refine SCENE.ply), or keep 'none'")
        if self.scene.keep == "geometry" and self.scene.densify:
            raise ValueError("scene.keep = 'geometry' fixes the Gaussians, and densification adds and removes them: "
                             "set scene.densify = false")
        if self.scene.n_init > self.scene.max_gaussians:
            raise ValueError(f"scene.n_init = {self.scene.n_init}: must be at most scene.max_gaussians "
                             f"({self.scene.max_gaussians})")
        self.guidance.check()
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        """A RunConfig from ``to_dict``'s output (lists back to tuples); ValueError names unknown keys.

        Configs written before the prior was chosen by name ({"preset": ..., "prior": "<source>",
        "data_std": ..., "camera": {"grid": ...}}) are read too.
        """
        d = json.loads(json.dumps(dict(d)))  # a deep copy
        if "preset" in d:  # the old layout
            old_preset, source, data_std = d.pop("preset"), d.pop("prior", ""), d.pop("data_std", 0.1)
            grid = d.get("camera", {}).pop("grid", None)
            options = {"data_std": data_std, "pose_grid": grid} if old_preset == "shapes" else {}
            d["prior"] = {"name": old_preset, "source": source or "", "options": options}
        return _build(cls, d, "")


# ---- fields: listing, parsing, setting, checking ----------------------------------------------


@dataclass(frozen=True)
class FieldInfo:
    """One settable config path: "guidance.tau", its type, current value, help and range."""

    path: str
    type: Any
    value: Any
    help: str
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    above: Optional[float] = None
    choices: Optional[Tuple[str, ...]] = None


def _fields_of(obj: Any, prefix: str = "", with_options: bool = True) -> Iterator[FieldInfo]:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _fields_of(value, f"{prefix}{f.name}.", with_options)
        elif isinstance(obj, PriorConfig) and f.name == "options" and with_options:
            yield from _fields_of(prior_options(obj), f"{prefix}options.")
        else:
            yield FieldInfo(f"{prefix}{f.name}", hints[f.name], value, f.metadata.get("help", ""),
                            f.metadata.get("minimum"), f.metadata.get("maximum"), f.metadata.get("above"),
                            f.metadata.get("choices"))


def config_fields(cfg: RunConfig, with_options: bool = True) -> List[FieldInfo]:
    """Every settable path of ``cfg``, in declaration order, the chosen prior's options included unless
    ``with_options`` is False (they live in the prior's module, whose import costs torch)."""
    return list(_fields_of(cfg, "", with_options))


def prior_options(prior: PriorConfig) -> Any:
    """The typed options dataclass of ``prior.name`` filled from ``prior.options`` (ValueError names an
    unknown prior or option)."""
    from .registry import PRIORS, resolve

    if prior.name not in PRIORS:
        raise ValueError(f"prior {prior.name!r} is unknown; choose one of {sorted(PRIORS)}")
    cls = resolve(PRIORS[prior.name].options)
    return _build(cls, dict(prior.options), "prior.options.")


def parse_value(text: Any, tp: Any, path: str) -> Any:
    """``text`` (a string from the CLI or a page, or an already typed value) as type ``tp``.

    Numbers, true/false/yes/no/1/0, none/null for Optional fields, and JSON for tuples and lists
    ("[0, 0.4]", "[[0, 64], [0.5, 128]]"); a plain string stays a string.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:  # Optional[X]
        if text is None or (isinstance(text, str) and text.strip().lower() in ("none", "null", "")):
            return None
        return parse_value(text, next(a for a in args if a is not type(None)), path)
    if isinstance(text, str) and (origin in (tuple, list) or tp in (dict,) or origin is dict):
        try:
            text = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError(f"{path} = {text!r}: expected JSON such as [0.0, 0.5]") from None
    try:
        if tp is bool:
            if isinstance(text, str):
                word = text.strip().lower()
                if word not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
                    raise ValueError
                return word in ("true", "yes", "1", "on")
            return bool(text)
        if tp is int:
            value = float(text)
            if value != int(value):
                raise ValueError
            return int(value)
        if tp is float:
            return float(text)
        if tp is str:
            return str(text)
        if origin is tuple:
            items = list(text)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(parse_value(x, args[0], path) for x in items)
            if len(items) != len(args):
                raise ValueError
            return tuple(parse_value(x, a, path) for x, a in zip(items, args))
        if origin is dict or tp is dict:
            return dict(text)
    except (TypeError, ValueError):
        raise ValueError(f"{path} = {text!r}: expected {_type_name(tp)}") from None
    return text


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _build(cls: Any, d: Dict[str, Any], prefix: str) -> Any:
    """``cls(**d)`` with nested dataclasses built and every value parsed to its field's type."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown setting {prefix}{unknown[0]}; known: {', '.join(prefix + n for n in sorted(names))}")
    kwargs = {}
    for name, value in d.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, dict(value), f"{prefix}{name}.")
        else:
            kwargs[name] = parse_value(value, tp, prefix + name)
    return cls(**kwargs)


def set_field(cfg: RunConfig, path: str, value: Any) -> None:
    """Set the dotted ``path`` of ``cfg`` to ``value`` (a string is parsed by the field's type)."""
    parts = path.strip().split(".")
    if parts[:2] == ["prior", "options"] and len(parts) == 3:
        options = prior_options(cfg.prior)  # typed, so the value is checked against the option's type
        if parts[2] not in {f.name for f in dataclasses.fields(options)}:
            raise ValueError(f"unknown setting {path}; the {cfg.prior.name} prior's options are "
                             f"{', '.join('prior.options.' + f.name for f in dataclasses.fields(options))}")
        hint = typing.get_type_hints(type(options))[parts[2]]
        cfg.prior.options = {**cfg.prior.options, parts[2]: parse_value(value, hint, path)}
        return
    obj = cfg
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(obj) or part not in {f.name for f in dataclasses.fields(obj)}:
            known = [f.path for f in config_fields(cfg)]
            raise ValueError(f"unknown setting {path!r}; see `python -m psd_gs config` for all {len(known)} "
                             f"settings (e.g. {', '.join(known[:3])})")
        if i == len(parts) - 1:
            hint = typing.get_type_hints(type(obj))[part]
            if dataclasses.is_dataclass(hint):
                raise ValueError(f"{path} is a group of settings; set one of its fields, e.g. {path}."
                                 f"{dataclasses.fields(hint)[0].name}")
            new = parse_value(value, hint, path)
            if path == "prior.name" and new != cfg.prior.name:  # options and weights belong to a prior
                cfg.prior.options, cfg.prior.source = {}, ""
            setattr(obj, part, new)
        obj = getattr(obj, part)


def apply_overrides(cfg: RunConfig, overrides: Union[Mapping[str, Any], List[str]]) -> RunConfig:
    """Set every ``path=value`` (a mapping, or "path=value" strings as ``--set`` takes them); returns cfg."""
    if not isinstance(overrides, Mapping):
        pairs = {}
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"--set {item!r}: expected PATH=VALUE, e.g. guidance.tau=0.3")
            path, value = item.split("=", 1)
            pairs[path.strip()] = value
        overrides = pairs
    for path, value in overrides.items():
        set_field(cfg, path, value)
    return cfg


def check_fields(obj: Any, prefix: str = "") -> None:
    """ValueError naming the first field of ``obj`` (not nested) outside its knob's range or choices."""
    for f in dataclasses.fields(obj):
        value, meta = getattr(obj, f.name), f.metadata
        if value is None or isinstance(value, (tuple, dict)) or dataclasses.is_dataclass(value):
            continue
        path = f"{prefix}{f.name}"
        if meta.get("choices") and value not in meta["choices"]:
            raise ValueError(f"{path} = {value!r}: choose one of {', '.join(meta['choices'])}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if value != value:  # NaN
            raise ValueError(f"{path} = nan: must be a number")
        if meta.get("minimum") is not None and value < meta["minimum"]:
            raise ValueError(f"{path} = {value}: must be >= {meta['minimum']}")
        if meta.get("maximum") is not None and value > meta["maximum"]:
            raise ValueError(f"{path} = {value}: must be <= {meta['maximum']}")
        if meta.get("above") is not None and not value > meta["above"]:
            raise ValueError(f"{path} = {value}: must be > {meta['above']}")


# ---- presets ----------------------------------------------------------------------------------


def _shapes() -> RunConfig:
    # Measured (bench/RESULTS.md): densification and CFG above ~2 both cost fidelity in this world.
    # The turntable at 160 px: on a CPU, 24 views at 256 px took 14 s, more than the 400 steps themselves.
    # The mesh at 64^3: 0.5 s on a CPU for the world's objects, against 4-10 s at 128^3 (bench/RESULTS.md).
    return RunConfig(steps=400, reward="shapes-warm", turntable_resolution=160, mesh_resolution=64,
                     prior=PriorConfig("shapes", options={"data_std": 0.1, "pose_grid": (5, 24)}),
                     scene=SceneConfig(n_init=3000, densify=False, color_jitter=0.1, lr_sh0=0.03),
                     camera=CameraConfig(batch=1, resolution=((0.0, 64),), background="white", radius=(2.0, 2.0)),
                     # PSD (issue 13, bench/RESULTS.md): pair steps at t >= 0.6 T, lambda_p 1 (2 hit as
                     # often at 0.6 dB less fidelity); 8 candidates hit as often, at 1 dB less fidelity.
                     # The learned negative changed no run here (its 12 logits move ~0.2 under CFG 1.5), so
                     # it is off; neg_lr 0.05 turns it on
                     guidance=GuidanceConfig(cfg_scale=1.5, lambda_p=1.0, tau=3.0, pair_window=(0.0, 0.4),
                                             pair_t_min=0.6, neg_lr=0.0, neg_every=8, beta=10.0, gamma=1e-3,
                                             lambda_r=1000.0))


def _learned() -> RunConfig:
    # The shapes world through the small SD trained here (issue 23, bench/RESULTS.md). Its prior is not told the
    # camera (as SD is not), so one view a step lets each view pull toward any pose of the object: in a pilot on a
    # checkpoint a third of the way through training, SDS left "a red cube" a rounded blob (12 dB) with one view a
    # step, 20.0 dB with two and 21.5 dB with four, as in the sd preset. CFG 7.5 as SD's: in the same pilot, SDS
    # at 1.5 had not changed the initial colour after 200 steps.
    cfg = _shapes()
    cfg.prior = PriorConfig("learned")
    cfg.camera.batch = 4
    cfg.guidance.cfg_scale = 7.5
    # PSD through a diffusion network (issue 32, bench/RESULTS.md): one-step guesses at high noise are one blurred
    # mean here, so each candidate's guess is a 4-step DDIM sample; the prior is not told the camera, so each view
    # ranks its own candidates; the step pulls the pixels toward the decoded winner (a latent pull met the target
    # latent with pixels that stayed green), keeping the winner's noise until a candidate beats it
    cfg.guidance = psd_through_a_network(cfg.guidance)
    return cfg


def psd_through_a_network(g: GuidanceConfig) -> GuidanceConfig:
    """The PSD settings the learned and sd presets share (issue 32): the choice made at t >= 0.88 T in the first
    quarter of the run from 4 candidates' 4-step guesses, ranked per view and pulled toward in pixels; then SDS
    against e_ref (sds_tail), so the learned negative, where on, acts only while the choice is made."""
    return dataclasses.replace(g, n_candidates=4, guess_steps=4, guess_space="image", keep_winner=True,
                               rank_by="view", pair_t_min=0.88, pair_window=(0.0, 0.25), sds_tail=0.25)


def _sd() -> RunConfig:
    # Densification refines at steps 200..500 (every 100 from 0.1 to 0.6 of the run); one opacity reset at
    # 300 lets the refinements at 400 and 500 prune what stayed transparent (a reset must fall inside the
    # densification window to do anything: generate.schedule_events lists when each event fires).
    return RunConfig(steps=1000, reward="hpsv2", preview_every=20, prior=PriorConfig("sd"),
                     turntable_resolution=512,
                     scene=SceneConfig(n_init=5000, densify_until=0.6, densify_every=100,
                                       opacity_reset_every=300),
                     camera=CameraConfig(batch=4, resolution=((0.0, 128), (0.3, 256), (0.6, 512)),
                                         background="mixed"),
                     # PSD set by the rule measured through the learned prior (issue 32; README, "PSD's
                     # settings"): the same as the learned preset's, plus the paper's learned negative
                     guidance=psd_through_a_network(GuidanceConfig(cfg_scale=7.5, lambda_p=1.0, tau=3.0, neg_lr=1e-3,
                                                                   neg_every=8, beta=1000.0, gamma=0.1)))


PRESETS = {"shapes": _shapes, "learned": _learned, "sd": _sd}


def preset_of_prior(prior: str, world_preset: str) -> str:
    """The preset to start from when ``prior`` is chosen in ``world_preset``'s world: the world's own when it
    uses that prior, else the first preset built on ``prior`` (its defaults suit it), else the world's."""
    if preset(world_preset).prior.name == prior:
        return world_preset
    return next((name for name, make in PRESETS.items() if make().prior.name == prior), world_preset)


def preset(name: str, **overrides: Any) -> RunConfig:
    """The named preset with top-level fields replaced by ``overrides`` (e.g. prompt, steps, seed)."""
    if name not in PRESETS:
        raise ValueError(f"preset {name!r} is unknown; choose one of {sorted(PRESETS)}")
    cfg = PRESETS[name]()
    unknown = [k for k in overrides if not hasattr(cfg, k)]
    if unknown:
        raise ValueError(f"unknown RunConfig fields {unknown}")
    return dataclasses.replace(cfg, **overrides)
