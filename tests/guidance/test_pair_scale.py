"""PSD's pair weight in the run's own units (issue 24): a reward's scale and offset never reach the scene,
the running gap scale warms up deterministically and resumes, and the pair's record reaches
metrics.json and the page."""

import json

import pytest
import torch

from psd_gs.app import ui
from psd_gs.config import GuidanceConfig, preset
from psd_gs.guidance.psd import PSDGuidance
from psd_gs.rewards.base import Affine, RewardModel
from psd_gs.rewards.shapes import ShapesReward
from psd_gs.run.loop import CancelToken, Progress, Result, generate, run
from psd_gs.scene.gaussians import PARAM_NAMES


@pytest.fixture(autouse=True)
def shapes_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PSD_GS_CACHE", str(tmp_path_factory.getbasetemp() / "psd_gs_cache"))


def Warm(scale: float = 1.0, shift: float = 0.0) -> Affine:
    """The warm reward times ``scale`` plus ``shift``: the same preference in other units."""
    return Affine(ShapesReward("warm"), scale, shift)


class Constant(RewardModel):
    """A reward with no opinion: every image scores 0.5."""

    name = "constant"

    def score(self, images, prompts=()):
        return torch.full((images.shape[0],), 0.5)


def small(tmp_path, name: str, checkpoint_every: int = 0, **guidance):
    cfg = preset("shapes", prompt="a cube", steps=30, seed=1, out_dir=str(tmp_path / name), preview_every=10,
                 turntable_views=2, mesh_resolution=32, checkpoint_every=checkpoint_every)
    cfg.camera.resolution = ((0.0, 32),)
    cfg.scene.n_init = 300
    for key, value in guidance.items():
        setattr(cfg.guidance, key, value)
    return cfg


def params(result):
    return torch.cat([result.scene.params[k].detach().flatten() for k in PARAM_NAMES])


def test_normalised_gap_is_the_gap_over_the_median_so_far(prior_for_units):
    psd = PSDGuidance(GuidanceConfig(tau=2.0), prior_for_units, "a red cube", Warm(), seed=0)
    gaps = [0.4, 0.1, 0.2, 0.05, 0.3]
    u = [psd.normalise(torch.tensor([d, d])) for d in gaps]  # ranked by scene: one gap per step
    for i, d in enumerate(gaps):
        m = torch.tensor(gaps[:i + 1]).median()  # the lower median of an even count, as torch gives it
        assert torch.allclose(u[i], torch.tensor([d, d]) / m)
    assert psd.gaps.tolist() == pytest.approx(gaps)
    assert torch.allclose(psd.k(u[-1]), (u[-1] / 2.0).clamp(max=1.0))
    # the same gaps in other units: the same normalised gaps
    other = PSDGuidance(GuidanceConfig(tau=2.0), prior_for_units, "a red cube", Warm(), seed=0)
    for d, expected in zip(gaps, u):
        assert torch.allclose(other.normalise(torch.tensor([d, d]) * 250.0), expected)
    # before any non-zero gap the scale is 0 and so is every normalised gap
    fresh = PSDGuidance(GuidanceConfig(), prior_for_units, "a red cube", Warm(), seed=0)
    assert fresh.normalise(torch.zeros(2)).tolist() == [0.0, 0.0]
    # the old rule, in the reward's own units
    raw = PSDGuidance(GuidanceConfig(pair_scale="none"), prior_for_units, "a red cube", Warm(), seed=0)
    assert raw.normalise(torch.tensor([0.4, 0.4])).tolist() == pytest.approx([0.4, 0.4]) and len(raw.gaps) == 0


@pytest.fixture(scope="module")
def prior_for_units():
    from psd_gs.priors.analytic import AnalyticPrior

    return AnalyticPrior()


def test_a_reward_in_other_units_steers_the_run_alike(tmp_path, one_thread):
    """The warm reward times 0.01 or 100, or plus 5: the same pair weights and the same scene. Under the
    old rule (the gap in the reward's units) the scaled reward changes the run: the test can tell."""
    base = run(small(tmp_path, "base"), reward=Warm())
    assert base.metrics["pair"]["steps"] == 12 and 0 < base.metrics["pair"]["mean_k"] < 1
    for scale, shift in ((0.01, 0.0), (100.0, 0.0), (1.0, 5.0)):
        other = run(small(tmp_path, f"x{scale}+{shift}"), reward=Warm(scale, shift))
        for key in ("informative_share", "mean_k"):
            assert other.metrics["pair"][key] == pytest.approx(base.metrics["pair"][key], abs=1e-5), (scale, shift)
        assert other.metrics["pair"]["gap_scale"] == pytest.approx(base.metrics["pair"]["gap_scale"] * scale,
                                                                   rel=1e-3)
        assert torch.allclose(params(other), params(base), atol=1e-4), (scale, shift)
    old = run(small(tmp_path, "old", pair_scale="none", tau=0.3), reward=Warm())
    old_scaled = run(small(tmp_path, "old-scaled", pair_scale="none", tau=0.3), reward=Warm(0.01))
    assert old_scaled.metrics["pair"]["mean_k"] < 0.2 * old.metrics["pair"]["mean_k"]
    assert (params(old_scaled) - params(old)).abs().max() > 1e-2


def test_the_gap_scale_resumes_from_a_checkpoint(tmp_path, one_thread):
    """Cut inside the pair window (steps 0-11 of 30): the resumed run goes on with the gaps it had seen."""
    straight = run(small(tmp_path, "straight", checkpoint_every=5), reward=Warm())
    cancel = CancelToken()
    for event in generate(small(tmp_path, "cut", checkpoint_every=5), reward=Warm(), cancel=cancel):
        if isinstance(event, Progress) and event.step == 5:
            cancel.set()
        if isinstance(event, Result):
            first = event
    assert first.metrics["steps_done"] == 5 and first.metrics["pair"]["steps"] == 5
    resumed = run(None, resume=first.out_dir, reward=Warm())
    assert torch.equal(params(resumed), params(straight))
    assert resumed.metrics["pair"] == straight.metrics["pair"]


def test_pair_record_reaches_metrics_and_the_page(tmp_path):
    result = run(small(tmp_path, "warm"), reward=Warm())
    pair = json.loads((result.out_dir / "metrics.json").read_text())["pair"]
    assert pair["steps"] == 12 and 0 < pair["informative_share"] <= 1 and pair["pair_scale"] == "run"
    sentence = ui.result_sentence(small(tmp_path, "warm"), result.metrics)
    assert f"{pair['informative_share']:.0%} of 12 pair steps" in sentence and "did not steer" not in sentence
    flat = run(small(tmp_path, "flat"), reward=Constant())
    assert flat.metrics["pair"]["informative_share"] == 0.0 and flat.metrics["pair"]["mean_k"] == 0.0
    assert "did not steer this run" in ui.result_sentence(small(tmp_path, "flat"), flat.metrics)
    sds = run(small(tmp_path, "sds", method="sds"), reward=Warm())
    assert "pair" not in sds.metrics and "Preference pairs" not in ui.result_sentence(small(tmp_path, "sds"),
                                                                                         sds.metrics)
