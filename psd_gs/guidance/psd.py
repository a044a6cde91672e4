"""Preference Score Distillation (docs/design.md section 4).

Per step, with the learnable negative embedding e_n (initialised to e_ref):

1. one t, two noises eps^a, eps^b -> z_t^a, z_t^b from the same z0;
2. one batched prior call (no grad): eps(z_t^i; e_n) and eps(z_t^i; e_y) for i in {a, b}
   (e_ref is not evaluated here: the scene gradient uses e_n only);
3. one-step guesses x0^i = (z_t^i - sqrt(1 - a_t) eps_s(z_t^i; e_n)) / sqrt(a_t), decoded and scored
   by the reward without grad; winner w, loser l, gap d = R^w - R^l >= 0;
4. g = w(t) [ (eps_s^w - eps^w) + lambda_p k(d) ((eps_s^w - eps^w) - (eps_s^l - eps^l)) ],
   k(d) = clamp(d / tau, 0, 1) inside ``pair_window``, else 0; the bracket equals
   sqrt(a_t)/sqrt(1 - a_t) (x0^l - x0^w), so no reward gradient ever touches the scene;
5. every ``neg_every`` steps the loss term "negative": the Diffusion-DPO loss of e_n on the two guesses
   re-noised with one fresh noise at a fresh t' (see ``negative_loss``), on the first ``neg_views``
   views of the batch (the UNet backward for e_n stores activations per sample). e_n is listed in
   ``param_groups`` (learning rate ``neg_lr``), and the loop's Adam steps it after the backward.

The pair is only built when it is used (inside the window with lambda_p > 0, or on an e_n update
step). Otherwise the step is plain SDS against e_n, so with lambda_p = 0 and neg_lr = 0 PSD
reproduces SDS exactly for the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F

from ..cameras import Cameras
from ..config import GuidanceConfig
from ..priors.base import DiffusionPrior
from ..render import Render
from ..rewards.base import RewardModel
from .base import Guidance, GuidanceOut, sds_target_loss


@dataclass
class Pair:
    """Two noisings of one render's latent z0 [B, C, h, w] at one t, ranked by the reward.

    eps, eps_s, x0: [2, B, C, h, w] for (a, b): the noise, eps_s(z_t; e_n), the one-step guess.
    reward: [2, B]; win: [B] long in {0, 1}, the index of the winner w (the other is the loser l).
    """

    t: int
    eps: torch.Tensor
    eps_s: torch.Tensor
    x0: torch.Tensor
    reward: torch.Tensor
    win: torch.Tensor

    def pick(self, x: torch.Tensor, winner: bool) -> torch.Tensor:
        """x [2, B, ...] -> [B, ...]: each view's winner (or loser)."""
        idx = self.win if winner else 1 - self.win
        return x.gather(0, idx.view(1, -1, *[1] * (x.dim() - 2)).expand(1, *x.shape[1:]))[0]

    @property
    def gap(self) -> torch.Tensor:
        """d = R^w - R^l >= 0, [B]."""
        return self.reward.max(0).values - self.reward.min(0).values


class PSDGuidance(Guidance):
    """PSD with a reward model that ranks the prior's own one-step guesses."""

    TERMS = {"sds": "", "pair": "lambda_p", "negative": "neg_lr"}

    def __init__(self, cfg: GuidanceConfig, prior: DiffusionPrior, prompt: str, reward: RewardModel,
                 seed: int = 0):
        super().__init__(cfg, prior, prompt, seed)
        self.reward = reward
        self.e_n = torch.nn.Parameter(self.e_ref.detach().clone())

    @classmethod
    def events(cls, cfg: GuidanceConfig, steps: int) -> Dict[str, Tuple[bool, List[int]]]:
        """"pair": the steps inside ``pair_window``; "negative": the e_n updates."""
        lo, hi = cfg.pair_window
        return {"pair": (cfg.lambda_p > 0 and hi > lo, [s for s in range(steps) if lo <= s / steps < hi]),
                "negative": (cfg.neg_lr > 0, list(range(0, steps, cfg.neg_every)) if cfg.neg_lr > 0 else [])}

    def param_groups(self) -> List[dict]:
        """e_n with learning rate ``neg_lr``; nothing when ``neg_lr`` = 0 (e_n stays e_ref)."""
        return [{"params": [self.e_n], "lr": self.cfg.neg_lr, "name": "e_n"}] if self.cfg.neg_lr > 0 else []

    def state_dict(self) -> Dict[str, object]:
        return super().state_dict() | {"e_n": self.e_n.detach().cpu()}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.e_n.copy_(state["e_n"])

    # ---- the pair -----------------------------------------------------------------------------

    def pair_weight(self, step: int, total: int) -> float:
        """lambda_p inside pair_window (fractions of the run), else 0."""
        lo, hi = self.cfg.pair_window
        frac = step / max(total, 1)
        return self.cfg.lambda_p if lo <= frac < hi else 0.0

    def k(self, gap: torch.Tensor) -> torch.Tensor:
        """Reward-based scaling k(d) = clamp(d / tau, 0, 1)."""
        return (gap / self.cfg.tau).clamp(0.0, 1.0)

    @torch.no_grad()
    def build_pair(self, z0: torch.Tensor, t: int, cams: Cameras) -> Pair:
        """Steps 1-3: two noisings of z0 at t, guided predictions in one call, guesses, rewards."""
        a = self.alpha(t)
        z0 = z0.detach()
        eps = torch.stack([self.noise_like(z0), self.noise_like(z0)])  # [2, B, C, h, w]
        z_t = a.sqrt() * z0 + (1 - a).sqrt() * eps
        B = z0.shape[0]
        eps_s = self.guided_eps(z_t.flatten(0, 1), t, self.e_n, self.e_y, cams).view_as(eps)
        x0 = (z_t - (1 - a).sqrt() * eps_s) / a.sqrt()
        images = self.prior.decode_latents(x0.flatten(0, 1))
        reward = self.reward.score(images, [self.prompt] * (2 * B)).view(2, B).float()
        win = (reward[1] > reward[0]).long()
        return Pair(t, eps, eps_s, x0, reward, win)

    def pair_gradient(self, pair: Pair, lam: float) -> torch.Tensor:
        """Step 4: g [B, C, h, w] on z0."""
        a = self.alpha(pair.t)
        d = pair.pick(pair.eps_s - pair.eps, True)  # eps_s^w - eps^w
        bracket = d - pair.pick(pair.eps_s - pair.eps, False)
        k = self.k(pair.gap).view(-1, *[1] * (d.dim() - 1))
        return (1 - a) * (d + lam * k * bracket)

    # ---- the adaptive negative ----------------------------------------------------------------

    def negative_loss(self, x0_w: torch.Tensor, x0_l: torch.Tensor, t2: int, eps2: torch.Tensor,
                      cams: Cameras) -> torch.Tensor:
        """Diffusion-DPO loss of e_n against e_ref on guesses x0_w, x0_l [B, C, h, w] (detached), seen
        from the B views ``cams``.

        z'^i = sqrt(a_t') x0^i + sqrt(1 - a_t') eps' with one shared eps' [B, C, h, w]; errors
        |eps' - eps_s(z'^i; e)|^2 are means over elements, per view;
        L = -log sigmoid(-beta [(err_n^w - err_ref^w) - (err_n^l - err_ref^l)]) + gamma |e_n - e_ref|^2,
        averaged over views. Differentiable in e_n only.
        """
        a = self.alpha(t2)
        z = torch.cat([x0_w, x0_l]).detach() * a.sqrt() + (1 - a).sqrt() * torch.cat([eps2, eps2])
        M = z.shape[0]
        with torch.no_grad():  # eps(z'; e_ref) and eps(z'; e_y): one call
            eps_ref, eps_y = self.predict_two(z, t2, self.e_ref, self.e_y, cams)
        ts = torch.full((M,), t2, dtype=torch.long, device=z.device)
        eps_n = self.prior.predict_noise(z, ts, self.e_n.expand(M, *self.e_n.shape[1:]), cams)
        s = self.cfg.cfg_scale
        target = torch.cat([eps2, eps2])

        def err(e: torch.Tensor) -> torch.Tensor:  # [2B] per-sample mean squared error
            return (target - (e + s * (eps_y - e))).square().flatten(1).mean(1)

        diff = err(eps_n) - err(eps_ref)
        B = x0_w.shape[0]
        dpo = -F.logsigmoid(-self.cfg.beta * (diff[:B] - diff[B:])).mean()
        return dpo + self.cfg.gamma * (self.e_n - self.e_ref).square().mean()

    # ---- one step -----------------------------------------------------------------------------

    def step(self, render: Render, cams: Cameras, step: int, total: int) -> GuidanceOut:
        z0 = self.latents(render)
        t = self.sample_t(step, total)
        lam = self.pair_weight(step, total)
        update_neg = self.cfg.neg_lr > 0 and step % self.cfg.neg_every == 0
        logs: Dict[str, torch.Tensor | float] = {"t": float(t), "lambda_p": lam}
        if lam > 0 or update_neg:
            pair = self.build_pair(z0, t, cams)
            g = self.pair_gradient(pair, lam)
            logs.update(reward_w=pair.reward.max(0).values.mean(), reward_l=pair.reward.min(0).values.mean(),
                        gap=pair.gap.mean(), k=self.k(pair.gap).mean())
        else:
            g = self.sds_gradient(z0, t, self.e_n.detach(), cams)
        losses = {"sds": sds_target_loss(z0, g)}
        logs["grad_norm"] = g.norm()
        if update_neg:
            n = self.cfg.neg_views
            t2 = self.sample_t(0, 1)  # t' ~ U[t_min, t_max_start]
            x0_w, x0_l = pair.pick(pair.x0, True)[:n], pair.pick(pair.x0, False)[:n]
            losses["negative"] = self.negative_loss(x0_w, x0_l, t2, self.noise_like(x0_w), cams[:n])
            logs.update(t_negative=float(t2), e_n_shift=(self.e_n.detach() - self.e_ref).square().mean().sqrt())
        return GuidanceOut(losses, logs)
