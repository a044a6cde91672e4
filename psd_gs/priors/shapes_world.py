"""The offline shapes world's objects and vocabulary (docs/design.md section 5), read from psd_gs/assets/shapes.json.

Each reference object is a coloured shape (sphere, cube, torus, cone) built deterministically as a
small Gaussian scene: ``n`` isotropic Gaussians on its surface (radius ~0.45, centred at the origin,
+y up), opacity 0.97, colour shaded by a fixed light so that shape reads in a view, not only the
silhouette. A prompt selects objects by its words: every colour word and every shape word it
names must match ("a red cube" -> the red cube; "a cube" -> every cube; "a shape" -> everything).
The empty prompt selects every object (the unconditional model).
"""

from __future__ import annotations

import json
import math
import re
from importlib import resources
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..scene.gaussians import GaussianScene, rgb_to_sh0

ASSETS = Path(str(resources.files("psd_gs") / "assets" / "shapes.json"))  # package data
LIGHT = F.normalize(torch.tensor([0.4, 0.8, 0.6], dtype=torch.float64), dim=0)  # from upper front-right


@dataclass(frozen=True)
class ShapeObject:
    color: str  # colour word, e.g. "red"
    shape: str  # shape word, e.g. "cube"
    rgb: Tuple[float, float, float]  # base colour in [0, 1]

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


def _surface(shape: str, params: dict, n: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """n points [n, 3] on the shape's surface, uniform by area, and outward unit normals [n, 3].

    The uniform variables come from a scrambled Sobol sequence, which covers the surface far more
    evenly than independent draws: with Gaussians 0.6x the point spacing there are no holes.
    """
    u = torch.quasirandom.SobolEngine(3, scramble=True, seed=seed).draw(n, dtype=torch.float64)  # [n, 3]
    up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    if shape == "sphere":
        y = 1 - 2 * u[:, 0]
        phi = 2 * math.pi * u[:, 1]
        rho = (1 - y * y).clamp_min(0).sqrt()
        nrm = torch.stack([rho * torch.cos(phi), y, rho * torch.sin(phi)], -1)
        return params["radius"] * nrm, nrm
    if shape == "cube":
        h = params["half_size"]
        face = torch.arange(n) % 6  # an equal share per face, each laid out by its own 2D Sobol points
        uv = torch.empty(n, 2, dtype=torch.float64)
        for f in range(6):
            sel = face == f
            uv[sel] = torch.quasirandom.SobolEngine(2, scramble=True, seed=seed + f).draw(int(sel.sum()), dtype=torch.float64)
        uv = (2 * uv - 1) * h
        axis, sign = face // 2, ((face % 2) * 2 - 1).double()
        pts = torch.empty(n, 3, dtype=torch.float64)
        nrm = torch.zeros(n, 3, dtype=torch.float64)
        for a in range(3):
            sel = axis == a
            face_pts = torch.empty(int(sel.sum()), 3, dtype=torch.float64)
            face_pts[:, a] = sign[sel] * h
            face_pts[:, [i for i in range(3) if i != a]] = uv[sel]
            pts[sel] = face_pts
            nrm[sel, a] = sign[sel]
        return pts, nrm
    if shape == "torus":  # ring in the xz-plane, axis +y
        R, r = params["major"], params["minor"]
        theta = 2 * math.pi * u[:, 0]
        # the area element grows with R + r cos(v): invert its CDF in v numerically
        grid = torch.linspace(0, 2 * math.pi, 4097, dtype=torch.float64)
        cdf = (R * grid + r * torch.sin(grid)) / (2 * math.pi * R)
        v = torch.from_numpy(np.interp(u[:, 1].numpy(), cdf.numpy(), grid.numpy()))
        ring = torch.stack([torch.cos(theta), torch.zeros_like(theta), torch.sin(theta)], -1)
        nrm = torch.cos(v)[:, None] * ring + torch.sin(v)[:, None] * up
        return R * ring + r * nrm, nrm
    if shape == "cone":  # apex up, base at y = -height/2
        rad, hgt = params["radius"], params["height"]
        slant = math.hypot(rad, hgt)
        side = u[:, 0] < slant / (slant + rad)  # lateral area pi r l against base area pi r^2
        phi = 2 * math.pi * u[:, 1]
        s = u[:, 2].sqrt()  # uniform by area on the disc and on the lateral surface
        dirs = torch.stack([torch.cos(phi), torch.zeros_like(phi), torch.sin(phi)], -1)
        pts = s[:, None] * rad * dirs
        pts[:, 1] = torch.where(side, hgt / 2 - s * hgt, torch.full_like(s, -hgt / 2))
        nrm = torch.where(side[:, None], F.normalize(hgt * dirs + rad * up, dim=-1), -up.expand(n, 3))
        return pts, nrm
    raise ValueError(f"unknown shape {shape!r}")


class ShapesWorld:
    """The reference objects, their vocabulary and the prompt-to-subset rule."""

    def __init__(self, path: Path = ASSETS):
        self.path = Path(path)
        spec = json.loads(self.path.read_text())
        self.background: Tuple[float, float, float] = tuple(spec["background"])
        self.colors = {k: tuple(v) for k, v in spec["colors"].items()}
        self.shape_params = spec["shapes"]
        self.objects: List[ShapeObject] = [ShapeObject(c, s, self.colors[c]) for c, s in spec["objects"]]
        self.any_shape_words = set(spec["any_shape_words"])
        self.filler_words = set(spec["filler_words"])

    def __len__(self) -> int:
        return len(self.objects)

    @property
    def vocabulary(self) -> str:
        """The words prompts may use, for error messages and the app's examples."""
        shapes = sorted({o.shape for o in self.objects})
        colors = sorted({o.color for o in self.objects})
        return f"colours {colors}, shapes {shapes} (or {sorted(self.any_shape_words)})"

    def select(self, prompt: str) -> List[int]:
        """Indices of the objects ``prompt`` allows. ValueError if a word is unknown or none match."""
        words = [w for w in re.findall(r"[a-z0-9]+", prompt.lower()) if w not in self.filler_words]
        nouns = {o.shape for o in self.objects} | self.any_shape_words
        words = [w[:-1] if w.endswith("s") and w[:-1] in nouns else w for w in words]  # plurals
        known = set(self.colors) | nouns
        unknown = [w for w in words if w not in known]
        if unknown:
            raise ValueError(f"the shapes world does not know {unknown} in prompt {prompt!r}; "
                             f"use {self.vocabulary}, e.g. 'a red cube' or 'a sphere'")
        colors = {w for w in words if w in self.colors}
        shapes = {w for w in words if w not in self.colors and w not in self.any_shape_words}
        chosen = [k for k, o in enumerate(self.objects)
                  if (not colors or o.color in colors) and (not shapes or o.shape in shapes)]
        if not chosen:
            raise ValueError(f"no object in the shapes world matches {prompt!r}; it has "
                             f"{[o.name for o in self.objects]}")
        return chosen

    def surface(self, k: int, n: int = 400) -> Tuple[torch.Tensor, torch.Tensor]:
        """Object k's n surface points [n, 3] and outward unit normals [n, 3] (float64), the same every time."""
        obj = self.objects[k]
        return _surface(obj.shape, self.shape_params[obj.shape], n, seed=1000 + k)

    def area(self, k: int) -> float:
        """Surface area of object k."""
        shape, p = self.objects[k].shape, self.shape_params[self.objects[k].shape]
        if shape == "sphere":
            return 4 * math.pi * p["radius"] ** 2
        if shape == "cube":
            return 6 * (2 * p["half_size"]) ** 2
        if shape == "torus":
            return 4 * math.pi ** 2 * p["major"] * p["minor"]
        return math.pi * p["radius"] * (p["radius"] + math.hypot(p["radius"], p["height"]))  # cone

    def build(self, k: int, n: int = 400) -> GaussianScene:
        """Object k as a GaussianScene of n Gaussians (float32, CPU), the same every time."""
        pts, nrm = self.surface(k, n)
        scale = 0.6 * math.sqrt(self.area(k) / n)  # 0.6 x the mean point spacing
        shade = 0.55 + 0.45 * (nrm @ LIGHT).clamp_min(0.0)  # [n]
        rgb = torch.tensor(self.objects[k].rgb, dtype=torch.float64) * shade[:, None]
        quats = torch.zeros(n, 4, dtype=torch.float64)
        quats[:, 0] = 1
        return GaussianScene(pts, quats, torch.full((n, 3), math.log(scale), dtype=torch.float64),
                             torch.full((n,), math.log(0.97 / 0.03), dtype=torch.float64),
                             rgb_to_sh0(rgb)[:, None, :]).to("cpu", torch.float32)

    def build_all(self, n: int = 400) -> Tuple[GaussianScene, torch.Tensor]:
        """All K objects in one scene [K n Gaussians] and each Gaussian's object index [K n]."""
        parts = [self.build(k, n) for k in range(len(self))]
        scene = GaussianScene(*[torch.cat([p.params[name].detach() for p in parts]) for name in
                                ("means", "quats", "scales", "opacities", "sh0", "shN")])
        return scene, torch.arange(len(self)).repeat_interleave(n)
