"""Load once, run many: ModelCache keeps the prior and rewards between runs, keyed by what defines them."""

import pytest

import psd_gs.run.models as models
from psd_gs.config import preset
from psd_gs.run.loop import run
from psd_gs.run.models import ModelCache


@pytest.fixture(autouse=True)
def shapes_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PSD_GS_CACHE", str(tmp_path_factory.getbasetemp() / "psd_gs_cache"))


def small(tmp_path, **overrides):
    cfg = preset("shapes", prompt="a cube", steps=4, out_dir=str(tmp_path / "runs"), preview_every=0,
                 turntable_views=2)
    cfg.camera.resolution = ((0.0, 32),)
    cfg.scene.n_init = 200
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def test_a_second_run_and_an_sds_pass_load_nothing(tmp_path, monkeypatch):
    loaded = []
    real_prior, real_reward = models.load_prior, models.load_reward
    monkeypatch.setattr(models, "load_prior", lambda *a, **k: loaded.append("prior") or real_prior(*a, **k))
    monkeypatch.setattr(models, "load_reward", lambda *a, **k: loaded.append("reward") or real_reward(*a, **k))
    cache = ModelCache()
    cfg = small(tmp_path)
    prior, reward = cache.for_run(cfg)
    first = run(cfg, prior=prior, reward=reward)
    assert loaded == ["prior", "reward"]
    again = small(tmp_path, seed=5)
    again.guidance.method = "sds"  # Compare's SDS pass: same prior, the reward still judges the result
    prior2, reward2 = cache.for_run(again)
    second = run(again, prior=prior2, reward=reward2)
    assert loaded == ["prior", "reward"] and prior2 is prior and reward2 is reward
    assert first.metrics["evaluation"]["judged_by"] == second.metrics["evaluation"]["judged_by"] == "shapes-warm"


def test_what_defines_a_model_is_its_key(tmp_path):
    cache = ModelCache(max_rewards=1)
    cfg = small(tmp_path)
    prior, warm = cache.for_run(cfg)
    other = small(tmp_path)
    other.prior.options["data_std"] = 0.2  # another prior: loaded, replacing the first
    assert cache.for_run(other)[0] is not prior and cache.loads == 3
    cool = small(tmp_path, reward="shapes-cool")
    cool.prior.options["data_std"] = 0.2
    assert cache.for_run(cool)[1] is not warm and cache.loads == 4  # max_rewards=1: warm dropped
    assert cache.for_run(small(tmp_path))[1] is not warm and cache.loads == 6
