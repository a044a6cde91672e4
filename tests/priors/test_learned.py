"""The shipped learned prior (a small SD trained here, psd_gs/assets/learned_prior): it loads through diffusers'
StableDiffusionPipeline and through the ``sd`` prior's own loader, it generates what its prompt says, and a
3D run through it writes a valid splat."""

import json

import pytest
import torch

from psd_gs.config import PriorConfig, preset
from psd_gs.priors import load_prior
from psd_gs.priors.stable_diffusion import StableDiffusionPrior
from psd_gs.train import SHIPPED_PRIOR


@pytest.fixture(scope="module")
def prior():
    return load_prior(PriorConfig("learned"), "cpu")


def test_the_shipped_folder_is_a_stable_diffusion_pipeline_and_a_red_cube_comes_out_red():
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(SHIPPED_PRIOR)
    assert isinstance(pipe.scheduler, DDIMScheduler) and pipe.scheduler.config.prediction_type == "epsilon"
    assert pipe.scheduler.config.beta_schedule == "scaled_linear" and pipe.scheduler.config.num_train_timesteps == 1000
    pipe.set_progress_bar_config(disable=True)
    gens = [torch.Generator().manual_seed(s) for s in range(2)]
    images = pipe(["a red cube"] * 2, num_inference_steps=4, guidance_scale=7.5, generator=gens,
                  output_type="pt").images  # [2, 3, 64, 64] in [0, 1]
    assert images.shape == (2, 3, 64, 64)
    r, g, b = images.unbind(1)
    object_px = (r + g + b) / 3 < 0.85  # not the white background
    red = (r > g + 0.25) & (r > b + 0.25)
    for i in range(2):
        assert object_px[i].float().mean() > 0.05, "no object drawn"
        assert red[i][object_px[i]].float().mean() > 0.6, f"sample {i}: the object is not mostly red"


def test_the_sd_prior_loads_it_at_its_trained_resolution(prior):
    assert isinstance(prior, StableDiffusionPrior) and prior.decoder_name == "vae"
    assert prior.resolution == 64 and prior.dtype == torch.float32
    z = prior.encode_images(torch.ones(1, 3, 64, 64))
    assert z.shape == (1, 4, 16, 16)
    assert prior.decode_latents(z).shape == (1, 3, 64, 64)
    emb = prior.encode_prompt("a red cube")
    assert emb.shape == (1, 77, 64) and not torch.equal(emb, prior.encode_prompt("a blue cone"))


def test_the_learned_prior_refuses_words_outside_the_world_before_loading():
    from psd_gs.run.validate import validate

    cfg = preset("shapes", prompt="a zebra")
    cfg.prior = PriorConfig("learned")
    with pytest.raises(ValueError, match="does not know"):
        validate(cfg)


def test_a_20_step_3d_run_through_the_learned_prior_writes_a_valid_splat(tmp_path, prior):
    from psd_gs.run.loop import run
    from psd_gs.scene.ply import load_ply

    cfg = preset("shapes", prompt="a red cube", steps=20, out_dir=str(tmp_path), preview_every=0, turntable=False,
                 mesh=False)
    cfg.prior = PriorConfig("learned")
    result = run(cfg, prior=prior)
    scene = load_ply(result.ply_path)
    assert len(scene) == cfg.scene.n_init and all(torch.isfinite(v).all() for v in scene.params.values())
    metrics = json.loads((result.out_dir / "metrics.json").read_text())
    assert metrics["steps_done"] == 20 and metrics["nan_steps_skipped"] == 0
    assert metrics["evaluation"]["nearest"] in ("red cube",)  # the only object "a red cube" allows


def test_psd_through_the_learned_prior_steers_toward_the_object_its_reward_prefers(tmp_path, prior):
    """Issue 32: with a reward that prefers red (shapes-warm), a short PSD run of the learned preset ends nearer the red
    cube than SDS from the same seed. Shortened for the suite (40 steps, 2 views, the pair in the first 60% of the run,
    2-step guesses); the preset's own settings are measured in bench/RESULTS.md. PSD as it was before issue 32 (one-step
    guesses ranked by scene, pulled in the latent) ends as far from the red cube as SDS (9.32 dB against 9.35)."""
    from psd_gs.config import apply_overrides
    from psd_gs.rewards import load_reward
    from psd_gs.run.evaluate import eval_cameras, shapes_report
    from psd_gs.run.loop import run

    warm = load_reward("shapes-warm")
    red = {}
    for method in ("sds", "psd"):
        cfg = preset("learned", prompt="a cube", seed=0, steps=40, reward="shapes-warm", preview_every=0,
                     turntable=False, mesh=False, out_dir=str(tmp_path / method))
        apply_overrides(cfg, {"guidance.method": method, "camera.batch": 2, "guidance.pair_window": (0.0, 0.6),
                              "guidance.sds_tail": 0.6, "guidance.guess_steps": 2})
        report = shapes_report(run(cfg, prior=prior).scene, "a cube", warm, eval_cameras(4, 64))
        red[method] = (report["psnr_per_object"]["red cube"], report["reward"])
    assert red["psd"][0] > red["sds"][0] + 0.7, red  # dB nearer the red cube (measured: 10.75 against 9.35)
    assert red["psd"][1] > red["sds"][1] + 0.2, red  # and warmer by the rule (0.00 against -0.39)


def test_a_learned_prior_psd_run_resumed_mid_window_continues_exactly(tmp_path, prior, one_thread):
    """The kept winner's noise, the gaps and the generators travel in the checkpoint: cut at step 4 of 8, inside the
    pair window, and resumed, the run ends bit for bit where the straight run does."""
    from psd_gs.config import apply_overrides
    from psd_gs.run.loop import run
    from tests.run.cut import cut_at
    from tests.run.test_loop import same_scene

    def small(name):
        cfg = preset("learned", prompt="a cube", seed=1, steps=8, reward="shapes-warm", preview_every=0,
                     turntable=False, mesh=False, out_dir=str(tmp_path / name), checkpoint_every=4)
        return apply_overrides(cfg, {"camera.batch": 2, "scene.n_init": 300, "guidance.guess_steps": 2,
                                     "guidance.pair_window": (0.0, 1.0), "guidance.sds_tail": 1.0})

    straight = run(small("straight"), prior=prior)
    assert straight.metrics["pair"]["steps"] == 8
    first = cut_at(small("cut"), 4)
    assert first.cancelled and first.metrics["steps_done"] == 4
    resumed = run(None, resume=first.out_dir)
    assert resumed.metrics["steps_done"] == 8 and same_scene(resumed.scene, straight.scene)


def test_the_page_and_the_cli_offer_it_without_a_gpu(tmp_path):
    from psd_gs.app import page, world
    from psd_gs.cli.main import build_parser

    demo = page.build_demo("shapes", "test", runs_root=str(tmp_path / "runs"))
    by_label = {getattr(b, "label", None): b for b in demo.blocks.values()}
    priors = {v: label for label, v in by_label["Prior"].choices}
    assert priors["learned"] == "Learned (small SD trained here)"  # its weights ship: nothing to fetch
    cfg = world.make_config("shapes", str(tmp_path), {"prompt": "a red cube", "prior.name": "learned",
                                                      "resolution": "64"}, offered=[32, 64, 128])
    assert cfg.prior.name == "learned" and cfg.prior.options.get("resolution") is None
    args = build_parser().parse_args(["generate", "a red cube", "--prior", "learned"])
    assert args.prior == "learned"


def test_choosing_the_learned_prior_on_the_page_brings_its_preset(tmp_path):
    """Four views a step and CFG 7.5 (the learned preset), shown in the controls when the prior is chosen."""
    from psd_gs.app import world

    cfg = world.make_config("shapes", str(tmp_path), {"prompt": "a cube", "prior.name": "learned"})
    assert (cfg.camera.batch, cfg.guidance.cfg_scale) == (4, 7.5)
    cfg = world.make_config("shapes", str(tmp_path), {"prompt": "a cube", "prior.name": "learned",
                                                      "guidance.cfg_scale": 3})
    assert cfg.guidance.cfg_scale == 3.0  # what the page sends wins
    assert world.prior_defaults("shapes", "learned", ["guidance.cfg_scale", "guidance.pair_window"]) == [7.5, "[0.0, 0.25]"]
    assert world.prior_defaults("shapes", "shapes", ["guidance.cfg_scale"]) == [1.5]


# What only learned weights can show: the latent scale, the schedule and the CFG direction of the sd path. With
# random weights each of these mistakes would pass; here each one breaks an assertion below.


@pytest.fixture(scope="module")
def red_cube_view():
    """The red cube's render from one training-like pose: rgb [1, 3, 64, 64] in [0, 1]."""
    from psd_gs.priors.analytic import AnalyticPrior
    from psd_gs.scene.cameras import make_cameras

    cams = make_cameras(20.0, 30.0, 2.0, 49.1, 64, 64)
    return AnalyticPrior().render_objects(cams)[0, 0].permute(2, 0, 1)[None].clamp(0, 1)


def _psnr(a, b):
    return float(-10 * torch.log10((a - b).square().mean()))


def test_a_render_round_trips_through_the_prior_at_the_vaes_quality(prior, red_cube_view):
    """encode_images then decode_latents gives the render back at about the VAE's own quality (27 dB held out on
    average, 23.7 dB for this view), and the scaled latents are about unit-variance, as SD's. (This VAE's scaling
    factor, 0.87, is too near 1 for a missing scale on one side to show here: decoding z / 0.87 still gives
    24 dB; tests/priors/test_stable_diffusion.py checks that arithmetic on its own.)"""
    z = prior.encode_images(red_cube_view)
    assert abs(float(z.std()) - 1.0) < 0.5
    assert _psnr(prior.decode_latents(z), red_cube_view) > 22.0


def test_one_step_guesses_denoise_under_the_schedule_and_cfg_points_to_the_prompt(prior, red_cube_view):
    """At t = 500 the one-step guess x0 = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t) under "a red cube" is nearer the
    clean latent than the noisy latent is (a wrong alphas_cumprod or an off-by-one schedule would not denoise),
    and with CFG it is nearer under the right prompt than under "a blue cone" (a flipped CFG sign would not)."""
    z0 = prior.encode_images(red_cube_view)
    g = torch.Generator().manual_seed(0)
    t = 500
    a = prior.alphas_cumprod[t]
    errors = {}
    for text in ("a red cube", "a blue cone"):
        err = []
        for _ in range(4):
            eps = torch.randn(z0.shape, generator=g)
            z_t = a.sqrt() * z0 + (1 - a).sqrt() * eps
            emb = torch.cat([prior.encode_prompt(""), prior.encode_prompt(text)])
            eps_u, eps_c = prior.predict_noise(torch.cat([z_t, z_t]), torch.full((2,), t), emb).chunk(2)
            guided = eps_u + 7.5 * (eps_c - eps_u)
            x0 = (z_t - (1 - a).sqrt() * guided) / a.sqrt()
            err.append(float((x0 - z0).square().mean()))
            if text == "a red cube":
                assert (x0 - z0).square().mean() < (z_t / a.sqrt() - z0).square().mean() / 4
        errors[text] = sum(err) / len(err)
    assert errors["a red cube"] < errors["a blue cone"] / 2, errors
