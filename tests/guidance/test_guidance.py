"""SDS, PSD and reward-gradient on a tiny random Stable Diffusion prior (docs/design.md sections 3, 4)."""

import math

import pytest
import torch

from psd_gs.config import GuidanceConfig
from psd_gs.scene.cameras import sample_orbit
from psd_gs.guidance import make_guidance
from psd_gs.guidance.psd import PSDGuidance
from psd_gs.guidance.reward_grad import RewardGradGuidance
from psd_gs.guidance.sds import SDSGuidance
from psd_gs.priors.stable_diffusion import load_stable_diffusion
from psd_gs.render import Render
from psd_gs.rewards.base import RewardModel
from psd_gs.doctor.tiny import build_tiny_sd, build_tiny_taesd


class WarmReward(RewardModel):
    """A fixed image function: mean of R - (G + B) / 2. Records how it was called."""

    name = "warm"

    def __init__(self, sign: float = 1.0):
        self.sign = sign
        self.calls = []  # (batch size, grad enabled, images.requires_grad)
        self.backward_hits = 0

    def score(self, images, prompts):
        self.calls.append((images.shape[0], torch.is_grad_enabled(), images.requires_grad))
        if images.requires_grad:
            images.register_hook(self._hit)
        r, g, b = images.unbind(1)
        return self.sign * (r - 0.5 * (g + b)).flatten(1).mean(1)

    def _hit(self, grad):
        self.backward_hits += 1


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_sd")
    return load_stable_diffusion(str(build_tiny_sd(root / "sd")), decoder="taesd",
                                 taesd=str(build_tiny_taesd(root / "taesd")), device="cpu")


def make_render(prior, batch=2, seed=0):
    """A leaf rgb [B, H, W, 3] at the prior's resolution standing in for a rasterised view."""
    g = torch.Generator().manual_seed(seed)
    res = prior.resolution
    rgb = torch.rand(batch, res, res, 3, generator=g).requires_grad_(True)
    return Render(rgb, torch.ones(batch, res, res, 1), torch.ones(batch, res, res, 1), {})


def views(n, res=16):
    """n cameras for a render of n views (SD ignores them; the negative update takes a slice)."""
    return sample_orbit(n, res, res, generator=torch.Generator().manual_seed(n))


def render_grad(guidance, render, step=0, total=100):
    render.rgb.grad = None
    out = guidance.step(render, views(render.rgb.shape[0]), step, total)
    out.loss.backward()
    return render.rgb.grad.clone(), out


def prior_state(prior):
    return {f"{name}.{k}": v.clone() for name in ("unet", "vae", "text_encoder", "decoder")
            for k, v in getattr(prior, name).state_dict().items()}


def test_psd_without_pair_and_negative_is_exactly_sds(prior):
    render = make_render(prior)
    sds = SDSGuidance(GuidanceConfig(method="sds"), prior, "a red cube", seed=3)
    psd = PSDGuidance(GuidanceConfig(method="psd", lambda_p=0.0, neg_lr=0.0), prior, "a red cube", WarmReward(), seed=3)
    for step in (0, 10, 60):
        g_sds, _ = render_grad(sds, render, step)
        g_psd, out = render_grad(psd, render, step)
        assert torch.equal(g_sds, g_psd), step
        assert g_sds.abs().sum() > 0
    assert psd.reward.calls == []  # no pair was built, so the reward never ran


def test_pair_bracket_is_scaled_difference_of_guesses(prior):
    psd = PSDGuidance(GuidanceConfig(), prior, "a red cube", WarmReward(), seed=0)
    z0 = psd.latents(make_render(prior, batch=3))
    for t in (50, 500, 900):
        pair = psd.build_pair(z0, t, views(3))
        a = prior.alphas_cumprod[t]
        bracket = pair.pick(pair.eps_s - pair.eps, True) - pair.pick(pair.eps_s - pair.eps, False)
        expected = a.sqrt() / (1 - a).sqrt() * (pair.pick(pair.x0, False) - pair.pick(pair.x0, True))
        assert torch.allclose(bracket, expected, atol=1e-4 * expected.abs().max().item()), t
        assert expected.abs().max() > 0


@pytest.mark.parametrize("scale", ["none", "run"])
def test_pair_gradient_matches_design_formula(prior, scale):
    cfg = GuidanceConfig(lambda_p=0.7, tau=0.05 if scale == "none" else 1.5, pair_scale=scale)
    psd = PSDGuidance(cfg, prior, "a red cube", WarmReward(), seed=0)
    psd.gaps = torch.tensor([0.02, 0.3])  # earlier pairs' gaps: with this one's, their median is the unit
    pair = psd.build_pair(psd.latents(make_render(prior, batch=2)), 400, views(2))
    a = prior.alphas_cumprod[400]
    unit = 1.0 if scale == "none" else torch.tensor([0.02, 0.3, pair.gap[0].item()]).median()
    assert pair.gap[0] > 0
    k = (pair.gap / unit / cfg.tau).clamp(0, 1)[:, None, None, None]
    w, l = pair.win, pair.lose
    d_w = torch.stack([pair.eps_s[w[i], i] - pair.eps[w[i], i] for i in range(2)])
    d_l = torch.stack([pair.eps_s[l[i], i] - pair.eps[l[i], i] for i in range(2)])
    expected = (1 - a) * (d_w + 0.7 * k * (d_w - d_l))
    assert torch.allclose(psd.pair_gradient(pair, 0.7), expected, atol=1e-6)


def test_winner_and_loser_follow_the_reward(prior):
    z0 = None
    wins = []
    for sign in (1.0, -1.0):
        reward = WarmReward(sign)
        psd = PSDGuidance(GuidanceConfig(rank_by="view"), prior, "a red cube", reward, seed=5)
        z0 = psd.latents(make_render(prior, batch=4)) if z0 is None else z0
        pair = psd.build_pair(z0, 600, views(4))
        assert torch.equal(pair.pick(pair.reward, True), pair.reward.max(0).values)
        assert torch.equal(pair.pick(pair.reward, False), pair.reward.min(0).values)
        assert (pair.gap >= 0).all() and (pair.gap > 0).any()
        wins.append(pair.win)
    assert torch.equal(wins[0], 1 - wins[1])  # the same guesses, the opposite preference


def test_best_against_worst_of_n_picks_the_extreme_rewards():
    from psd_gs.guidance.psd import rank

    reward = torch.tensor([[0.2, 0.9, 0.5], [0.7, 0.1, 0.5], [0.4, 0.3, 0.5], [0.1, 0.6, 0.5]])  # [N=4, B=3]
    win, lose, gap = rank(reward, by_scene=False)
    assert win.tolist() == [1, 0, 0] and lose.tolist() == [3, 1, 3]  # a tie: the first wins, the last loses
    assert torch.allclose(gap, torch.tensor([0.6, 0.8, 0.0]))
    win, lose, gap = rank(reward, by_scene=True)  # means over views: 0.533, 0.433, 0.4, 0.4
    assert win.tolist() == [0, 0, 0] and lose.tolist() == [3, 3, 3]
    assert torch.allclose(gap, torch.full((3,), (1.6 - 1.2) / 3))


def test_n_candidates_in_one_prior_call_ranked_by_scene(prior, monkeypatch):
    calls = []
    original = prior.predict_noise
    monkeypatch.setattr(prior, "predict_noise", lambda z, t, e, c: calls.append(z.shape[0]) or original(z, t, e, c))
    psd = PSDGuidance(GuidanceConfig(n_candidates=5, neg_lr=0.0), prior, "a red cube", WarmReward(), seed=2)
    pair = psd.build_pair(psd.latents(make_render(prior, batch=3)), 700, views(3))
    assert calls == [2 * 5 * 3] and pair.x0.shape[:2] == (5, 3) and pair.reward.shape == (5, 3)
    total = pair.reward.sum(1)  # one decision for the scene: the candidate whose views score best together
    assert (pair.win == total.argmax()).all() and (pair.lose == total.argmin()).all()
    assert torch.allclose(pair.gap, (total.max() - total.min()).expand(3) / 3)


def test_an_uninformative_pair_gives_plain_sds_and_teaches_the_negative_nothing(prior):
    """Below ``min_gap``, or (``gate_render``) when no guess beats the render itself: SDS on the first
    candidate's noise, k = 0, and the DPO part of the negative's loss is 0."""
    class LaterIsBetter(RewardModel):  # scores images by their place in the call: the render (last) wins
        def score(self, images, prompts):
            return torch.arange(images.shape[0], dtype=torch.float32)

    def pair_of(reward=None, **kwargs):
        psd = PSDGuidance(GuidanceConfig(lambda_p=3.0, tau=1e-6, neg_lr=0.0, gamma=0.0, **kwargs), prior,
                          "a red cube", reward or WarmReward(), seed=0)
        return psd, psd.build_pair(psd.latents(make_render(prior, batch=2, seed=3)), 600, views(2))

    a = prior.alphas_cumprod[600]
    psd, pair = pair_of(n_candidates=4)
    assert pair.informative.all() and not torch.allclose(psd.pair_gradient(pair, 3.0),
                                                         (1 - a) * (pair.eps_s[0] - pair.eps[0]))
    assert pair_of(LaterIsBetter(), n_candidates=4)[1].informative.all()  # no gate: the gap alone decides
    # min_gap in the run's units: a first pair's gap is its own median, u = 1
    for kwargs in ({"min_gap": 1.001}, {"min_gap": float(pair.gap.max()) + 1e-3, "pair_scale": "none"},
                   {"gate_render": True, "reward": LaterIsBetter()}):
        psd, pair = pair_of(n_candidates=4, **kwargs)
        assert not pair.informative.any(), kwargs
        assert torch.equal(psd.pair_gradient(pair, 3.0), (1 - a) * (pair.eps_s[0] - pair.eps[0]))
        x0_w, x0_l = pair.pick(pair.x0, True), pair.pick(pair.x0, False)
        loss = psd.negative_loss(x0_w, x0_l, 300, torch.randn(x0_w.shape), views(2), pair.informative.float())
        assert float(loss.detach()) == 0.0


def test_the_render_gate_compares_the_winner_with_the_render_in_one_reward_call(prior):
    psd = PSDGuidance(GuidanceConfig(n_candidates=3, gate_render=True), prior, "a red cube", WarmReward(), seed=0)
    z0 = psd.latents(make_render(prior, batch=2))
    pair = psd.build_pair(z0, 900, views(2))
    assert psd.reward.calls == [(3 * 2 + 2, False, False)]  # the guesses and the render, one call
    own = WarmReward().score(prior.decode_latents(z0.detach()), ["a red cube"] * 2)
    assert bool(pair.informative.all()) == bool(pair.pick(pair.reward, True).mean() > own.mean())


def test_the_x0_pair_term_is_the_guesses_difference(prior):
    for space in ("noise", "x0"):
        psd = PSDGuidance(GuidanceConfig(lambda_p=2.0, tau=1e-6, pair_space=space), prior, "a red cube",
                          WarmReward(), seed=0)
        pair = psd.build_pair(psd.latents(make_render(prior, batch=2)), 900, views(2))
        a = prior.alphas_cumprod[900]
        k = psd.k(pair.gap)[:, None, None, None]
        base = (1 - a) * pair.pick(pair.eps_s - pair.eps, True)
        diff = pair.pick(pair.x0, False) - pair.pick(pair.x0, True)  # x0^l - x0^w
        scale = 1.0 if space == "x0" else (a * (1 - a)).sqrt()  # noise: the bracket's vanishing factor
        assert torch.allclose(psd.pair_gradient(pair, 2.0), base + 2.0 * k * scale * diff,
                              atol=1e-4 * diff.abs().max().item()), space


def test_multi_step_guesses_are_ddim_from_the_candidates_latents(prior):
    """guess_steps = 3: each candidate's guess is 3 deterministic DDIM steps (t, 2t/3, t/3 -> 0) under the
    same guidance, written out here by hand from the pair's own noises; the reward ranks those guesses."""
    psd = PSDGuidance(GuidanceConfig(guess_steps=3), prior, "a red cube", WarmReward(), seed=0)
    z0 = psd.latents(make_render(prior, batch=2)).detach()
    t = 900
    pair = psd.build_pair(z0, t, views(2))
    one_step = PSDGuidance(GuidanceConfig(), prior, "a red cube", WarmReward(), seed=0).build_pair(z0, t, views(2))
    assert torch.equal(pair.eps, one_step.eps) and torch.equal(pair.eps_s, one_step.eps_s)
    acp = prior.alphas_cumprod.float()
    x0 = torch.empty_like(pair.x0)
    for i in range(pair.x0.shape[0]):
        z = acp[t].sqrt() * z0 + (1 - acp[t]).sqrt() * pair.eps[i]
        for t_k, t_next in ((900, 600), (600, 300), (300, None)):
            with torch.no_grad():
                e = psd.guided_eps(z, t_k, psd.e_n, psd.e_y, views(2))
            guess = (z - (1 - acp[t_k]).sqrt() * e) / acp[t_k].sqrt()
            if t_next is not None:
                z = acp[t_next].sqrt() * guess + (1 - acp[t_next]).sqrt() * e
        x0[i] = guess
    assert torch.allclose(pair.x0, x0, atol=1e-4 * x0.abs().max().item())
    assert not torch.allclose(pair.x0, one_step.x0, atol=1e-3)
    images = prior.decode_latents(pair.x0.flatten(0, 1))
    assert torch.allclose(pair.reward.flatten(), WarmReward().score(images, None), atol=1e-5)


@pytest.mark.parametrize("guess_sds", [False, True])
def test_the_pair_term_of_multi_step_guesses_is_written_in_the_guesses(prior, guess_sds):
    """The noise bracket equals sqrt(a (1 - a)) (x0^l - x0^w) only for one-step guesses; with more steps the term is
    that expression itself, and guess_sds makes the SDS part the pull toward the winner's guess."""
    cfg = GuidanceConfig(lambda_p=2.0, tau=1e-6, guess_steps=2, guess_sds=guess_sds)
    psd = PSDGuidance(cfg, prior, "a red cube", WarmReward(), seed=0)
    pair = psd.build_pair(psd.latents(make_render(prior, batch=2)), 800, views(2))
    a = prior.alphas_cumprod[800].float()
    c = (a * (1 - a)).sqrt()
    k = (psd.k(pair.norm_gap) * pair.informative)[:, None, None, None]
    w = pair.pick(pair.x0, True)
    base = c * (pair.z0 - w) if guess_sds else (1 - a) * pair.pick(pair.eps_s - pair.eps, True)
    expected = base + 2.0 * k * c * (pair.pick(pair.x0, False) - w)
    assert (k > 0).all()
    assert torch.allclose(psd.pair_gradient(pair, 2.0), expected, atol=1e-5 * expected.abs().max().item())


def test_psd_with_multi_step_guesses_but_no_pair_and_no_negative_is_exactly_sds(prior):
    render = make_render(prior)
    sds = SDSGuidance(GuidanceConfig(method="sds"), prior, "a red cube", seed=3)
    psd = PSDGuidance(GuidanceConfig(method="psd", lambda_p=0.0, neg_lr=0.0, guess_steps=4, guess_sds=True), prior,
                      "a red cube", WarmReward(), seed=3)
    for step in (0, 10, 60):
        assert torch.equal(render_grad(sds, render, step)[0], render_grad(psd, render, step)[0]), step


def test_the_image_space_pair_step_pulls_the_pixels_toward_the_decoded_winner(prior):
    """guess_space = image: the render's gradient is (x - D(x0^w)) + lam k (D(x0^l) - D(x0^w)), over B, on the decoded
    guesses the reward ranked (here the render is at the decoder's resolution, so no resize); no reward gradient."""
    cfg = GuidanceConfig(lambda_p=2.0, tau=1e-6, guess_steps=2, guess_space="image", pair_t_min=0.9, neg_lr=0.0,
                         n_candidates=3, rank_by="view")
    psd = PSDGuidance(cfg, prior, "a red cube", WarmReward(), seed=0)
    twin = PSDGuidance(cfg, prior, "a red cube", WarmReward(), seed=0)
    render = make_render(prior, batch=2)
    grad, out = render_grad(psd, render, 0)
    pair = twin.build_pair(twin.latents(render), int(out.logs["t"]), views(2))  # the same draws
    images = prior.decode_latents(pair.x0.flatten(0, 1)).view(*pair.x0.shape[:2], 3, *render.rgb.shape[1:3])
    assert torch.allclose(pair.images, images)
    w, l = pair.pick(images, True), pair.pick(images, False)
    k = (twin.k(pair.norm_gap) * pair.informative).view(-1, 1, 1, 1)
    assert (k > 0).all() and not torch.equal(pair.win, pair.lose)
    x = render.rgb.detach().permute(0, 3, 1, 2)
    expected = ((x - w) + 2.0 * k * (l - w)) / 2
    assert torch.allclose(grad.permute(0, 3, 1, 2), expected, atol=1e-6)
    assert all(not requires_grad for _, _, requires_grad in psd.reward.calls)
    with pytest.raises(ValueError, match="guess_steps > 1"):
        GuidanceConfig(guess_space="image").check()


def test_keep_winner_carries_the_winners_noise_into_the_next_pair_and_through_a_checkpoint(prior):
    cfg = GuidanceConfig(n_candidates=3, keep_winner=True, rank_by="view")
    psd = PSDGuidance(cfg, prior, "a red cube", WarmReward(), seed=0)
    z0 = psd.latents(make_render(prior, batch=2)).detach()
    first = psd.build_pair(z0, 900, views(2))
    assert first.informative.all() and torch.equal(psd.champion, first.pick(first.eps, True))
    state = psd.state_dict()
    second = psd.build_pair(z0, 900, views(2))
    assert torch.equal(second.eps[0], first.pick(first.eps, True))  # the champion defends its place
    assert not torch.equal(second.eps[1], first.eps[1])  # the others are fresh
    resumed = PSDGuidance(cfg, prior, "a red cube", WarmReward(), seed=5)
    resumed.load_state_dict(state)
    again = resumed.build_pair(z0, 900, views(2))
    assert torch.equal(again.eps, second.eps) and torch.equal(again.win, second.win)
    plain = PSDGuidance(GuidanceConfig(n_candidates=3, rank_by="view"), prior, "a red cube", WarmReward(), seed=0)
    plain.build_pair(z0, 900, views(2))
    assert plain.champion is None and not torch.equal(plain.build_pair(z0, 900, views(2)).eps[0], second.eps[0])


def test_the_sds_tail_is_plain_sds_against_the_reference_negative(prior):
    cfg = GuidanceConfig(lambda_p=2.0, pair_window=(0.0, 0.8), neg_lr=1e-2, neg_every=1, sds_tail=0.5)
    psd = PSDGuidance(cfg, prior, "a red cube", WarmReward(), seed=1)
    sds = SDSGuidance(GuidanceConfig(method="sds"), prior, "a red cube", seed=1)
    with torch.no_grad():
        psd.e_n.add_(0.5 * torch.randn(psd.e_n.shape, generator=torch.Generator().manual_seed(0)))  # as if learned
    render = make_render(prior)
    g_psd, out = render_grad(psd, render, 60)  # inside the pair window, but past the tail's start
    assert torch.equal(g_psd, render_grad(sds, render, 60)[0]) and "negative" not in out.losses
    assert psd.reward.calls == []
    events = PSDGuidance.events(cfg, 100)
    assert max(events["pair"][1]) == 49 and max(events["negative"][1]) == 49


def test_pair_steps_draw_t_from_high_noise_only(prior):
    cfg = GuidanceConfig(pair_window=(0.0, 0.5), pair_t_min=0.6, neg_lr=0.0)
    psd = PSDGuidance(cfg, prior, "a red cube", WarmReward(), seed=0)
    render = make_render(prior, batch=1)
    T = prior.num_train_timesteps
    inside = {step: render_grad(psd, render, step, 100)[1].logs["t"] for step in range(0, 50, 5)}
    outside = [render_grad(psd, render, step, 100)[1].logs["t"] for step in range(50, 100, 5)]
    assert min(inside.values()) >= 0.6 * T and min(outside) < 0.6 * T  # after the window: the whole range
    assert all(t <= round(psd.t_max(step, 100) * T) for step, t in inside.items())


def test_k_clamps():
    psd = PSDGuidance.__new__(PSDGuidance)
    psd.cfg = GuidanceConfig(tau=0.2)
    d = torch.tensor([-1.0, 0.0, 0.1, 0.2, 5.0])
    assert torch.allclose(psd.k(d), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


def test_pair_term_is_zero_outside_the_window(prior):
    cfg = GuidanceConfig(pair_window=(0.2, 0.4), neg_lr=0.0, lambda_p=2.0)
    psd = PSDGuidance(cfg, prior, "a red cube", WarmReward(), seed=1)
    assert [psd.pair_weight(s, 100) for s in (0, 19, 20, 39, 40, 99)] == [0.0, 0.0, 2.0, 2.0, 0.0, 0.0]
    sds = SDSGuidance(GuidanceConfig(method="sds"), prior, "a red cube", seed=1)
    render = make_render(prior)
    for step in (5, 70):  # outside: exactly SDS, and the reward is not even run
        assert torch.equal(render_grad(psd, render, step)[0], render_grad(sds, render, step)[0])
    assert psd.reward.calls == []
    g_in, out = render_grad(psd, render, 30)
    assert float(out.logs["lambda_p"]) == 2.0 and len(psd.reward.calls) == 1
    assert not torch.equal(g_in, render_grad(sds, render, 30)[0])


def test_no_reward_gradient_reaches_the_render_in_psd(prior):
    reward = WarmReward()
    psd = PSDGuidance(GuidanceConfig(tau=1e-6), prior, "a red cube", reward, seed=2)
    render = make_render(prior)
    g, out = render_grad(psd, render, step=0)
    assert reward.calls == [(4, False, False)]  # 2 guesses x 2 views, scored without grad
    assert reward.backward_hits == 0 and g.abs().sum() > 0
    # the scene gradient depends on the ranking only: a reward with the same order but a
    # different (and much steeper) pixel gradient gives the identical update (tau tiny: k = 1)
    steep = WarmReward()
    steep.score = lambda images, prompts: 1e3 * WarmReward.score(steep, images, prompts) ** 3
    psd2 = PSDGuidance(GuidanceConfig(tau=1e-6), prior, "a red cube", steep, seed=2)
    assert torch.equal(render_grad(psd2, render, step=0)[0], g)


def test_reward_gradient_reaches_the_render_in_reward_grad(prior):
    reward = WarmReward()
    rg = RewardGradGuidance(GuidanceConfig(method="reward_grad", lambda_r=3.0), prior, "a red cube", reward, seed=2)
    sds = SDSGuidance(GuidanceConfig(method="sds"), prior, "a red cube", seed=2)
    render = make_render(prior)
    g_rg, out = render_grad(rg, render)
    g_sds, _ = render_grad(sds, render)
    assert reward.calls == [(2, True, True)] and reward.backward_hits == 1
    # the difference is exactly lambda_r times the reward's pixel gradient
    res = prior.resolution
    warm = torch.tensor([1.0, -0.5, -0.5]) / (res * res) / 2  # d R_b / d pixel, averaged over B = 2 views
    assert torch.allclose(g_rg - g_sds, -3.0 * warm.expand_as(g_rg), atol=1e-7)
    assert float(out.losses["reward"].detach()) == pytest.approx(-3.0 * float(out.logs["reward"]))


def test_adaptive_negative_changes_only_e_n_and_lowers_its_loss(prior):
    psd = PSDGuidance(GuidanceConfig(neg_lr=1e-2, cfg_scale=7.5), prior, "a red cube", WarmReward(), seed=4)
    pair = psd.build_pair(psd.latents(make_render(prior, batch=2)), 500, views(2))
    x0_w, x0_l = pair.pick(pair.x0, True), pair.pick(pair.x0, False)
    eps2 = torch.randn(x0_w.shape, generator=torch.Generator().manual_seed(9))
    before_state = prior_state(prior)
    e_n_before = psd.e_n.detach().clone()
    with torch.no_grad():
        loss_before = psd.negative_loss(x0_w, x0_l, 300, eps2, views(2)).item()
    # e_n = e_ref at the start, so L = log 2 up to float rounding (e_n and e_ref are evaluated in
    # batches of different size) times beta = 1000
    assert loss_before == pytest.approx(math.log(2.0), abs=1e-3)
    (group,) = psd.param_groups()  # the loop's Adam on e_n, one step
    assert group["params"] == [psd.e_n] and group["lr"] == 1e-2
    optimizer = torch.optim.Adam([group])
    loss = psd.negative_loss(x0_w, x0_l, 300, eps2, views(2))
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        loss_after = psd.negative_loss(x0_w, x0_l, 300, eps2, views(2)).item()
    assert loss_after < loss_before
    assert not torch.equal(psd.e_n.detach(), e_n_before)
    after_state = prior_state(prior)
    assert all(torch.equal(before_state[k], after_state[k]) for k in before_state)
    assert all(not p.requires_grad for name in ("unet", "vae", "text_encoder", "decoder")
               for p in getattr(prior, name).parameters())
    assert torch.equal(psd.e_ref, prior.encode_prompt(""))  # the reference never moves
    assert float(loss) == pytest.approx(loss_before)


def test_cfg_scale_one_makes_the_negative_irrelevant(prior):
    render = make_render(prior)
    grads = []
    for shift in (0.0, 0.5):
        psd = PSDGuidance(GuidanceConfig(cfg_scale=1.0, neg_lr=0.0), prior, "a red cube", WarmReward(), seed=6)
        with torch.no_grad():
            psd.e_n.add_(shift * torch.randn(psd.e_n.shape, generator=torch.Generator().manual_seed(0)))
        grads.append(render_grad(psd, render, 0)[0])
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    psd = PSDGuidance(GuidanceConfig(cfg_scale=1.0, gamma=0.0, neg_lr=1e-2), prior, "a red cube", WarmReward())
    z = torch.randn(2, *psd.latents(make_render(prior)).shape[1:])
    loss = psd.negative_loss(z[:1], z[1:], 400, torch.randn(1, *z.shape[1:]), views(1))
    loss.backward()
    assert psd.e_n.grad.abs().max() == 0  # with s = 1 the DPO term cannot see e_n


def test_psd_step_is_one_batched_prior_call(prior, monkeypatch):
    calls = []
    original = prior.predict_noise

    def counting(z_t, t, emb, cameras):
        calls.append((z_t.shape[0], torch.is_grad_enabled() and emb.requires_grad))
        return original(z_t, t, emb, cameras)

    monkeypatch.setattr(prior, "predict_noise", counting)
    psd = PSDGuidance(GuidanceConfig(neg_every=2), prior, "a red cube", WarmReward(), seed=0)
    render = make_render(prior, batch=3)
    render_grad(psd, render, step=1)  # in the window, no e_n update: one call, 2 noises x 2 embeddings
    assert calls == [(12, False)]
    calls.clear()
    out = render_grad(psd, render, step=2)[1]  # with the e_n update: + one no-grad call, one grad call
    assert calls == [(12, False), (4, False), (2, True)]  # the update uses neg_views = 1 view's pair
    calls.clear()
    psd3 = PSDGuidance(GuidanceConfig(neg_every=2, neg_views=3), prior, "a red cube", WarmReward(), seed=0)
    render_grad(psd3, render, step=0)
    assert calls == [(12, False), (12, False), (6, True)]
    assert {"reward_w", "reward_l", "gap", "k", "t", "grad_norm"} <= set(out.logs) and "negative" in out.losses


@pytest.mark.parametrize("field, value, match", [
    ("cfg_scale", 0.5, "cfg_scale"), ("tau", 0.0, "tau"),
    ("pair_window", (0.6, 0.2), "pair_window"), ("neg_every", 0, "neg_every"), ("lambda_p", -1.0, "lambda_p"),
])
def test_bad_config_is_named(field, value, match):
    with pytest.raises(ValueError, match=match):
        GuidanceConfig(**{field: value}).check()


def test_make_guidance_needs_a_reward_for_psd(prior):
    assert isinstance(make_guidance(GuidanceConfig(method="sds"), prior, "x"), SDSGuidance)
    with pytest.raises(ValueError, match="reward"):
        make_guidance(GuidanceConfig(method="psd"), prior, "x")
    with pytest.raises(ValueError, match="method 'dpo' is unknown; choose one of psd, sds, reward_grad"):
        make_guidance(GuidanceConfig(method="dpo"), prior, "x")


def test_psd_reports_its_schedule_and_owns_no_optimiser(prior):
    events = PSDGuidance.events(GuidanceConfig(pair_window=(0.0, 0.25), neg_every=10), 40)
    assert events == {"pair": (True, list(range(10))), "negative": (True, [0, 10, 20, 30])}
    frozen = PSDGuidance(GuidanceConfig(neg_lr=0.0), prior, "x", WarmReward())
    assert frozen.param_groups() == [] and not hasattr(frozen, "neg_optimizer")


def test_own_sds_t_refines_on_the_sds_schedule_while_the_pair_decides_at_high_noise(prior):
    """sds_t="own": a pair step's gradient is SDS at a t of the SDS schedule (fresh noise, e_n) plus the
    pair term at the pair's own t >= pair_t_min."""
    cfg = GuidanceConfig(lambda_p=2.0, tau=1e-6, pair_window=(0.0, 0.5), pair_t_min=0.6, neg_lr=0.0, sds_t="own")
    psd = PSDGuidance(cfg, prior, "a red cube", WarmReward(), seed=0)
    seen = {}
    build_pair, sds_gradient, pair_gradient = psd.build_pair, psd.sds_gradient, psd.pair_gradient
    psd.build_pair = lambda *a: seen.setdefault("pair", build_pair(*a))
    psd.sds_gradient = lambda z0, t, *a: seen.setdefault("sds", (t, sds_gradient(z0, t, *a)))[1]
    psd.pair_gradient = lambda *a: seen.setdefault("g", pair_gradient(*a))
    render, T = make_render(prior, batch=2), prior.num_train_timesteps
    t_sds = []
    for step in range(0, 50, 5):  # inside the window, where t_max(step) >= 0.6
        seen.clear()
        out = render_grad(psd, render, step, 100)[1]
        pair, (t, sds) = seen["pair"], seen["sds"]
        assert pair.t >= 0.6 * T and out.logs["t_sds"] == t
        a = prior.alphas_cumprod[pair.t]
        bracket = (1 - a) * (pair.pick(pair.eps_s - pair.eps, True) - pair.pick(pair.eps_s - pair.eps, False))
        k = psd.k(pair.gap)[:, None, None, None]
        assert torch.allclose(seen["g"], sds + 2.0 * k * bracket, atol=1e-6)
        t_sds.append(t)
    assert min(t_sds) < 0.6 * T  # the SDS term still visits low noise inside the pair window
