"""Preference Score Distillation (docs/design.md section 4).

Per step, with the learnable negative embedding e_n (initialised to e_ref):

1. one t, N = ``n_candidates`` noises eps^1..eps^N -> z_t^i from the same z0. Inside the pair window
   t ~ U[max(t_min, ``pair_t_min``), t_max(step)]: candidates name different objects only at high
   noise, so that is where the pair steps go;
2. one batched prior call (no grad): eps(z_t^i; e_n) and eps(z_t^i; e_y) for every i
   (e_ref is not evaluated here: the scene gradient uses e_n only);
3. one-step guesses x0^i = (z_t^i - sqrt(1 - a_t) eps_s(z_t^i; e_n)) / sqrt(a_t), decoded and scored
   by the reward without grad; winner w = the best, loser l = the worst candidate, gap d = R^w - R^l
   >= 0. ``rank_by="scene"``: one w and l for all B views, by the reward summed over the views (the
   candidates' noises are indexed alike in every view); ``"view"``: each view ranks its own;
4. g = w(t) (eps_s^w - eps^w) + lambda_p k(u) P inside ``pair_window``, with the gap in the run's own
   units u = d / m, m the median gap of every pair this run has built so far, this one included
   (``pair_scale="run"``; "none": u = d, in the reward's units), and k(u) = clamp(u / tau, 0, 1): a
   reward multiplied by any c > 0 gives the same u, one shifted by a constant the same d, so no
   reward's units reach the scene. A pair is informative when u >= ``min_gap`` and (``gate_render``)
   the winner's guess scores above the render itself, D(z0) (ranked by scene: their means over the
   views) and u > 0 (while every gap so far is 0, m = 0 and so is u). An uninformative pair
   gives plain SDS on the first candidate (k = 0, no selection by the reward). The pair term
   ``pair_space="noise"``: P = w(t) ((eps_s^w - eps^w) - (eps_s^l - eps^l))
                            = sqrt(a_t (1 - a_t)) (x0^l - x0^w);
   ``pair_space="x0"``:    P = x0^l - x0^w (the same direction, without the factor that vanishes at
   high noise, where the candidates differ). No reward gradient ever touches the scene;
5. every ``neg_every`` steps (before ``sds_tail``) the loss term "negative": the Diffusion-DPO loss of
   e_n on the winner's and loser's guesses re-noised with one fresh noise at a fresh t' (see
   ``negative_loss``), on the first ``neg_views`` views of the batch, counting only informative pairs
   (with none, only the gamma term acts). e_n is listed in ``param_groups`` (learning rate
   ``neg_lr``), and the loop's Adam steps it after the backward.

From ``sds_tail`` (a fraction of the run) on, every step is plain SDS against e_ref: the choice is
made, and the learned negative, which pushes the guided target away from what the reward dislikes,
no longer pulls the object off the prior's own (fidelity restored).

The pair is only built when it is used (inside the window with lambda_p > 0, or on an e_n update
step). Otherwise the step is plain SDS against e_n, so with lambda_p = 0 and neg_lr = 0 PSD
reproduces SDS exactly for the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..scene.cameras import Cameras
from ..config import GuidanceConfig
from ..priors.base import DiffusionPrior
from ..render import Render
from ..rewards.base import RewardModel
from .base import Guidance, GuidanceOut, sds_target_loss


@dataclass
class Pair:
    """N noisings of one render's latent z0 [B, C, h, w] (detached) at one t, ranked by the reward.

    eps, eps_s, x0: [N, B, C, h, w]: the noise, eps_s(z_t; e_n), the guess of each candidate (one-step, or after
    ``guess_steps`` DDIM steps).
    reward: [N, B]; win, lose: [B] long in [0, N), each view's winner and loser (the same index in every
    view when ranked by scene); gap: [B], d = R^w - R^l >= 0 in the reward's units (by scene: of the
    rewards averaged over the views, the same in every view); norm_gap: [B], u = d / m >= 0, the gap in
    units of the run's median gap m (dimensionless); informative: [B] bool; images: [N, B, 3, R, R] in [0, 1],
    the decoded guesses the reward scored.
    """

    t: int
    z0: torch.Tensor
    eps: torch.Tensor
    eps_s: torch.Tensor
    x0: torch.Tensor
    reward: torch.Tensor
    win: torch.Tensor
    lose: torch.Tensor
    gap: torch.Tensor
    norm_gap: torch.Tensor
    informative: torch.Tensor
    images: Optional[torch.Tensor] = None

    def pick(self, x: torch.Tensor, winner: bool) -> torch.Tensor:
        """x [N, B, ...] -> [B, ...]: each view's winner (or loser)."""
        return take(x, self.win if winner else self.lose)

    @property
    def base(self) -> torch.Tensor:
        """[B]: the candidate whose SDS term the step uses: the winner of an informative pair, else the
        first candidate (its noise is a plain SDS draw; an uninformative winner is chosen by noise alone,
        and following it would select for the reward without the prior's say)."""
        return torch.where(self.informative, self.win, torch.zeros_like(self.win))


def take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x [N, B, ...], idx [B] -> [B, ...]: candidate idx[b] of view b."""
    return x.gather(0, idx.view(1, -1, *[1] * (x.dim() - 2)).expand(1, *x.shape[1:]))[0]


def rank(reward: torch.Tensor, by_scene: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(win [B], lose [B], gap [B]) of rewards [N, B]: the best and the worst candidate, per view or by
    the mean over views. Ties: the first best wins and the last worst loses, so two equal candidates
    still form a pair (of gap 0)."""
    score = reward.mean(1, keepdim=True).expand_as(reward) if by_scene else reward  # [N, B]
    n = score.shape[0]
    win = score.argmax(0)
    lose = n - 1 - score.flip(0).argmin(0)
    gap = score.gather(0, win[None])[0] - score.gather(0, lose[None])[0]
    return win, lose, gap


class PSDGuidance(Guidance):
    """PSD with a reward model that ranks the prior's own one-step guesses."""

    TERMS = {"sds": "", "pair": "lambda_p", "negative": "neg_lr"}

    def __init__(self, cfg: GuidanceConfig, prior: DiffusionPrior, prompt: str, reward: RewardModel,
                 seed: int = 0):
        super().__init__(cfg, prior, prompt, seed)
        self.reward = reward
        self.e_n = torch.nn.Parameter(self.e_ref.detach().clone())
        self.gaps = torch.zeros(0, device=self.e_ref.device)  # [P]: every gap of the pairs built so far
        self.tally = torch.zeros(3, device=self.e_ref.device)  # pair-term steps, sum of informative share, of k
        self.champion: Optional[torch.Tensor] = None  # keep_winner: [B, C, h, w], the last informative winner's noise

    @classmethod
    def events(cls, cfg: GuidanceConfig, steps: int) -> Dict[str, Tuple[bool, List[int]]]:
        """"pair": the steps inside ``pair_window``; "negative": the e_n updates."""
        lo, hi = cfg.pair_window[0], min(cfg.pair_window[1], cfg.sds_tail)
        negative = [s for s in range(0, steps, cfg.neg_every) if s / steps < cfg.sds_tail] if cfg.neg_lr > 0 else []
        return {"pair": (cfg.lambda_p > 0 and hi > lo, [s for s in range(steps) if lo <= s / steps < hi]),
                "negative": (cfg.neg_lr > 0, negative)}

    def param_groups(self) -> List[dict]:
        """e_n with learning rate ``neg_lr``; nothing when ``neg_lr`` = 0 (e_n stays e_ref)."""
        return [{"params": [self.e_n], "lr": self.cfg.neg_lr, "name": "e_n"}] if self.cfg.neg_lr > 0 else []

    def state_dict(self) -> Dict[str, object]:
        return super().state_dict() | {"e_n": self.e_n.detach().cpu(), "gaps": self.gaps.cpu(),
                                       "tally": self.tally.cpu()} | (
            {"champion": self.champion.cpu()} if self.champion is not None else {})

    def load_state_dict(self, state: Dict[str, object]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.e_n.copy_(state["e_n"])
        self.gaps = state.get("gaps", torch.zeros(0)).to(self.e_ref.device)  # older checkpoints: none yet
        self.tally = state.get("tally", torch.zeros(3)).to(self.e_ref.device)
        self.champion = state["champion"].to(self.e_ref.device) if "champion" in state else None

    def summary(self) -> Dict[str, object]:
        """{"pair": ...}: how often the pair term acted and at what weight, over the run's pair-term steps
        (inside ``pair_window`` with lambda_p > 0): their count, the share of them whose pair was informative
        (mean over views), the mean k, and the gap scale m in the reward's units. {} when none ran."""
        n, informative, k = self.tally.tolist()
        if n == 0:
            return {}
        return {"pair": {"steps": int(n), "informative_share": informative / n, "mean_k": k / n,
                         "gap_scale": self.gap_scale().item(), "pair_scale": self.cfg.pair_scale,
                         "tau": self.cfg.tau}}

    # ---- the pair -----------------------------------------------------------------------------

    def pair_weight(self, step: int, total: int) -> float:
        """lambda_p inside pair_window (fractions of the run), else 0."""
        lo, hi = self.cfg.pair_window
        frac = step / max(total, 1)
        return self.cfg.lambda_p if lo <= frac < hi else 0.0

    def k(self, norm_gap: torch.Tensor) -> torch.Tensor:
        """The pair's weight k(u) = clamp(u / tau, 0, 1) of its normalised gap u [B]."""
        return (norm_gap / self.cfg.tau).clamp(0.0, 1.0)

    def normalise(self, gap: torch.Tensor) -> torch.Tensor:
        """gap d [B] (reward units, >= 0) -> u = d / m [B], after adding this pair's gaps to the run's record;
        m = the median of every gap recorded (``pair_scale="run"``), on the device (no host sync). One value per
        pair step when ranked by scene (the gap is the same in every view), one per view otherwise. While m
        is 0 (no gap yet), u = 0. ``pair_scale="none"``: u = d."""
        if self.cfg.pair_scale == "none":
            return gap
        self.gaps = torch.cat([self.gaps, gap[:1] if self.cfg.rank_by == "scene" else gap]).detach()
        m = self.gap_scale()
        return torch.where(m > 0, gap / m.clamp_min(torch.finfo(gap.dtype).tiny), torch.zeros_like(gap))

    def gap_scale(self) -> torch.Tensor:
        """m: the median gap of the pairs built so far (reward units, a 0-d tensor; 0 before any)."""
        return self.gaps.median() if len(self.gaps) else torch.zeros((), device=self.gaps.device)

    @torch.no_grad()
    def build_pair(self, z0: torch.Tensor, t: int, cams: Cameras) -> Pair:
        """Steps 1-3: N noisings of z0 at t, guided predictions in one call, guesses, rewards, ranking."""
        a = self.alpha(t)
        z0 = z0.detach()
        n, B = self.cfg.n_candidates, z0.shape[0]
        eps = torch.stack([self.noise_like(z0) for _ in range(n)])  # [N, B, C, h, w]
        if self.cfg.keep_winner and self.champion is not None and self.champion.shape == z0.shape:
            eps[0] = self.champion
        z_t = a.sqrt() * z0 + (1 - a).sqrt() * eps
        eps_s = self.guided_eps(z_t.flatten(0, 1), t, self.e_n, self.e_y, cams).view_as(eps)
        x0 = (z_t - (1 - a).sqrt() * eps_s) / a.sqrt()
        if self.cfg.guess_steps > 1:
            x0 = self.ddim_guess(x0.flatten(0, 1), eps_s.flatten(0, 1), t, cams).view_as(eps)
        gate = self.cfg.gate_render
        images = self.prior.decode_latents(torch.cat([x0.flatten(0, 1), z0]) if gate else x0.flatten(0, 1))
        scores = self.reward.score(images, [self.prompt] * images.shape[0]).float()
        reward = scores[:n * B].view(n, B)
        by_scene = self.cfg.rank_by == "scene"
        win, lose, gap = rank(reward, by_scene)
        norm_gap = self.normalise(gap)
        informative = (norm_gap > 0) & (norm_gap >= self.cfg.min_gap)
        if gate:  # the winner must beat the render itself (as the prior's decoder shows it)
            own, best = scores[n * B:], take(reward, win)
            informative &= (best.mean() > own.mean()).expand(B) if by_scene else best > own
        pair = Pair(t, z0, eps, eps_s, x0, reward, win, lose, gap, norm_gap, informative,
                    images[:n * B].view(n, B, *images.shape[1:]))
        if self.cfg.keep_winner:  # each view keeps its last informative winner's noise
            kept = self.champion if self.champion is not None and self.champion.shape == z0.shape else eps[0]
            self.champion = torch.where(informative.view(-1, 1, 1, 1), pair.pick(eps, True), kept)
        return pair

    def ddim_guess(self, x0: torch.Tensor, eps_s: torch.Tensor, t: int, cams: Cameras) -> torch.Tensor:
        """The candidates' guesses [M, C, h, w] after ``guess_steps`` deterministic DDIM steps (eta 0) from t to 0 under
        the same guidance eps_s(.; e_n), from the first step's guess x0 and prediction eps_s [M, C, h, w]; timesteps
        evenly spaced, t_k = round(t (1 - k / K)). Written here rather than through diffusers' DDIMScheduler, whose
        grid starts at T, not at the pair's t."""
        K = self.cfg.guess_steps
        for k in range(1, K):
            t_k = int(round(t * (1 - k / K)))
            a = self.alpha(t_k)
            z = a.sqrt() * x0 + (1 - a).sqrt() * eps_s
            eps_s = self.guided_eps(z, t_k, self.e_n, self.e_y, cams)
            x0 = (z - (1 - a).sqrt() * eps_s) / a.sqrt()
        return x0

    def pair_gradient(self, pair: Pair, lam: float, sds: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Step 4: g [B, C, h, w] on z0. ``sds``: the SDS term to use (``sds_t="own"``: drawn at its own
        t); default: w(t) (eps_s^b - eps^b) of the pair's base candidate b at the pair's t (with multi-step
        guesses and ``guess_sds``: sqrt(a_t (1 - a_t)) (z0 - x0^b)). With multi-step guesses the pair term is
        written in the guesses, sqrt(a_t (1 - a_t)) (x0^l - x0^w) in noise space."""
        a = self.alpha(pair.t)
        residual = pair.eps_s - pair.eps  # [N, B, C, h, w]: eps_s^i - eps^i
        if self.cfg.pair_space == "x0" or self.cfg.guess_steps > 1:  # multi-step guesses: the bracket's identity fails
            term = pair.pick(pair.x0, False) - pair.pick(pair.x0, True)
            if self.cfg.pair_space == "noise":
                term = (a * (1 - a)).sqrt() * term
        else:
            term = (1 - a) * (pair.pick(residual, True) - pair.pick(residual, False))
        k = (self.k(pair.norm_gap) * pair.informative).view(-1, *[1] * (term.dim() - 1))
        if sds is None and self.cfg.guess_steps > 1 and self.cfg.guess_sds:
            sds = (a * (1 - a)).sqrt() * (pair.z0 - take(pair.x0, pair.base))
        elif sds is None:
            sds = (1 - a) * take(residual, pair.base)
        return sds + lam * k * term

    def image_loss(self, render: Render, pair: Pair, lam: float) -> torch.Tensor:
        """``guess_space="image"``: the pair step in pixels. x [B, 3, R, R] = the render resized to the decoder's
        resolution R (as the encoder sees it); g = (x - D(x0^w)) + lam k (D(x0^l) - D(x0^w)) on the decoded guesses
        of an informative pair (else the first candidate's, k = 0); loss 0.5 |x - stopgrad(x - g)|^2 / B."""
        size = pair.images.shape[-2:]
        x = F.interpolate(render.rgb.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False,
                          antialias=False)
        k = (self.k(pair.norm_gap) * pair.informative).view(-1, 1, 1, 1)
        target = take(pair.images, pair.base)
        g = (x.detach() - target) + lam * k * (pair.pick(pair.images, False) - pair.pick(pair.images, True))
        return sds_target_loss(x, g)

    # ---- the adaptive negative ----------------------------------------------------------------

    def negative_loss(self, x0_w: torch.Tensor, x0_l: torch.Tensor, t2: int, eps2: torch.Tensor,
                      cams: Cameras, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Diffusion-DPO loss of e_n against e_ref on guesses x0_w, x0_l [B, C, h, w] (detached), seen
        from the B views ``cams``; ``weight`` [B] in {0, 1} keeps only the informative pairs (none: the
        DPO part is 0 and only the gamma term remains; default: every pair).

        z'^i = sqrt(a_t') x0^i + sqrt(1 - a_t') eps' with one shared eps' [B, C, h, w]; errors
        |eps' - eps_s(z'^i; e)|^2 are means over elements, per view;
        L = -log sigmoid(-beta [(err_n^w - err_ref^w) - (err_n^l - err_ref^l)]) + gamma |e_n - e_ref|^2,
        averaged over the (weighted) views. Differentiable in e_n only.
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
        per_view = -F.logsigmoid(-self.cfg.beta * (diff[:B] - diff[B:]))
        dpo = per_view.mean() if weight is None else (weight * per_view).sum() / weight.sum().clamp(min=1.0)
        return dpo + self.cfg.gamma * (self.e_n - self.e_ref).square().mean()

    # ---- one step -----------------------------------------------------------------------------

    def step(self, render: Render, cams: Cameras, step: int, total: int) -> GuidanceOut:
        z0 = self.latents(render)
        tail = step / max(total, 1) >= self.cfg.sds_tail  # the choice is made: plain SDS against e_ref
        lam = 0.0 if tail else self.pair_weight(step, total)
        t = self.sample_t(step, total, self.cfg.pair_t_min if lam > 0 else None)
        update_neg = not tail and self.cfg.neg_lr > 0 and step % self.cfg.neg_every == 0
        logs: Dict[str, torch.Tensor | float] = {"t": float(t), "lambda_p": lam}
        if lam > 0 or update_neg:
            pair = self.build_pair(z0, t, cams)
            sds = None
            if self.cfg.sds_t == "own":  # the SDS term at a t of the SDS schedule, the pair at its own
                t_sds = self.sample_t(step, total)
                sds = self.sds_gradient(z0, t_sds, self.e_n.detach(), cams)
                logs["t_sds"] = float(t_sds)
            g = self.pair_gradient(pair, lam, sds)
            k, informative = (self.k(pair.norm_gap) * pair.informative).mean(), pair.informative.float().mean()
            if lam > 0:
                self.tally += torch.stack([torch.ones_like(k), informative, k])
            logs.update(reward_w=pair.pick(pair.reward, True).mean(), reward_l=pair.pick(pair.reward, False).mean(),
                        gap=pair.gap.mean(), k=k, informative=informative, gap_scale=self.gap_scale())
        else:
            g = self.sds_gradient(z0, t, (self.e_ref if tail else self.e_n).detach(), cams)
        if lam > 0 and self.cfg.guess_space == "image":
            losses = {"sds": self.image_loss(render, pair, lam)}
        else:
            losses = {"sds": sds_target_loss(z0, g)}
        logs["grad_norm"] = g.norm()
        if update_neg:
            t2 = self.sample_t(0, 1)  # t' ~ U[t_min, t_max_start]
            n = self.cfg.neg_views
            x0_w, x0_l = pair.pick(pair.x0, True)[:n], pair.pick(pair.x0, False)[:n]
            losses["negative"] = self.negative_loss(x0_w, x0_l, t2, self.noise_like(x0_w), cams[:n],
                                                    pair.informative[:n].float())
            logs.update(t_negative=float(t2), e_n_shift=(self.e_n.detach() - self.e_ref).square().mean().sqrt())
        return GuidanceOut(losses, logs)
