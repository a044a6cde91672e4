"""Frame: where a splat made elsewhere sits, in its own units, relative to the training cameras (issue 26).

The training cameras look at the origin from a distance of about 2 (``CameraConfig.radius``), and a run
grows its object inside a ball of radius ``SceneConfig.init_radius``. A splat from another tool sits
anywhere, at any size. Refinement does not move the splat: it moves the cameras. A point x of the input
is seen where the normalised point x_n = (x - centre) / scale would be seen by the training camera, so

    viewmat = [R | T]   (world-to-camera of the normalised frame)
    ->  [R | scale * T - R centre]   (the same view of the input's own frame: camera coordinates times scale)

which projects every point to the same pixel (a pinhole projects y and scale * y alike). The splat's
parameters stay in the input's frame from the first step to scene.ply, so writing back is exact: the
frame is never applied to them, only to the cameras. Renders without a gradient (previews, turntable,
evaluation against the world's objects) use ``normalised``, a copy in the cameras' frame.

``fit`` places the frame on the Gaussians that show (opacity >= 0.05; all when none does): the centre is
the middle of their 1st..99th percentile box (stray floaters do not pull it), the scale their 98th
percentile distance from it over ``radius``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import torch

from .cameras import Cameras
from .gaussians import GaussianScene

VISIBLE_OPACITY = 0.05
# gsplat's and our rasteriser's near plane is 0.01 camera units; the cameras stand ~2 scales from the centre
MIN_SCALE = 0.02


@dataclass(frozen=True)
class Frame:
    """centre (x, y, z) and scale of the object in its own units: the cameras see (x - centre) / scale."""

    centre: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0

    @property
    def identity(self) -> bool:
        return self.centre == (0.0, 0.0, 0.0) and self.scale == 1.0

    @classmethod
    def fit(cls, scene: GaussianScene, radius: float) -> "Frame":
        """The frame that puts ``scene``'s visible Gaussians inside a ball of ``radius`` around the origin.
        Raises ValueError when the splat is too small for the rasteriser's near plane (a point, or units
        far too large for the object)."""
        with torch.no_grad():
            means = scene.means.detach().double().cpu()
            shown = scene.opacities.detach().cpu() >= VISIBLE_OPACITY
            pts = means[shown] if bool(shown.any()) else means
            lo, hi = torch.quantile(pts, 0.01, dim=0), torch.quantile(pts, 0.99, dim=0)
            centre = (lo + hi) / 2
            extent = torch.quantile((pts - centre).norm(dim=1), 0.98).item()
        scale = extent / radius
        if not math.isfinite(scale) or scale < MIN_SCALE:
            raise ValueError(f"the splat's visible Gaussians span {2 * extent:.3g} units across, too small for the "
                             f"cameras (in these units the rasteriser's near plane would cut it; it needs at least "
                             f"{2 * MIN_SCALE * radius:.3g}): scale the file up, or check that it holds an object and "
                             "not a single point")
        return cls(tuple(float(c) for c in centre), float(scale))

    def cameras(self, cams: Cameras) -> Cameras:
        """The same views of the input's own frame (same pixels; depth in the input's units)."""
        if self.identity:
            return cams
        vm = cams.viewmats.clone()
        R = vm[:, :3, :3]
        c = torch.tensor(self.centre, dtype=vm.dtype, device=vm.device)
        vm[:, :3, 3] = self.scale * vm[:, :3, 3] - R @ c
        return Cameras(vm, cams.Ks, cams.width, cams.height, cams.elevation, cams.azimuth,
                       cams.radius * self.scale, cams.fovy)

    def normalised(self, scene: GaussianScene) -> GaussianScene:
        """A copy of ``scene`` in the cameras' frame (means (x - centre) / scale, scales / scale), no grad;
        ``scene`` itself when the frame is the identity."""
        if self.identity:
            return scene
        p = scene.detached()
        c = torch.tensor(self.centre, dtype=p["means"].dtype, device=p["means"].device)
        return GaussianScene((p["means"] - c) / self.scale, p["quats"], p["scales"] - math.log(self.scale),
                             p["opacities"], p["sh0"], p["shN"], scene.sh_degree)

    def to_dict(self) -> dict:
        return {"centre": list(self.centre), "scale": self.scale}
