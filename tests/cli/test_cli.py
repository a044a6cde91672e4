"""The command line (psd_gs/cli/main.py): help, input errors, a real run end to end, Ctrl-C, evaluate, bench.

Real runs use the shapes preset at 20 steps and 32 px. The shapes prior precomputes its reference
latents once per resolution and caches them under $PSD_GS_CACHE, which points at one folder for the
whole session, so only the first run pays for it.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import pytest

import psd_gs.run.loop as gen_mod
from psd_gs.cli.main import build_parser, config_from_args, main
from psd_gs.config import preset
from psd_gs.run.loop import GenerationError, Progress
from psd_gs.run.folders import new_run_dir, slug
from psd_gs.scene.ply import load_ply
from psd_gs.priors.base import MissingWeightsError
from psd_gs.registry import METHODS, PRIORS, REWARDS, RewardEntry

REPO = Path(__file__).resolve().parents[2]
FAST = ["--steps", "20", "--resolution", "32", "--turntable-views", "3"]


@pytest.fixture(scope="session")
def shapes_cache(tmp_path_factory):
    """$PSD_GS_CACHE for the session (in-process and inherited by subprocesses)."""
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("psd_gs_cache")
        mp.setenv("PSD_GS_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="session")
def e2e_run(shapes_cache, tmp_path_factory):
    """One real `python -m psd_gs generate` in a subprocess: (completed process, its run folder)."""
    out = tmp_path_factory.mktemp("runs")
    proc = subprocess.run([sys.executable, "-m", "psd_gs", "generate", "a red cube", "--preset", "shapes",
                           "--method", "psd", "--seed", "1", "--out", str(out), *FAST],
                          cwd=REPO, capture_output=True, text=True, timeout=240)
    folders = [p for p in out.iterdir() if p.is_dir()]
    return proc, (folders[0] if len(folders) == 1 else None)


def assert_one_error_line(stderr: str) -> str:
    """Exactly one `error: ` line, no traceback; returns that line."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


# ---- help and arguments -----------------------------------------------------------------------


def test_top_level_help_lists_every_subcommand_with_examples(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("generate", "evaluate", "bench"):
        assert re.search(rf"^\s+{command}\s+\S", out, re.M), f"no one-line description for {command}"
    assert "examples:" in out and 'python -m psd_gs generate "a red cube" --preset shapes --method psd' in out


@pytest.mark.parametrize("command", ["generate", "evaluate", "bench"])
def test_subcommand_help_documents_every_option_and_its_default(command, capsys):
    assert main([command, "--help"]) == 0
    assert "examples:" in capsys.readouterr().out
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and "default" in action.help, f"{command} {action.option_strings}"
        else:
            assert action.help, f"{command} {action.dest}"


def test_help_and_choices_come_from_the_registries(capsys):
    sub = build_parser()._subparsers._group_actions[0].choices["generate"]
    options = {a.dest: a for a in sub._actions}
    assert list(options["reward"].choices) == list(REWARDS)
    assert list(options["method"].choices) == list(METHODS) and list(options["prior"].choices) == list(PRIORS)
    assert main(["generate", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert all(name in out for name in REWARDS) and "--set PATH=VALUE" in out


def test_set_reaches_any_field_and_wins_over_the_shortcuts():
    args = build_parser().parse_args(["generate", "a cube", "--tau", "0.2", "--set", "guidance.tau=0.35",
                                      "--set", "camera.batch=2", "--set", "prior.options.data_std=0.2",
                                      "--set", "guidance.pair_window=[0, 0.25]", "--set", "scene.densify=true"])
    cfg = config_from_args(args)
    assert cfg.guidance.tau == 0.35 and cfg.camera.batch == 2 and cfg.guidance.pair_window == (0.0, 0.25)
    assert cfg.prior.options["data_std"] == 0.2 and cfg.scene.densify is True


@pytest.mark.parametrize("setting, says", [
    ("guidance.tua=0.3", "unknown setting 'guidance.tua'"),
    ("guidance.tau", "expected PATH=VALUE"),
    ("camera.batch=two", "camera.batch = 'two': expected int"),
    ("prior.options.grid=3", "the shapes prior's options are prior.options.data_std"),
    ("guidance.cfg_scale=0.5", "guidance.cfg_scale = 0.5: must be >= 1.0"),
])
def test_a_bad_set_is_one_error_line_before_anything_loads(setting, says, tmp_path, capsys):
    assert main(["generate", "a cube", "--out", str(tmp_path), "--set", setting]) == 2
    assert says in assert_one_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_config_lists_every_field_with_its_value_and_help(capsys):
    assert main(["config", "--preset", "sd", "--set", "guidance.tau=0.02"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines}
    assert "0.02" in rows["guidance.tau"] and "reward gap" in rows["guidance.tau"]
    assert "taesd" in rows["prior.options.decoder"] and rows["prior.name"].split()[1] == "'sd'"
    assert main(["config", "--json"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["prior"] == {"name": "shapes", "source": "", "options": {"data_std": 0.1, "pose_grid": [5, 24],
                                                                          "n_per_object": 400}}


def test_output_piped_into_a_reader_that_quits_ends_quietly():
    """`python -m psd_gs config | head -1`: the reader closes the pipe early; no traceback, exit 0."""
    proc = subprocess.Popen([sys.executable, "-m", "psd_gs", "config"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_options_land_in_the_config():
    args = build_parser().parse_args(["generate", "a cube", "--method", "sds", "--reward", "shapes-cool",
                                      "--steps", "7", "--seed", "3", "--out", "somewhere", "--cfg-scale", "5",
                                      "--lambda-p", "0", "--neg-lr", "0.01", "--tau", "0.2", "--resolution", "48",
                                      "--device", "cpu", "--checkpoint-every", "5"])
    cfg = config_from_args(args)
    assert (cfg.prompt, cfg.prior.name, cfg.steps, cfg.seed, cfg.out_dir, cfg.reward, cfg.device, cfg.checkpoint_every) \
        == ("a cube", "shapes", 7, 3, "somewhere", "shapes-cool", "cpu", 5)
    g = cfg.guidance
    assert (g.method, g.cfg_scale, g.lambda_p, g.neg_lr, g.tau) == ("sds", 5.0, 0.0, 0.01, 0.2)
    assert cfg.camera.resolution == ((0.0, 48),)
    untouched = config_from_args(build_parser().parse_args(["generate", "a cube"]))
    assert untouched == preset("shapes", prompt="a cube")


@pytest.mark.parametrize("argv, says", [
    (["a red cube", "--method", "nope"], "--method"),
    (["a red cube", "--steps", "-5"], "steps"),
    ([""], "prompt is empty"),
    (["   "], "prompt is empty"),
    ([], "PROMPT"),
    (["a red cube", "--reward", "nope"], "shapes-warm"),  # lists the known names
    (["a dog"], "dog"),
    (["a red cube", "--resolution", "30"], "multiple of 8"),
    (["a red cube", "--tau", "0"], "tau"),
    (["a red cube", "--turntable-views", "0"], "turntable_views = 0: must be >= 1"),
    (["a red cube", "--checkpoint-every", "-1"], "checkpoint_every = -1: must be >= 0"),
    (["a red cube", "--seed", "-3"], "seed = -3: must be >= 0"),
])
def test_bad_generate_input_is_one_error_line_and_no_run_folder(argv, says, tmp_path, capsys):
    assert main(["generate", *argv, "--out", str(tmp_path)]) == 2
    line = assert_one_error_line(capsys.readouterr().err)
    assert says in line
    assert list(tmp_path.iterdir()) == []  # inputs are checked before the run folder exists


def test_run_folder_name_from_a_hostile_prompt_stays_inside_out_dir(tmp_path):
    assert slug("../../etc/passwd a red cube") == "etc-passwd-a-red-cube"
    run_dir = new_run_dir(tmp_path, "../../etc/passwd a red cube", "psd", 0)
    assert run_dir.parent == tmp_path and run_dir.is_dir()
    assert re.fullmatch(r"[a-z0-9-]+", run_dir.name), run_dir.name
    assert re.search(r"-seed0-[0-9a-f]{16}$", run_dir.name)  # not guessable from what a user knows


# ---- generate, for real -----------------------------------------------------------------------


def test_generate_end_to_end_in_a_subprocess(e2e_run):
    proc, run_dir = e2e_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "loss_sds" in proc.stderr  # the progress bar's postfix
    assert run_dir is not None and f"run folder: {run_dir}" in proc.stdout
    ply = run_dir / "scene.ply"
    assert f"scene:      {ply}" in proc.stdout
    assert re.search(r"metrics: +20/20 steps in [\d.]+ s .*\d+ Gaussians", proc.stdout), proc.stdout
    assert re.search(r"pairs: +Preference pairs: the reward separated the candidates in \d+% of 8 pair steps, "
                     r"mean weight k [\d.]+", proc.stdout), proc.stdout  # how PSD's pair acted (issue 24)
    assert len(load_ply(ply)) > 0
    cfg = json.loads((run_dir / "config.json").read_text())
    assert (cfg["prompt"], cfg["steps"], cfg["seed"], cfg["camera"]["resolution"]) == ("a red cube", 20, 1, [[0.0, 32]])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps_done"] == 20 and metrics["cancelled"] is False
    assert (run_dir / "turntable.mp4").stat().st_size > 0


def test_ctrl_c_ends_the_run_after_the_current_step_and_keeps_the_result(shapes_cache, tmp_path, monkeypatch, capsys):
    real = gen_mod.generate

    def interrupted_after_step_2(cfg, cancel=None, resume=None):
        for event in real(cfg, cancel=cancel, resume=resume):
            yield event
            if isinstance(event, Progress) and event.step == 2:
                signal.raise_signal(signal.SIGINT)  # as Ctrl-C does, while the loop runs

    monkeypatch.setattr(gen_mod, "generate", interrupted_after_step_2)
    before = signal.getsignal(signal.SIGINT)  # the default handler, or SIG_IGN under nohup
    code = main(["generate", "a RED cube!!! /// ..", "--method", "sds", "--out", str(tmp_path), "--quiet", *FAST])
    out = capsys.readouterr().out
    assert code == 130
    (run_dir,) = tmp_path.iterdir()
    assert re.fullmatch(r"[a-z0-9-]+", run_dir.name) and "a-red-cube-sds" in run_dir.name
    assert f"cancelled after step 2 of 20; the partial result is in {run_dir}" in out
    assert json.loads((run_dir / "metrics.json").read_text())["steps_done"] == 2
    assert len(load_ply(run_dir / "scene.ply")) > 0
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


def test_second_ctrl_c_aborts_at_once(shapes_cache, tmp_path, monkeypatch, capsys):
    real = gen_mod.generate

    def interrupted_twice(cfg, cancel=None, resume=None):
        for event in real(cfg, cancel=cancel, resume=resume):
            yield event
            if isinstance(event, Progress) and event.step == 1:
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(gen_mod, "generate", interrupted_twice)
    assert main(["generate", "a red cube", "--method", "sds", "--out", str(tmp_path), "--quiet", *FAST]) == 130
    assert assert_one_error_line(capsys.readouterr().err) == "error: interrupted"
    (run_dir,) = tmp_path.iterdir()
    assert not (run_dir / "scene.ply").exists()


def test_a_run_that_has_to_stop_is_one_error_line(tmp_path, monkeypatch, capsys):
    def stops(cfg, cancel=None, resume=None):
        yield Progress(1, cfg.steps, {"loss_sds": 1.0}, 0.1, 10)
        raise GenerationError("the loss was not finite for 5 steps in a row; stopped.\nThe last good scene is in X")

    monkeypatch.setattr(gen_mod, "generate", stops)
    assert main(["generate", "a red cube", "--out", str(tmp_path)]) == 2
    assert assert_one_error_line(capsys.readouterr().err) == (
        "error: the loss was not finite for 5 steps in a row; stopped. The last good scene is in X")


@pytest.mark.parametrize("extra, says", [
    ([], "has no config.json"),
    (["--preset", "sd", "--steps", "5"], "drop --preset, --steps"),
    (["a red cube"], "drop PROMPT"),
])
def test_bad_resume_is_one_error_line(extra, says, tmp_path, capsys):
    assert main(["generate", "--resume", str(tmp_path), *extra]) == 2
    assert says in assert_one_error_line(capsys.readouterr().err)


def test_resume_needs_a_checkpoint(e2e_run, capsys):
    _, run_dir = e2e_run
    assert main(["generate", "--resume", str(run_dir)]) == 2
    assert "has no checkpoint.pt" in assert_one_error_line(capsys.readouterr().err)


# ---- evaluate ---------------------------------------------------------------------------------


def test_evaluate_run_folder_writes_report_with_shapes_fidelity(e2e_run, capsys):
    _, run_dir = e2e_run
    assert main(["evaluate", str(run_dir), "--views", "4"]) == 0
    out = capsys.readouterr().out
    report = json.loads((run_dir / "evaluation.json").read_text())
    assert report["prompt"] == "a red cube" and report["views"] == 4
    assert len(report["rewards"]["shapes-warm"]["per_view"]) == 4  # the run's reward by default
    assert {"nearest", "psnr", "hit"} <= set(report["shapes"])
    assert report["shapes"]["nearest"] == "red cube"  # the only object "a red cube" allows
    assert iio.imread(run_dir / "views.png").shape == (32, 4 * 32, 3)  # the run's 32 px, side by side
    assert "shapes-warm" in out and "nearest red cube" in out


def test_evaluate_a_ply_with_prompt_and_rewards(e2e_run, tmp_path, capsys):
    _, run_dir = e2e_run
    code = main(["evaluate", str(run_dir / "scene.ply"), "--prompt", "a cube", "--rewards", "shapes-cool,shapes-warm",
                 "--views", "2", "--resolution", "24", "--out", str(tmp_path / "eval")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert report["prompt"] == "a cube" and set(report["rewards"]) == {"shapes-cool", "shapes-warm"}
    assert len(report["shapes"]["psnr_per_object"]) == 4  # the four cubes "a cube" allows
    assert iio.imread(tmp_path / "eval" / "views.png").shape == (24, 2 * 24, 3)


@pytest.mark.parametrize("content", [b"not a ply at all\n\x00\x01",
                                     b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n0\n"])
def test_evaluate_malformed_ply_is_one_error_line(content, tmp_path, capsys):
    bad = tmp_path / "bad.ply"
    bad.write_bytes(content)
    assert main(["evaluate", str(bad), "--prompt", "a red cube", "--rewards", "shapes-warm"]) == 2
    assert str(bad) in assert_one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "evaluation.json").exists()


@pytest.mark.parametrize("argv, says", [
    (["--rewards", "shapes-warm,nope"], "known rewards: aesthetic, clip, hpsv2"),
    (["--prompt", "a dog"], "dog"),
    (["--views", "0"], "--views"),
])
def test_bad_evaluate_input_is_one_error_line(argv, says, e2e_run, capsys):
    _, run_dir = e2e_run
    assert main(["evaluate", str(run_dir), *argv]) == 2
    assert says in assert_one_error_line(capsys.readouterr().err)


def test_evaluate_with_absent_weights_is_one_error_line(e2e_run, tmp_path, monkeypatch, capsys):
    import types

    def absent(device=None, **kwargs):
        raise MissingWeightsError("reward 'hpsv2': HPS_v2.1_compressed.pt is not in the local cache")

    monkeypatch.setitem(sys.modules, "absent_reward", types.SimpleNamespace(load=absent))
    monkeypatch.setitem(REWARDS, "hpsv2", RewardEntry("absent_reward:load", ("image",), "HPS", "absent"))
    _, run_dir = e2e_run
    assert main(["evaluate", str(run_dir), "--rewards", "hpsv2", "--out", str(tmp_path)]) == 2
    assert "HPS_v2.1_compressed.pt is not in the local cache" in assert_one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "evaluation.json").exists()


def test_evaluate_needs_a_prompt_for_a_bare_ply(e2e_run, tmp_path, capsys):
    _, run_dir = e2e_run
    lone = tmp_path / "lone.ply"
    lone.write_bytes((run_dir / "scene.ply").read_bytes())
    assert main(["evaluate", str(lone)]) == 2
    assert "--prompt" in assert_one_error_line(capsys.readouterr().err)


# ---- bench ------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["bench", "nope"], ["bench", "../bench/step_cost"], ["bench"]])
def test_bench_unknown_or_missing_name_lists_the_available_ones(argv, capsys):
    assert main(argv) == 2
    line = assert_one_error_line(capsys.readouterr().err)
    assert "render_bench" in line and "step_cost" in line and "call_logs" not in line  # only runnable scripts


def test_bench_runs_the_script_with_the_remaining_arguments(capfd):
    assert main(["bench", "step_cost", "--help"]) == 0
    assert "usage: step_cost.py" in capfd.readouterr().out


def test_out_naming_a_file_is_one_error_line(tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    t0 = time.perf_counter()
    assert main(["generate", "a red cube", "--out", str(target), *FAST]) == 2
    assert "cannot create run folders" in assert_one_error_line(capsys.readouterr().err)
    assert time.perf_counter() - t0 < 10  # before any model loads or step runs


def test_evaluate_without_cached_weights_fails_at_once_naming_fetch_weights(e2e_run, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    _, run_dir = e2e_run
    t0 = time.perf_counter()
    assert main(["evaluate", str(run_dir), "--rewards", "hpsv2,clip", "--out", str(tmp_path)]) == 2
    line = assert_one_error_line(capsys.readouterr().err)
    assert "clip, hpsv2 are not in the local cache" in line and "fetch-weights --prior none --rewards clip,hpsv2" in line
    assert time.perf_counter() - t0 < 2.0  # no download attempt
    assert main(["evaluate", str(run_dir), "--views", "2", "--out", str(tmp_path)]) == 0  # its own reward: no weights


def test_a_blank_render_is_not_a_hit():
    from psd_gs.run.evaluate import eval_cameras, shapes_report
    from psd_gs.scene.gaussians import GaussianScene
    from psd_gs.rewards import load_reward

    blank = GaussianScene.random(10, init_opacity=0.001)
    report = shapes_report(blank, "a red cube", load_reward("shapes-warm"), eval_cameras(4, 32))
    assert report["nearest"] == report["preferred"] == "red cube"  # the only object allowed...
    assert report["psnr"] < 15 and not report["formed"] and not report["hit"]  # ...but nothing formed
