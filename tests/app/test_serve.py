"""Safe to expose: login, messages, served copies, clean-up, and memory budgets (psd_gs/app/serve.py,
psd_gs/run/memory.py); the same checked through a real server in test_app.py."""

import os
import threading
import time
from pathlib import Path

import pytest
import torch

import app
from psd_gs.app import page
from psd_gs.app import serve
from psd_gs.run import memory
from psd_gs.config import preset


@pytest.mark.parametrize("setting, says", [
    ("nocolon", "has no colon"), (":", "the user is empty"), ("u:", "the password is empty"),
    (" :pw", "the user is empty"),
])
def test_a_malformed_login_setting_is_a_clear_start_up_error(setting, says, monkeypatch):
    with pytest.raises(ValueError, match=says):
        serve.parse_auth(setting)
    monkeypatch.setenv("PSD_GS_AUTH", setting)
    with pytest.raises(SystemExit, match=f"psd-gs: PSD_GS_AUTH must be user:password.*{says}"):
        app.main(["--runs", "unused-runs-folder"])
    assert serve.parse_auth("ann:s3cret:x") == ("ann", "s3cret:x") and serve.parse_auth(None) is None


def test_wrong_passwords_are_answered_slowly_and_one_at_a_time():
    check = serve.slow_auth("ann", "s3cret", delay=0.2)
    t0 = time.perf_counter()
    assert check("ann", "s3cret")
    assert time.perf_counter() - t0 < 0.1  # the right password is not slowed
    results, threads = [], [threading.Thread(target=lambda: results.append(check("ann", "guess"))) for _ in range(6)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [False] * 6 and time.perf_counter() - t0 >= 6 * 0.2  # in turn, not in parallel


def test_a_server_open_to_others_without_login_says_so():
    assert serve.startup_warnings("127.0.0.1", None) == []
    assert serve.startup_warnings("0.0.0.0", ("a", "b")) == []
    (warning,) = serve.startup_warnings("0.0.0.0", None)
    assert "without a login" in warning and "PSD_GS_AUTH" in warning
    demo = page.build_demo("shapes", "test", runs_root="unused", warnings=[warning])
    banner = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "no-login")
    assert "without a login" in banner.value


def test_messages_name_no_server_paths(tmp_path):
    root = tmp_path / "runs"
    text = f"cannot create run folders in {root} (Permission denied); the last good scene is in {root.resolve()}/x"
    cleaned = serve.public_message(text, [root])
    assert str(tmp_path) not in cleaned and cleaned.count("<runs>") == 2


def test_served_copies_live_outside_the_runs_folder_and_old_ones_are_pruned(tmp_path, monkeypatch):
    monkeypatch.setattr(serve, "SERVE_DIR", tmp_path / "serve")
    (tmp_path / "scene.ply").write_text("ply")
    copy, missing = serve.serve_copies([tmp_path / "scene.ply", tmp_path / "absent.mp4"])
    assert missing is None and copy.startswith(str(tmp_path / "serve")) and open(copy).read() == "ply"
    for i in range(5):
        (tmp_path / "serve" / f"old{i}").mkdir()
        os.utime(tmp_path / "serve" / f"old{i}", (time.time() - 7200, time.time() - 7200))
    assert serve.prune(tmp_path / "serve", max_age_seconds=3600) == 5
    for i in range(4):
        (tmp_path / "serve" / f"new{i}").write_text("x")
    assert serve.prune(tmp_path / "serve", max_age_seconds=3600, max_entries=2) == 3  # 5 entries: 3 oldest go
    assert len(list((tmp_path / "serve").iterdir())) == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "scene.ply").write_text("other ply")  # two runs' files of one name stay apart
    first, second = serve.serve_copies([tmp_path / "scene.ply", tmp_path / "other" / "scene.ply"])
    assert Path(first).name == Path(second).name == "scene.ply"
    assert (open(first).read(), open(second).read()) == ("ply", "other ply")


def test_the_memory_estimate_grows_with_the_run_and_names_what_fits(monkeypatch):
    assert memory.in_use(torch.device("cpu")) > 100 * 2 ** 20  # this process, measured
    monkeypatch.setattr(memory, "in_use", lambda device: 500 * 2 ** 20)  # fixed, so the margins are exact
    sizes = [32, 64, 128, 256, 512]
    totals = []
    for res in sizes:
        cfg = preset("shapes")
        cfg.camera.resolution = ((0.0, res),)
        totals.append(memory.run_estimate(cfg).total)
    assert totals == sorted(totals) and totals[-1] > 4 * totals[1]
    cfg = preset("shapes")
    cfg.camera.resolution = ((0.0, 512),)
    fit64, fit128 = (memory.run_estimate(memory._at(cfg, r)).total for r in (64, 128))
    budget = 500 * 2 ** 20 + (fit64 + fit128) // 2  # 64 px fits, 128 px does not
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"camera.resolution: this run needs about .* GB .* allows .* GB "
                                         r"\(--max-memory-gb\); 32 px, 64 px would fit"):
        memory.check_fits(cfg, budget, resolutions=sizes)
    assert time.perf_counter() - t0 < 1.0  # refused in milliseconds, before anything loads
    assert memory.fitting_resolutions(cfg, budget, sizes) == [32, 64]
    assert "32 px, 64 px would fit" in str(pytest.raises(ValueError, memory.check_fits, cfg, budget,
                                                          resolutions=sizes).value)


def test_the_page_offers_only_what_fits_its_budget(monkeypatch):
    monkeypatch.setattr(memory, "in_use", lambda device: 500 * 2 ** 20)
    cfg = preset("shapes")
    fit64, fit128 = (memory.run_estimate(memory._at(cfg, r)).total for r in (64, 128))
    budget = 500 * 2 ** 20 + (fit64 + fit128) // 2
    demo = page.build_demo("shapes", "test", runs_root="unused", budget=budget)
    resolution = next(b for b in demo.blocks.values() if getattr(b, "label", None) == "Resolution")
    assert [v for _, v in resolution.choices] == ["32", "64"] and resolution.value == "64"


def test_the_shapes_pose_grid_renders_in_bounded_calls(monkeypatch):
    """The grid's objects at 256 px: every rasteriser call stays within PIXELS_PER_CALL (issue: 5.9 GB
    before step 1 when all 96 views of a batch were one call)."""
    import psd_gs.priors.analytic as analytic
    from psd_gs.scene.cameras import sample_orbit
    from psd_gs.render import PIXELS_PER_CALL

    calls = []
    real = analytic.rasterize_torch

    def counting(scene, cams, *args, **kwargs):
        calls.append(len(cams) * cams.width * cams.height)
        return real(scene, cams, *args, **kwargs)

    monkeypatch.setattr(analytic, "rasterize_torch", counting)
    prior = analytic.AnalyticPrior(n_per_object=50)
    rgb = prior.render_objects(sample_orbit(2, 256, 256, generator=torch.Generator().manual_seed(0)))
    assert rgb.shape == (2, 12, 256, 256, 3) and len(calls) == 24 and max(calls) <= PIXELS_PER_CALL


def test_the_memory_estimate_counts_the_mesh_step_when_the_run_writes_one():
    cfg = preset("shapes")
    with_mesh = memory.run_estimate(cfg, with_weights=False)
    assert with_mesh.parts["mesh"] == memory.mesh_bytes(cfg.mesh_resolution)
    cfg.mesh_resolution = 256
    assert memory.run_estimate(cfg, with_weights=False).total > with_mesh.total
    cfg.mesh = False
    assert "mesh" not in memory.run_estimate(cfg, with_weights=False).parts
