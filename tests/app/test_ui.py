"""What the page shows, computed without Gradio (psd_gs/app/ui.py) and app.py's mapping of errors to controls."""

import json

import numpy as np
import pytest

from psd_gs.app import page, world
from psd_gs.app import plots, ui
from psd_gs.config import preset


def test_time_left_follows_the_recent_pace_not_the_slow_start():
    clock = ui.StepClock(window=5)
    assert clock.left(1, 100, now=30.0) is None  # one mark: no pace yet (30 s of loading before step 1)
    for step in range(2, 11):
        left = clock.left(step, 100, now=30.0 + 0.5 * (step - 1))
    assert left == pytest.approx(0.5 * 90)  # 0.5 s a step from here on, not (35 s / 10 steps) x 90


def test_plots_name_every_series_and_mark_the_end_of_the_pair_window():
    history = [{"step": float(s), "reward_w": 0.5, "reward_l": 0.1, "loss_sds": 1.0, "loss_negative": 0.7}
               for s in range(1, 31)]
    rewards, losses = plots.series(history)
    assert list(rewards) == ["winner guess", "loser guess"] and list(losses) == ["sds", "negative"]
    assert rewards["winner guess"][0] == (1.0, 0.5) and len(losses["negative"]) == 30
    reward_img, loss_img = plots.run_plots(history, total=100, window_end=20)
    assert reward_img.shape == (210, 456, 3) and reward_img.dtype.name == "uint8"
    assert len(np.unique(reward_img.reshape(-1, 3), axis=0)) > 50  # a drawn chart, not a blank
    assert not np.array_equal(reward_img, plots.run_plots(history, total=100)[0])  # the window marker shows
    cfg = preset("shapes")
    assert plots.window_end_step(cfg) == 160  # pair_window (0, 0.4) of 400 steps
    cfg.guidance.method = "sds"
    assert plots.window_end_step(cfg) is None


def test_a_chart_has_a_legend_naming_each_series(monkeypatch):
    from matplotlib.figure import Figure

    legends = []
    real_adjust = Figure.subplots_adjust

    def spy(fig, *args, **kwargs):
        legends.append([t.get_text() for t in fig.axes[0].get_legend().get_texts()])
        return real_adjust(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "subplots_adjust", spy)
    plots.run_plots([{"step": 1.0, "reward_w": 0.5, "reward_l": 0.1, "loss_sds": 1.0}], total=10, window_end=5)
    assert legends == [["winner guess", "loser guess", plots.WINDOW_MARK], ["sds", plots.WINDOW_MARK]]


def test_result_sentence_says_what_formed_and_shows_user_text_as_text():
    cfg = preset("shapes", prompt="a sphere")
    metrics = {"steps_done": 400, "steps": 400, "seconds": 17.0, "cancelled": False,
               "evaluation": {"nearest": "orange sphere", "preferred": "orange sphere", "hit": True, "psnr": 37.4,
                              "reward": 0.41, "judged_by": "shapes-warm"}}
    text = ui.result_sentence(cfg, metrics, "Done")
    assert "formed the **orange sphere**" in text and "the object the reward prefers" in text and "37.4 dB" in text
    metrics["evaluation"] |= {"nearest": "<img src=x onerror=alert(1)>", "hit": False}
    assert "<img" not in ui.result_sentence(cfg, metrics) and "&lt;img src=x" in ui.result_sentence(cfg, metrics)
    sd = preset("sd")
    sentence = ui.result_sentence(sd, {"steps_done": 10, "steps": 1000, "seconds": 5.0, "cancelled": True,
                                       "reward_views": {"mean": 0.27, "per_view": [0.27] * 8}})
    assert "reward 0.270 over 8 views (hpsv2)" in sentence and "CFG 7.5" in sentence and "stopped early" in sentence


def test_status_html_escapes_and_draws_one_bar():
    html = ui.status_html("Error: <script>alert(1)</script>", 3, 10, error=True)
    assert "<script>" not in html and "&lt;script&gt;" in html and html.count("<progress") == 1


def test_history_lists_only_the_owners_finished_runs(tmp_path):
    def make(name, owner, finished=True):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(preset("shapes", prompt=name.replace("-", " ")).to_json())
        (folder / "owner").write_text(owner)
        if finished:
            (folder / "scene.ply").write_bytes(b"ply")
            (folder / "metrics.json").write_text(json.dumps({"evaluation": {"reward": 0.25}}))

    make("a-cube", "alice")
    make("a-sphere", "bob")
    make("a-torus", "alice", finished=False)
    (tmp_path / "stray").mkdir()
    runs = ui.past_runs(tmp_path, "alice")
    assert [r.cfg.prompt for r in runs] == ["a cube"] and runs[0].row()[1:] == ["a cube", "psd", "shapes-warm", 0.25]
    assert ui.past_runs(tmp_path, "") == []
    assert ui.owner_id("browser:x") != ui.owner_id("browser:y") and len(ui.owner_id("user:a")) == 32


@pytest.mark.parametrize("path, value, control", [
    ("prompt", "  ", "prompt"), ("prompt", "a dog", "prompt"), ("guidance.tau", 0.0, "guidance.tau"),
    ("seed", -1, "seed"), ("guidance.cfg_scale", 0.5, "guidance.cfg_scale"), ("steps", 0, "steps"),
    ("guidance.pair_window", "[0.6, 0.2]", "guidance.pair_window"), ("resolution", "30", "resolution"),
])
def test_a_bad_value_is_named_next_to_its_own_control(path, value, control):
    paths = page.MAIN + page.SETTINGS + page.ADVANCED + page.REFINE
    values = {"prompt": "a cube", path: value}
    with pytest.raises(ValueError) as err:
        world.make_config("shapes", "runs", values)
    assert world.setting_of(err.value, paths) == control
