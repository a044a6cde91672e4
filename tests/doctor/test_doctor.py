"""``python -m psd_gs doctor``: the CPU half runs in CI; the comparison and exit-code logic are tested here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from psd_gs.cli import main as cli_main
from psd_gs.cli import common as cli
from psd_gs.doctor import checks as doctor
from psd_gs.render import Render
from psd_gs.render.reference import rasterize_reference
from psd_gs.render.torch_backend import rasterize_torch

REPO = Path(__file__).resolve().parents[2]


def test_doctor_passes_its_cpu_half_and_writes_json(tmp_path):
    out = tmp_path / "doctor.json"
    env = dict(os.environ, PSD_GS_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.run([sys.executable, "-m", "psd_gs", "doctor", "--device", "cpu", "--json", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "every check that applies passed" in proc.stdout
    report = json.loads(out.read_text())
    rows = {r["check"]: r for r in report["rows"]}
    assert report["ok"] and report["device"] == "cpu"
    assert not [r for r in report["rows"] if r["status"] == "fail"]
    for name in ("torch", "gsplat", "diffusers", "transformers", "open_clip_torch"):
        assert rows[name]["status"] == "pass" and rows[name]["figure"]
    assert rows["PyTorch rasteriser vs float64 reference"]["status"] == "pass"
    for method in ("sds", "psd", "reward_grad"):
        assert rows[f"{method} step, tiny models"]["status"] == "pass"
    assert rows["shapes world, 20 PSD steps + export"]["status"] == "pass"
    learned = rows["learned prior (small SD trained here)"]
    assert learned["status"] == "pass" and learned["figure"].endswith("ms per PSD step"), learned
    assert "4 views at 64 px, float32 on cpu" in learned["detail"]
    assert rows["Ray (batches)"]["status"] == "pass" and "CPUs" in rows["Ray (batches)"]["figure"]
    assert rows["gsplat vs PyTorch rasteriser"]["status"] == "skip"  # CUDA only
    assert rows["SD + reward, 10 PSD steps at 512 px"]["status"] == "skip"
    assert rows["weights: prior sd"]["figure"] == "0/14 files"  # an empty cache, named file by file
    assert "fetch-weights" in rows["weights: reward hpsv2"]["detail"]


def test_a_failing_check_is_a_row_and_exit_code_2(tmp_path, monkeypatch, capsys):
    def boom(*args):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    for name in ("check_cpu_rasteriser", "check_guidance_steps", "check_weights"):
        monkeypatch.setattr(doctor, name, lambda *a: [])
    monkeypatch.setattr(doctor, "check_shapes_run", boom)
    out = tmp_path / "doctor.json"
    assert cli_main(["doctor", "--json", str(out)]) == cli.EXIT_ERROR
    printed = capsys.readouterr().out
    assert "1 check(s) failed" in printed and "no kernel image" in printed
    row = next(r for r in json.loads(out.read_text())["rows"] if r["status"] == "fail")
    assert row == {"check": "shapes world run", "status": "fail", "figure": "RuntimeError",
                   "detail": "CUDA error: no kernel image is available for execution on the device"}


def test_the_rasteriser_comparison_passes_agreement_and_catches_a_difference():
    """The comparison the doctor runs on CUDA (gsplat against ours), checked with two CPU rasterisers."""
    cpu = torch.device("cpu")
    agree = doctor.compare_rasterisers(rasterize_torch, rasterize_reference, cpu, seed=1, n=300, res=32)
    assert agree.status == "pass" and "max |drgb|" in agree.figure

    def a_tenth_too_dark(scene, cams, bg):
        out = rasterize_torch(scene, cams, bg)
        return Render(0.9 * out.rgb, out.alpha, out.depth, out.info)

    differ = doctor.compare_rasterisers(a_tenth_too_dark, rasterize_reference, cpu, seed=1, n=300, res=32)
    assert differ.status == "fail"
