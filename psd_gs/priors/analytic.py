"""The shapes world's closed-form diffusion prior (docs/design.md section 5).

Data: for camera c and prompt embedding e (logits [K] over the world's K objects) the latent of a
view is drawn from the mixture

    p(z | c, e) = sum_k softmax(e)_k N(z; mu_k(c), s^2 I),   mu_k(c) = E(render of object k from c).

Its optimal noise prediction is closed-form (a_t = alphas_cumprod[t], z_t the noisy latent):

    v_t = a_t s^2 + 1 - a_t
    r_k = softmax_k(e_k - |z_t - sqrt(a_t) mu_k|^2 / (2 v_t))          (float64)
    x0_hat = sum_k r_k [mu_k + c_t (z_t - sqrt(a_t) mu_k)],   c_t = sqrt(a_t) s^2 / v_t
    eps = (z_t - sqrt(a_t) x0_hat) / sqrt(1 - a_t)

It is differentiable in e, so PSD's adaptive negative works unchanged. The encoder mimics SD's VAE,
whose latents are 8x smaller than the image: E(x) = 2 avgpool_4(x) - 1 (a 64x64 render gives a
16x16x3 latent), and D upsamples back (nearest, the exact right inverse of the pooling).

Rendering the K objects from every training camera would cost more than the rest of a step, so the
prior trains on a fixed grid of poses (``pose_grid``): mu for a grid pose is rendered the first time a
camera reaches it (one rasteriser call per pose, so its values do not depend on which poses came
first), kept in a table and saved to a disk cache keyed by everything it depends on. A cold cache costs
a new user nothing up front: the first step renders one pose, not the 120 of the whole grid (60 s at
128 px on 2 CPU cores when it was rendered before the first step). ``predict_noise`` looks its cameras
up in that table and renders any camera that is not on a grid, so the prior is exact for every camera
either way.

Prompt embeddings are logits: 0 for the objects the prompt allows, ``MASK`` for the others. MASK is
finite (never -inf, so softmax and its gradient stay defined) and far larger than the distance
term, which reaches |z|^2 / (2 s^2) ~ 1e5 at low noise: -1e4 would let a near disallowed object win.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import threading
import time
import warnings
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..scene.cameras import Cameras, make_cameras, orbit_grid
from ..config import PriorConfig, RunConfig, knob, prior_options
from ..render import view_chunks
from ..render.torch_backend import rasterize_torch
from .base import DiffusionPrior
from .shapes_world import ShapesWorld

MASK = -1e9
POOL = 4


def sd_alphas_cumprod(T: int = 1000) -> torch.Tensor:
    """Stable Diffusion's "scaled linear" schedule (beta 0.00085 -> 0.012), [T] float32."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, T, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float()


@dataclass
class ShapesOptions:
    """The shapes prior's own settings (``prior.options`` of a RunConfig)."""

    data_std: float = knob(0.1, "s: each object's spread around its render, in latent units", above=0.0)
    pose_grid: Optional[Tuple[int, int]] = knob((5, 24), "(elevations, azimuths) of the fixed training pose "
                                                         "grid; none renders the objects at every pose")
    n_per_object: int = knob(400, "Gaussians per reference object", minimum=16, maximum=20000)


def load_shapes_prior(prior: PriorConfig, device: torch.device | str = "cpu") -> "AnalyticPrior":
    """The registry's factory: an AnalyticPrior with ``prior.options``."""
    opts = prior_options(prior)
    return AnalyticPrior(data_std=opts.data_std, n_per_object=opts.n_per_object, pose_grid=opts.pose_grid,
                         device=device)


def check_run(cfg: RunConfig) -> None:
    """ValueError (before any load) for a prompt outside the world's vocabulary, or a pose grid with a
    range of camera distances or fields of view (a grid pose has one of each)."""
    ShapesWorld().select(cfg.prompt)
    if prior_options(cfg.prior).pose_grid is not None and (cfg.camera.radius[0] != cfg.camera.radius[1]
                                                          or cfg.camera.fovy[0] != cfg.camera.fovy[1]):
        raise ValueError("prior.options.pose_grid needs one camera.radius and one camera.fovy: set both ends of "
                         "each range equal, or set prior.options.pose_grid=none")


def memory(cfg: RunConfig, with_weights: bool = True) -> Dict[str, int]:
    """The pose-grid latents this prior keeps (bytes): poses x objects x latent size, per resolution."""
    opts = prior_options(cfg.prior)
    if opts.pose_grid is None:
        return {}
    poses, objects = opts.pose_grid[0] * opts.pose_grid[1], len(ShapesWorld())
    table = sum(poses * objects * 3 * (res // POOL) ** 2 * 4 for _, res in cfg.camera.resolution)
    return {"pose-grid latents": 2 * table}  # the table, and one copy while it loads


class PoseGrid:
    """One resolution's grid of training poses and its disk cache: ``shapes-mu-<digest>.pt`` holds
    {"mu": [P, K, D] float32, "done": [P] bool}; poses not rendered yet are zeros with done False.

    cameras: the P grid cameras; keys: their table keys; filled: indices of the poses in the table.
    """

    SAVE_EVERY = 2.0  # seconds between saves of a grid that is still filling

    def __init__(self, cameras: Cameras, keys: List[Tuple], path: Path, resolution: int):
        self.cameras, self.keys, self.path, self.resolution = cameras, keys, path, resolution
        self.index = {k: i for i, k in enumerate(keys)}
        self.filled: set = set()
        self.saved: set = set()
        self.last_save = time.monotonic()

    def load(self) -> Dict[int, torch.Tensor]:
        """Pose index -> mu [K, D] of every pose the disk cache holds (none when it is missing or unreadable)."""
        try:
            data = torch.load(self.path, map_location="cpu", weights_only=True)
            mu, done = data["mu"], data["done"]
        except (OSError, RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError):
            return {}
        if len(done) != len(self.keys):
            return {}
        self.saved = {int(i) for i in done.nonzero()[:, 0]}
        return {i: mu[i].clone() for i in sorted(self.saved)}

    def save_if_due(self, table: Dict[Tuple, torch.Tensor]) -> None:
        if len(self.filled) == len(self.keys) or time.monotonic() - self.last_save >= self.SAVE_EVERY:
            self.save(table)

    def save(self, table: Dict[Tuple, torch.Tensor]) -> None:
        """Write the poses rendered so far (atomically; a failed write only costs a later re-render)."""
        self.last_save = time.monotonic()
        if self.filled <= self.saved:
            return
        mu = torch.zeros(len(self.keys), *table[self.keys[min(self.filled)]].shape)
        done = torch.zeros(len(self.keys), dtype=torch.bool)
        for i in self.filled:
            mu[i], done[i] = table[self.keys[i]].cpu(), True
        tmp = self.path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"mu": mu, "done": done}, tmp)
            tmp.replace(self.path)
            self.saved = set(self.filled)
        except OSError as err:
            warnings.warn(f"could not save the shapes world's pose table to {self.path}: {err}", RuntimeWarning)
            tmp.unlink(missing_ok=True)


class AnalyticPrior(DiffusionPrior):
    """Closed-form mixture prior over the shapes world's reference objects.

    data_std: s, the spread of each object's latent around its render, in latent units ([-1, 1]).
    n_per_object: Gaussians per reference object.
    pose_grid: (n_elevation, n_azimuth) of the training poses, or None (any pose, rendered each time).
    """

    def __init__(self, world: Optional[ShapesWorld] = None, data_std: float = 0.1, n_per_object: int = 400,
                 device: torch.device | str = "cpu", pose_grid: Optional[Tuple[int, int]] = None):
        self.world = world or ShapesWorld()
        self.data_std = float(data_std)
        self.pose_grid = tuple(pose_grid) if pose_grid is not None else None
        self.device = torch.device(device)
        self.num_train_timesteps = 1000
        self.alphas_cumprod = sd_alphas_cumprod(self.num_train_timesteps).to(self.device)
        objects, owner = self.world.build_all(n_per_object)
        self.objects = objects.to(self.device)
        self.owner = owner.to(self.device)  # [K n] object index of each Gaussian
        self.background = torch.tensor(self.world.background, device=self.device)
        self.n_per_object = n_per_object
        self.table: Dict[Tuple, torch.Tensor] = {}  # pose key -> [K, D] float32, filled as poses are reached
        self._grid_of: Dict[Tuple, PoseGrid] = {}  # pose key -> the registered grid it belongs to
        self._active: List[PoseGrid] = []  # the grids of the run ``prepare`` was last called for
        self._last: Tuple[Tuple, Optional[torch.Tensor]] = ((), None)  # the latest cameras' mu, reused

    # ---- conditioning -------------------------------------------------------------------------

    def encode_prompt(self, text: str) -> torch.Tensor:
        """Logits [1, K]: 0 where the prompt allows the object, MASK elsewhere. "" allows all."""
        allowed = self.world.select(text) if text.strip() else range(len(self.world))
        e = torch.full((1, len(self.world)), MASK, device=self.device)
        e[0, list(allowed)] = 0.0
        return e

    @torch.no_grad()
    def render_objects(self, cameras: Cameras) -> torch.Tensor:
        """Every object from every camera: rgb [B, K, H, W, 3]. Masked rasteriser calls of at most
        ``render.PIXELS_PER_CALL`` pixels each, so memory stays bounded at any resolution."""
        B, K = len(cameras), len(self.world)
        cams = cameras.to(self.device)
        idx = torch.arange(B * K, device=self.device)
        views = cams[idx // K]  # camera b repeated for each object
        mask = self.owner[None, :] == (idx % K)[:, None]  # [B K, K n]: view (b, k) draws object k only
        rgb = torch.cat([rasterize_torch(self.objects, views[part], self.background, retain_means2d_grad=False,
                                         mask=mask[part]).rgb
                         for part in view_chunks(B * K, cams.width, cams.height)])
        return rgb.view(B, K, cams.height, cams.width, 3)

    def latents_of_objects(self, cameras: Cameras) -> torch.Tensor:
        """mu [B, K, D] float32: each object's latent from each camera."""
        rgb = self.render_objects(cameras)
        B, K = rgb.shape[:2]
        return self.encode_images(rgb.flatten(0, 1).permute(0, 3, 1, 2)).reshape(B, K, -1)

    @staticmethod
    def _key(cameras: Cameras, i: int) -> Tuple:
        return (cameras.width, cameras.height, round(float(cameras.elevation[i]), 3),
                round(float(cameras.azimuth[i]) % 360.0, 3), round(float(cameras.radius[i]), 4),
                round(float(cameras.fovy[i]), 4))

    def _grid(self, elevation: Tuple[float, float], grid: Tuple[int, int], radius: float, fovy: float,
              resolution: int, cache_dir: Optional[str] = None) -> "PoseGrid":
        """The pose grid of ``orbit_grid(elevation, *grid)`` at ``resolution``, registered with the prior and
        filled from its disk cache where that holds poses already."""
        el, az = orbit_grid(elevation, *grid)
        cams = make_cameras(el, az, radius, fovy, resolution, resolution)
        spec = {"world": json.loads(self.world.path.read_text()), "n": self.n_per_object, "grid": list(grid),
                "elevation": list(elevation), "radius": radius, "fovy": fovy, "res": resolution, "version": 2}
        digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        folder = Path(cache_dir or os.environ.get("PSD_GS_CACHE") or Path.home() / ".cache" / "psd_gs")
        keys = [self._key(cams, i) for i in range(len(cams))]
        if keys[0] in self._grid_of:
            return self._grid_of[keys[0]]
        g = PoseGrid(cams, keys, folder / f"shapes-mu-{digest}.pt", resolution)
        for i, mu in g.load().items():
            self.table[keys[i]] = mu.to(self.device)
        g.filled = {i for i, k in enumerate(keys) if k in self.table}
        self._grid_of.update({k: g for k in keys})
        return g

    def precompute(self, elevation: Tuple[float, float], grid: Tuple[int, int], radius: float, fovy: float,
                   resolution: int, cache_dir: Optional[str] = None,
                   progress: Optional[Callable[[int, int], None]] = None,
                   cancel: Optional[threading.Event] = None) -> None:
        """Fill the table for every pose of ``orbit_grid(elevation, *grid)`` now (runs fill it lazily, pose by
        pose, as their cameras reach it), from the disk cache where it holds them, and save it.

        ``progress(done, total)`` is called after each pose; ``cancel`` (set) stops between poses, keeping the
        poses done. The cache file's name hashes the world definition, the object size, the grid and the
        camera, so a change to any of them starts a new table. Cache folder: ``cache_dir``, else
        $PSD_GS_CACHE, else ~/.cache/psd_gs.
        """
        g = self._grid(elevation, grid, radius, fovy, resolution, cache_dir)
        for i in range(len(g.keys)):
            if cancel is not None and cancel.is_set():
                break
            if g.keys[i] not in self.table:
                self._render_pose(g, i)
            if progress is not None:
                progress(len(g.filled), len(g.keys))
        g.save(self.table)

    def prepare(self, cfg) -> None:
        """Register the pose grid of the run ``cfg`` (a RunConfig) at each of its resolutions, with the poses
        its disk cache holds already. The other poses are rendered when a camera first reaches them (one pose,
        all K objects, in about 0.1 s at 64 px on a CPU), so the first steps start at once; the table is
        saved as it fills (``PoseGrid.SAVE_EVERY``) and when it is complete."""
        self._active = []
        if self.pose_grid is None:
            return
        cam = cfg.camera
        self._active = [self._grid(cam.elevation, self.pose_grid, cam.radius[0], cam.fovy[0], res)
                        for _, res in cam.resolution]

    def status(self) -> str:
        """How far the pose grids of the latest run have been rendered, while one is incomplete ("" when all are)."""
        open_ = [g for g in self._active if len(g.filled) < len(g.keys)]
        return "; ".join(f"shapes world at {g.resolution} px: {len(g.filled)}/{len(g.keys)} poses rendered "
                         "(each once, then kept)" for g in open_)

    def _render_pose(self, g: "PoseGrid", i: int) -> torch.Tensor:
        """Render grid pose i of ``g`` (all K objects, one rasteriser call per pose, so a pose's latents are the
        same whichever poses are rendered with it) into the table; mu [K, D] float32."""
        mu = self.latents_of_objects(g.cameras[i:i + 1])[0]
        self.table[g.keys[i]] = mu
        g.filled.add(i)
        g.save_if_due(self.table)
        return mu

    def views(self, cameras: Cameras) -> torch.Tensor:
        """Latents mu [V, K, D] float64 of the K objects from the V cameras: from the table; a grid pose not
        rendered yet is rendered and kept; a camera off every grid is rendered each time.

        The latest cameras' mu is kept, since a guidance step asks several times for the same views."""
        keys = tuple(self._key(cameras, i) for i in range(len(cameras)))
        if self._last[0] != keys:
            for k in keys:
                if k not in self.table and k in self._grid_of:
                    g = self._grid_of[k]
                    self._render_pose(g, g.index[k])
            if all(k in self.table for k in keys):
                mu = torch.stack([self.table[k] for k in keys]).double()
            else:
                mu = self.latents_of_objects(cameras).double()
            self._last = (keys, mu)
        return self._last[1]

    # ---- encoder / decoder ----------------------------------------------------------------------

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb [B, 3, H, W] in [0, 1] (H, W multiples of 4) -> z [B, 3, H/4, W/4] in [-1, 1]."""
        return 2.0 * F.avg_pool2d(rgb.float(), POOL) - 1.0

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, 3, h, w] -> rgb [B, 3, 4h, 4w] in [0, 1] (nearest upsampling)."""
        return ((F.interpolate(z.float(), scale_factor=POOL, mode="nearest") + 1.0) / 2.0).clamp(0.0, 1.0)

    # ---- the closed-form noise model -----------------------------------------------------------

    def posterior_mean(self, z_t: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, cameras: Cameras):
        """x0_hat [M, D] float64 and responsibilities r [M, K] for z_t [M, C, h, w], t [M], emb [M, K]
        seen from ``cameras`` (V views; sample i belongs to view i % V)."""
        mu_views = self.views(cameras)
        B = mu_views.shape[0]
        M = z_t.shape[0]
        if M % B:
            raise ValueError(f"batch of {M} is not a stack of {B}-view blocks")
        mu = mu_views[torch.arange(M, device=mu_views.device) % B]  # [M, K, D]
        x = z_t.reshape(M, -1).double()
        a = self.alphas_cumprod[t].double()[:, None]  # [M, 1]
        s2 = self.data_std ** 2
        v = a * s2 + 1.0 - a
        d2 = (x[:, None, :] - a.sqrt()[:, :, None] * mu).square().sum(-1)  # [M, K]
        r = torch.softmax(emb.double() - d2 / (2.0 * v), dim=-1)
        c = a.sqrt() * s2 / v  # [M, 1]
        x0_k = mu + c[:, :, None] * (x[:, None, :] - a.sqrt()[:, :, None] * mu)  # [M, K, D]
        return (r[:, :, None] * x0_k).sum(1), r

    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, cameras: Cameras) -> torch.Tensor:
        """eps [M, C, h, w] float32 for the batch; sample i is conditioned on view i % V."""
        x0, _ = self.posterior_mean(z_t, t, emb, cameras)
        a = self.alphas_cumprod[t].double()[:, None]
        eps = (z_t.reshape(z_t.shape[0], -1).double() - a.sqrt() * x0) / (1.0 - a).sqrt()
        return eps.float().view_as(z_t)
