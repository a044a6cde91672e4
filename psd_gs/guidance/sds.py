"""Score distillation sampling (docs/design.md section 3): the base term every method shares."""

from __future__ import annotations

from ..scene.cameras import Cameras
from ..render import Render
from .base import Guidance, GuidanceOut, sds_target_loss


class SDSGuidance(Guidance):
    """g = w(t) (eps_s(z_t; e_ref) - eps) on z0 = E(render), applied with the target trick."""

    def step(self, render: Render, cams: Cameras, step: int, total: int) -> GuidanceOut:
        z0 = self.latents(render)
        t = self.sample_t(step, total)
        g = self.sds_gradient(z0, t, self.e_ref, cams)
        return GuidanceOut({"sds": sds_target_loss(z0, g)}, {"t": float(t), "grad_norm": g.norm()})
