"""What every guidance method shares: timestep schedule, classifier-free guidance, the SDS target loss.

Notation (docs/design.md section 3): z0 = E(x) the render's latent, a_t = alphas_cumprod[t],
z_t = sqrt(a_t) z0 + sqrt(1 - a_t) eps, and the guided noise prediction against a negative e

    eps_s(z_t; e) = eps(z_t; e) + s * (eps(z_t; e_y) - eps(z_t; e)).

A guidance turns a Render into named loss terms; the gradient of their sum w.r.t. the render carries
the method's update. A guidance may own trainable parameters (PSD's learned negative embedding):
it lists them in ``param_groups`` and adds their loss as a term of its own; the loop optimises them
like the scene, under the same NaN guard, checkpointing and logging. No guidance steps an optimiser.
Cameras come with every call that needs them (a prior may condition on the views).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import torch

from ..scene.cameras import Cameras
from ..config import GuidanceConfig
from ..priors.base import DiffusionPrior
from ..render import Render


@dataclass
class GuidanceOut:
    """losses: named scalar terms ("sds", "reward", "negative", ...) whose sum the loop backpropagates;
    logs: named scalars (t, rewards, norms, ...).

    Log values are 0-dim tensors (detached, on the prior's device) or floats: the loop turns them into
    floats in one batch every few steps, so a step never waits for the GPU to log.
    """

    losses: Dict[str, torch.Tensor]
    logs: Dict[str, torch.Tensor | float] = field(default_factory=dict)

    @property
    def loss(self) -> torch.Tensor:
        """The sum of the terms."""
        return sum(self.losses.values())


def sds_target_loss(z0: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """0.5 * ||z0 - stopgrad(z0 - g)||^2 / B, whose gradient w.r.t. z0 [B, ...] is exactly g / B."""
    target = (z0 - g).detach()
    return 0.5 * (z0 - target).square().sum() / z0.shape[0]


class Guidance:
    """Base: holds the frozen prior, the prompt embeddings and the random generators.

    prompt: the text y. e_y = E_text(prompt), e_ref = E_text(cfg.negative_prompt), both [1, ...].
    seed: seeds the generators so a step is reproducible: t is drawn on the CPU (``t_generator``: an
    integer the step needs on the host, without waiting for the GPU), every noise on the prior's
    device (``generator``).
    """

    #: named loss terms of the method -> the GuidanceConfig field holding its weight ("" = always 1)
    TERMS: Dict[str, str] = {"sds": ""}

    def __init__(self, cfg: GuidanceConfig, prior: DiffusionPrior, prompt: str, seed: int = 0):
        self.cfg = cfg.check()
        for term, weight in self.TERMS.items():
            if weight and not hasattr(cfg, weight):
                raise ValueError(f"loss term {term!r} has no weight field {weight!r} in GuidanceConfig")
        self.prior = prior
        self.prompt = prompt
        self.e_y = prior.encode_prompt(prompt)
        self.e_ref = prior.encode_prompt(cfg.negative_prompt)
        self.generator = torch.Generator(device=prior.device).manual_seed(seed)
        self.t_generator = torch.Generator().manual_seed(seed)

    @classmethod
    def events(cls, cfg: GuidanceConfig, steps: int) -> Dict[str, Tuple[bool, List[int]]]:
        """The method's scheduled events in a run of ``steps``: name -> (enabled by ``cfg``, the 0-based steps
        at which it happens). ``generate.schedule_problems`` names an enabled event that never happens."""
        return {}

    def param_groups(self) -> List[dict]:
        """Trainable parameters of the guidance as optimiser groups {"params", "lr", "name"}; none here."""
        return []

    # ---- sampling -----------------------------------------------------------------------------

    def t_max(self, step: int, total: int) -> float:
        """t_max as a fraction of T: t_max_start at step 0, linear to t_max_end at the last step."""
        frac = step / max(total - 1, 1)
        return self.cfg.t_max_start + (self.cfg.t_max_end - self.cfg.t_max_start) * frac

    def sample_t(self, step: int, total: int, t_min: float | None = None) -> int:
        """One integer timestep t ~ U[t_min T, t_max(step) T], shared by the batch (``t_min``: a higher
        lower end, a fraction of T, capped at t_max(step))."""
        T = self.prior.num_train_timesteps
        lo = int(round(max(self.cfg.t_min, t_min or 0.0) * T))
        hi = min(T - 1, int(round(self.t_max(step, total) * T)))
        lo = min(lo, hi)
        return int(torch.randint(lo, hi + 1, (1,), generator=self.t_generator))

    def noise_like(self, z: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like z, from this guidance's generator."""
        return torch.randn(z.shape, generator=self.generator, device=z.device, dtype=z.dtype)

    def alpha(self, t: int) -> torch.Tensor:
        """a_t as a 0-dim float32 tensor."""
        return self.prior.alphas_cumprod[t].float()

    # ---- the prior under classifier-free guidance ---------------------------------------------

    def predict_two(self, z_t: torch.Tensor, t: int, e_first: torch.Tensor, e_second: torch.Tensor,
                    cams: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps(z_t; e_first), eps(z_t; e_second)) for z_t [M, C, h, w], in ONE prior call on 2M samples.

        Batch order, named because codebases differ: the M samples under ``e_first``, then the M under
        ``e_second``. Embeddings [1, ...] or [M, ...]. ``cams``: the V views (M a stack of V-view blocks).
        """
        M = z_t.shape[0]
        emb = torch.cat([e_first.expand(M, *e_first.shape[1:]), e_second.expand(M, *e_second.shape[1:])])
        ts = torch.full((2 * M,), t, dtype=torch.long, device=z_t.device)
        eps_first, eps_second = self.prior.predict_noise(torch.cat([z_t, z_t]), ts, emb, cams).chunk(2)
        return eps_first, eps_second

    def guided_eps(self, z_t: torch.Tensor, t: int, e_neg: torch.Tensor, e_cond: torch.Tensor,
                   cams: Cameras) -> torch.Tensor:
        """eps_s(z_t; e_neg) for z_t [M, C, h, w], in one prior call: the negative half first (diffusers'
        "uncond" half), then the conditional half under ``e_cond`` = e_y. Differentiable in e_neg."""
        eps_neg, eps_cond = self.predict_two(z_t, t, e_neg, e_cond, cams)
        return eps_neg + self.cfg.cfg_scale * (eps_cond - eps_neg)

    def latents(self, render: Render) -> torch.Tensor:
        """z0 [B, C, h, w] of the render's rgb [B, H, W, 3], differentiable."""
        return self.prior.encode_images(render.rgb.permute(0, 3, 1, 2))

    def sds_gradient(self, z0: torch.Tensor, t: int, e_neg: torch.Tensor, cams: Cameras) -> torch.Tensor:
        """g = w(t) (eps_s(z_t; e_neg) - eps), w(t) = 1 - a_t, one fresh noise; no grad. [B, C, h, w]."""
        a = self.alpha(t)
        with torch.no_grad():
            eps = self.noise_like(z0)
            z_t = a.sqrt() * z0.detach() + (1 - a).sqrt() * eps
            return (1 - a) * (self.guided_eps(z_t, t, e_neg, self.e_y, cams) - eps)

    def step(self, render: Render, cams: Cameras, step: int, total: int) -> GuidanceOut:
        """The loss terms for ``render`` (B views seen from ``cams``) at ``step`` of ``total``."""
        raise NotImplementedError

    def state_dict(self) -> Dict[str, object]:
        """What a checkpoint needs to continue this guidance exactly: the generators' states."""
        return {"generator": self.generator.get_state(), "t_generator": self.t_generator.get_state()}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.generator.set_state(state["generator"])
        self.t_generator.set_state(state["t_generator"])

    def summary(self) -> Dict[str, object]:
        """What the method did over the whole run (resumes included), for metrics.json: {} here."""
        return {}
