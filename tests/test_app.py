"""The Gradio app: the page builds, and a real server serves it and renders through its API."""

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

import app

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120


def test_build_demo_builds():
    demo = app.build_demo()
    assert isinstance(demo, gr.Blocks)
    assert demo.title == app.TITLE


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.read().decode("utf-8", errors="replace")


@pytest.fixture
def server(tmp_path):
    """``python app.py`` on a free 127.0.0.1 port; yields its URL once it answers, stops it after."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    log_path = tmp_path / "app.log"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port)],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode} before serving:\n{log_path.read_text()}")
            try:
                status, _ = _get(url, timeout=2.0)
                if status == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not serve {url} within {START_TIMEOUT_S} s:\n{log_path.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_server_serves_page_and_renders(server, tmp_path):
    from gradio_client import Client

    status, html = _get(server)
    assert status == 200
    assert app.TITLE in html

    client = Client(server, verbose=False, download_files=str(tmp_path / "downloads"))
    result = client.predict(3, api_name="/render")

    assert isinstance(result, (list, tuple)) and len(result) == app.N_VIEWS
    for item in result:
        path = item["image"] if isinstance(item, dict) else item
        path = path["path"] if isinstance(path, dict) else path
        with Image.open(path) as img:
            assert img.size == (app.IMAGE_SIZE, app.IMAGE_SIZE)
            pixels = img.convert("RGB").getextrema()
        # a random scene on a white background: some pixel is not white
        assert min(lo for lo, _ in pixels) < 255
