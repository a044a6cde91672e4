"""Typed configs with named presets. DESIGN.md's symbols are noted next to each field.

``RunConfig`` holds everything one generation needs; ``preset(name, **overrides)`` returns the
``shapes`` (offline closed-form world, runs anywhere) or ``sd`` (Stable Diffusion, GPU) defaults.
The resolved config is saved as config.json at the start of each run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

METHODS = ("sds", "psd", "reward_grad")


@dataclass
class GuidanceConfig:
    """Every knob of the three guidance methods (DESIGN.md sections 3 and 4).

    Ablations: PSD without the pair term is ``lambda_p = 0``; without the adaptive negative,
    ``neg_lr = 0``; with both off PSD is exactly SDS.
    """

    method: str = "psd"  # "sds", "psd" or "reward_grad"
    negative_prompt: str = ""  # text of the reference negative embedding e_ref
    cfg_scale: float = 7.5  # s: classifier-free guidance scale; the adaptive negative needs s > 1
    t_min: float = 0.02  # lower end of t ~ U[t_min, t_max(step)], as a fraction of T
    t_max_start: float = 0.98  # t_max at step 0 ...
    t_max_end: float = 0.5  # ... annealed linearly to this at the last step
    # PSD pair term
    lambda_p: float = 1.0  # lambda_p: weight of the preference pair term
    tau: float = 0.01  # tau: reward gap at which k(d) = clamp(d / tau, 0, 1) saturates
    pair_window: Tuple[float, float] = (0.0, 0.5)  # fractions of the run where the pair term acts
    # PSD adaptive negative embedding e_n
    neg_lr: float = 1e-3  # Adam learning rate of e_n; 0 freezes e_n = e_ref
    neg_every: int = 8  # one e_n update every this many steps (cost: see bench/step_cost.py)
    neg_views: int = 1  # views of the batch the e_n update uses (its UNet backward's memory grows with it)
    beta: float = 1000.0  # beta: Diffusion-DPO inverse temperature
    gamma: float = 0.1  # gamma: weight of |e_n - e_ref|^2 (mean over elements)
    # reward-gradient baseline
    lambda_r: float = 1.0  # lambda_r: weight of -R(render), whose gradient flows into the pixels

    def check(self) -> "GuidanceConfig":
        """Raise ValueError naming the first field out of range; returns self."""
        def bad(name: str, why: str) -> None:
            raise ValueError(f"GuidanceConfig.{name} = {getattr(self, name)!r}: {why}")

        if self.method not in METHODS:
            bad("method", f"choose one of {list(METHODS)}")
        if not self.cfg_scale >= 1.0:
            bad("cfg_scale", "must be >= 1 (1 turns guidance off)")
        if not 0.0 <= self.t_min < self.t_max_end <= 1.0 or not self.t_min < self.t_max_start <= 1.0:
            bad("t_min", f"need 0 <= t_min < t_max_end, t_max_start <= 1 (t_max_start={self.t_max_start}, "
                         f"t_max_end={self.t_max_end})")
        for name in ("lambda_p", "neg_lr", "beta", "gamma", "lambda_r"):
            if not getattr(self, name) >= 0.0:
                bad(name, "must be >= 0")
        if not self.tau > 0.0:
            bad("tau", "must be > 0 (it divides the reward gap)")
        lo, hi = self.pair_window
        if not 0.0 <= lo <= hi <= 1.0:
            bad("pair_window", "must be (start, end) fractions of the run with 0 <= start <= end <= 1")
        if not (isinstance(self.neg_every, int) and self.neg_every >= 1):
            bad("neg_every", "must be a whole number >= 1")
        if not (isinstance(self.neg_views, int) and self.neg_views >= 1):
            bad("neg_views", "must be a whole number >= 1")
        return self


@dataclass
class SceneConfig:
    """The Gaussians at step 0 and how they are optimised."""

    n_init: int = 1000  # Gaussians at initialisation, uniform in a ball
    init_radius: float = 0.5  # world units
    init_opacity: float = 0.1
    sh_degree: int = 0  # 0..3
    color_jitter: Optional[float] = None  # None: random colour per Gaussian; x: one colour per seed +- x
    # Adam learning rates per raw tensor (DreamGaussian's, with its position decay)
    lr_means: float = 1e-3  # at step 0, decayed log-linearly to lr_means_final
    lr_means_final: float = 2e-5
    lr_quats: float = 5e-3
    lr_scales: float = 5e-3
    lr_opacities: float = 5e-2
    lr_sh0: float = 1e-2
    lr_shN: float = 5e-4
    # densification (gsplat DefaultStrategy); steps as fractions of the run
    densify: bool = True
    densify_from: float = 0.1
    densify_until: float = 0.7
    densify_every: int = 50
    grow_grad2d: float = 2e-4  # screen-space gradient threshold
    prune_opa: float = 0.01
    opacity_reset_every: int = 0  # 0: never (gsplat 1.5.3's own reset never fires; the loop does it)
    max_gaussians: int = 20000


@dataclass
class CameraConfig:
    """Training cameras (psd_gs/cameras.py conventions) and the render resolution schedule."""

    batch: int = 1  # views per step
    elevation: Tuple[float, float] = (-10.0, 45.0)  # degrees
    azimuth: Tuple[float, float] = (-180.0, 180.0)
    radius: Tuple[float, float] = (2.5, 2.5)
    fovy: Tuple[float, float] = (49.1, 49.1)
    resolution: Tuple[Tuple[float, int], ...] = ((0.0, 64),)  # (from fraction of the run, pixels)
    background: str = "white"  # "white", "black", "random" (per step), "mixed" (white or random)
    grid: Optional[Tuple[int, int]] = None  # (n_elevation, n_azimuth): draw poses from this fixed grid

    def resolution_at(self, step: int, total: int) -> int:
        frac = step / max(total, 1)
        return [res for start, res in self.resolution if start <= frac][-1]


@dataclass
class RunConfig:
    """One generation."""

    prompt: str = "a red cube"
    preset: str = "shapes"  # "shapes" or "sd"
    steps: int = 400
    seed: int = 0
    out_dir: str = "runs"  # each run writes only inside its own folder below this
    device: str = "auto"  # "auto": CUDA when available, else CPU
    reward: str = "shapes-warm"  # a name from psd_gs.rewards.registry.REWARDS
    prior: str = ""  # sd: hub id or folder of the SD checkpoint ("" = the default)
    data_std: float = 0.1  # shapes: s, each object's spread in latent space
    preview_every: int = 10  # a preview image in Progress every this many steps (0: never)
    checkpoint_every: int = 0  # save a resumable checkpoint every this many steps (0: never)
    max_nan_steps: int = 5  # stop with an error after this many non-finite steps in a row
    turntable_views: int = 24
    scene: SceneConfig = field(default_factory=SceneConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)

    MAX_PROMPT = 300  # characters

    def check(self) -> "RunConfig":
        """Raise ValueError naming the first bad field and how to fix it; returns self."""
        text = self.prompt.strip()
        if not text:
            raise ValueError("prompt is empty: describe the object, e.g. 'a red cube'")
        if len(text) > self.MAX_PROMPT:
            raise ValueError(f"prompt has {len(text)} characters; keep it under {self.MAX_PROMPT}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r} is unknown; choose one of {sorted(PRESETS)}")
        if not 1 <= self.steps <= 100_000:
            raise ValueError(f"steps = {self.steps}: must be between 1 and 100000")
        if not 0 <= self.seed < 2 ** 63:
            raise ValueError(f"seed = {self.seed}: must be a whole number >= 0")
        if self.camera.batch < 1:
            raise ValueError(f"camera.batch = {self.camera.batch}: must be >= 1")
        if self.camera.grid is not None and (self.camera.radius[0] != self.camera.radius[1]
                                             or self.camera.fovy[0] != self.camera.fovy[1]):
            raise ValueError("camera.grid needs one radius and one fovy: set both ends of each range equal")
        if self.camera.background not in ("white", "black", "random", "mixed"):
            raise ValueError(f"camera.background = {self.camera.background!r}: choose white, black, random or mixed")
        for _, res in self.camera.resolution:
            if res < 16 or res > 2048 or res % 8:
                raise ValueError(f"resolution {res}: must be a multiple of 8 between 16 and 2048")
        if not 1 <= self.scene.n_init <= self.scene.max_gaussians:
            raise ValueError(f"scene.n_init = {self.scene.n_init}: must be between 1 and scene.max_gaussians")
        if not 0 <= self.scene.sh_degree <= 3:
            raise ValueError(f"scene.sh_degree = {self.scene.sh_degree}: must be 0..3")
        if not self.data_std > 0:
            raise ValueError(f"data_std = {self.data_std}: must be > 0")
        self.guidance.check()
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RunConfig":
        d = dict(d)
        scene = SceneConfig(**d.pop("scene", {}))
        cam = d.pop("camera", {})
        cam = CameraConfig(**{k: (tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v)
                              for k, v in cam.items()})
        g = d.pop("guidance", {})
        g = GuidanceConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in g.items()})
        return cls(scene=scene, camera=cam, guidance=g, **d)


def _shapes() -> RunConfig:
    # Measured (bench/RESULTS.md): densification and CFG above ~2 both cost fidelity in this world.
    return RunConfig(preset="shapes", steps=400, reward="shapes-warm",
                     scene=SceneConfig(n_init=3000, densify=False, color_jitter=0.1, lr_sh0=0.03),
                     camera=CameraConfig(batch=1, resolution=((0.0, 64),), background="white", radius=(2.0, 2.0),
                                         grid=(5, 24)),
                     guidance=GuidanceConfig(cfg_scale=1.5, lambda_p=4.0, tau=0.3, pair_window=(0.0, 0.4),
                                             neg_lr=0.05, neg_every=8, beta=10.0, gamma=1e-3, lambda_r=1000.0))


def _sd() -> RunConfig:
    # Densification refines at steps 200..500 (every 100 from 0.1 to 0.6 of the run); one opacity reset at
    # 300 lets the refinements at 400 and 500 prune what stayed transparent (a reset must fall inside the
    # densification window to do anything: generate.schedule_events lists when each event fires).
    return RunConfig(preset="sd", steps=1000, reward="hpsv2", preview_every=20,
                     scene=SceneConfig(n_init=5000, densify_until=0.6, densify_every=100,
                                       opacity_reset_every=300),
                     camera=CameraConfig(batch=4, resolution=((0.0, 128), (0.3, 256), (0.6, 512)),
                                         background="mixed"),
                     guidance=GuidanceConfig(cfg_scale=7.5, tau=0.01, pair_window=(0.0, 0.5), neg_lr=1e-3,
                                             neg_every=8, beta=1000.0, gamma=0.1))


PRESETS = {"shapes": _shapes, "sd": _sd}


def preset(name: str, **overrides: Any) -> RunConfig:
    """The named preset with top-level fields replaced by ``overrides`` (e.g. prompt, steps, seed)."""
    if name not in PRESETS:
        raise ValueError(f"preset {name!r} is unknown; choose one of {sorted(PRESETS)}")
    cfg = PRESETS[name]()
    unknown = [k for k in overrides if not hasattr(cfg, k)]
    if unknown:
        raise ValueError(f"unknown RunConfig fields {unknown}")
    return dataclasses.replace(cfg, **overrides)
