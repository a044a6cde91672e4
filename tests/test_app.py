"""The Gradio app: page and config checks in-process, a real server driven through gradio_client,
and a real browser (Debian's Chromium through Playwright) that watches a run and sees the splat."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import gradio as gr
import pytest

import app
from psd_gs.ply import load_ply

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120
CHROMIUM = "/usr/bin/chromium"
# a short run: the page's controls (config path -> value); the /generate endpoint takes them in the
# page's order, app.MAIN + app.ADVANCED
SETTINGS = {"prompt": "a cube", "guidance.negative_prompt": "", "prior.name": "shapes", "guidance.method": "psd",
            "reward": "shapes-warm",
            "guidance.cfg_scale": 1.5, "guidance.lambda_p": 4.0, "guidance.neg_lr": 0.05, "steps": 20, "seed": 0,
            "resolution": "32", "guidance.tau": 0.3, "guidance.pair_window": "[0.0, 0.4]", "guidance.neg_every": 4,
            "guidance.beta": 10.0, "guidance.gamma": 0.001, "guidance.lambda_r": 1000.0, "guidance.t_min": 0.02,
            "guidance.t_max_start": 0.98, "guidance.t_max_end": 0.5}
SMALL = [SETTINGS[path] for path in app.MAIN + app.ADVANCED]


def test_build_demo_builds_for_the_shapes_world():
    demo = app.build_demo("shapes", "test", runs_root="unused")
    assert isinstance(demo, gr.Blocks) and demo.title == app.TITLE


def test_make_config_maps_the_page_and_names_bad_values():
    assert set(SETTINGS) == set(app.MAIN + app.ADVANCED)
    cfg = app.make_config("shapes", "runs", SETTINGS)
    assert cfg.guidance.method == "psd" and cfg.steps == 20 and cfg.camera.resolution == ((0.0, 32),)
    assert cfg.guidance.pair_window == (0.0, 0.4) and cfg.guidance.lambda_p == 4.0 and cfg.out_dir == "runs"
    for path, value, match in [("prompt", "  ", "prompt is empty"), ("guidance.method", "DDIM", "method"),
                               ("seed", -1, "seed"), ("seed", 2.5, "seed"), ("steps", 0, "steps"),
                               ("guidance.cfg_scale", 0.5, "cfg_scale"), ("guidance.tau", 0.0, "tau"),
                               ("guidance.pair_window", "0.4", "pair_window"), ("reward", "hpsv2", "shapes prior")]:
        with pytest.raises(ValueError, match=match):
            app.make_config("shapes", "runs", {**SETTINGS, path: value})


def test_the_page_is_built_from_the_config_fields_and_the_registries():
    from psd_gs.registry import METHODS, rewards_for

    demo = app.build_demo("shapes", "test", runs_root="unused")
    by_label = {getattr(b, "label", None): b for b in demo.blocks.values()}
    assert [v for _, v in by_label["Method"].choices] == list(METHODS)
    assert [v for _, v in by_label["Reward model"].choices] == list(rewards_for("shapes"))
    tau = by_label["guidance.tau"]  # an Advanced control: the field's own help and range
    assert "reward gap" in tau.info and tau.value == 0.3
    assert by_label["guidance.neg_every"].minimum == 1 and by_label["guidance.neg_every"].precision == 0


def test_choose_world_without_cuda_is_shapes(monkeypatch):
    monkeypatch.delenv("PSD_GS_PRESET", raising=False)
    world, why = app.choose_world()
    assert world == "shapes" and "CUDA" in why


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``python app.py`` on a free 127.0.0.1 port (shapes world); yields (url, runs root); stopped after."""
    tmp = tmp_path_factory.mktemp("app")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    log_path = tmp / "app.log"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1", PSD_GS_PRESET="shapes",
               PSD_GS_CACHE=str(tmp_path_factory.getbasetemp() / "psd_gs_cache"))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port),
                                 "--runs", str(tmp / "runs")], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode} before serving:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2.0) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not answer within {START_TIMEOUT_S} s:\n{log_path.read_text()}")
            time.sleep(0.5)
        yield url, tmp / "runs"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_client_generates_downloads_and_survives_bad_input(server):
    from gradio_client import Client

    url, runs = server
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="prompt is empty"):
        client.predict(False, "", *SMALL[1:], api_name="/generate")
    with pytest.raises(Exception, match="does not know"):
        client.predict(False, "a dog", *SMALL[1:], api_name="/generate")
    out = client.predict(False, *SMALL, api_name="/generate")
    status, ply = out[0], out[4]
    assert "Done: 20 / 20 steps" in status and "reward" in status
    scene = load_ply(ply)  # the downloaded .ply reads back
    assert scene.means.shape == (3000, 3)
    folders = list(runs.iterdir())
    assert len(folders) == 1 and (folders[0] / "scene.ply").exists()  # bad requests left no folder
    bad_reward = list(SMALL)
    bad_reward[app.MAIN.index("reward")] = "imagereward"
    with pytest.raises(Exception):
        client.predict(False, *bad_reward, api_name="/generate")


def test_client_gets_a_clear_error_when_run_folders_cannot_be_made(server):
    from gradio_client import Client

    url, runs = server
    runs.rename(runs.with_name("runs.moved"))
    runs.write_text("a file where the runs folder was")
    try:
        with pytest.raises(Exception, match="cannot create run folders"):
            Client(url, verbose=False).predict(False, *SMALL, api_name="/generate")
    finally:
        runs.unlink()
        runs.with_name("runs.moved").rename(runs)
    with urllib.request.urlopen(url, timeout=5) as resp:  # still serving
        assert resp.status == 200


def test_page_names_the_renderer():
    demo = app.build_demo("shapes", "test", runs_root="unused")
    world = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "world")
    assert "Renderer: PyTorch rasteriser on the CPU" in world.value


def test_client_compare_runs_sds_beside_the_method(server):
    from gradio_client import Client

    url, _ = server
    out = Client(url, verbose=False).predict(True, *SMALL, api_name="/generate")
    compare_md, compare_ply, table = out[7], out[8], out[9]
    assert "SDS with the same seed" in compare_md
    assert load_ply(compare_ply).means.shape == (3000, 3)
    headers = table["headers"] if isinstance(table, dict) else list(table.columns)
    rows = table["data"] if isinstance(table, dict) else table.values.tolist()
    assert headers == ["azimuth", "psd", "sds"] and len(rows) == 9 and rows[-1][0] == "mean"


def test_browser_watches_a_run_and_sees_the_splat(server, tmp_path):
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
    url, _ = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(url)
            page.locator("#prompt textarea").fill("a sphere")
            page.locator("#generate").click()
            previews = set()
            deadline = time.monotonic() + 120
            while len(previews) < 2 and time.monotonic() < deadline:
                img = page.locator("#preview img")
                if img.count():
                    previews.add(img.first.get_attribute("src"))
                time.sleep(0.3)
            assert len(previews) >= 2, "the live render never changed"
            page.screenshot(path=str(tmp_path / "mid-run.png"), full_page=True)
            if os.environ.get("PSD_GS_SCREENSHOT"):
                shutil.copy(tmp_path / "mid-run.png", os.environ["PSD_GS_SCREENSHOT"])
            page.locator("#status").get_by_text("Done").wait_for(timeout=180_000)
            canvas = page.locator("#model3d canvas").first
            canvas.wait_for(timeout=60_000)
            time.sleep(3)
            shot = tmp_path / "splat.png"
            canvas.screenshot(path=str(shot))
            from PIL import Image
            import numpy as np

            pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
            values, counts = np.unique(pixels, axis=0, return_counts=True)
            background = values[counts.argmax()]
            drawn = (np.abs(pixels.astype(int) - background).sum(1) > 30).mean()
            assert drawn > 0.01, f"the 3D viewer drew nothing ({drawn:.4f} of pixels differ from its background)"
        finally:
            browser.close()


def test_browser_stop_keeps_what_exists(server):
    from playwright.sync_api import sync_playwright

    url, _ = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page()
            page.goto(url)
            page.locator("#prompt textarea").fill("a torus")
            page.locator("#generate").click()
            page.locator("#status").get_by_text("step").first.wait_for(timeout=120_000)
            page.locator("#stop").click()
            page.locator("#status").get_by_text("stopped").wait_for(timeout=120_000)
            assert "Done:" in page.locator("#status").inner_text()
            page.locator("#model3d canvas").first.wait_for(timeout=60_000)
        finally:
            browser.close()
