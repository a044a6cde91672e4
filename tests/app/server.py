"""A real ``python app.py`` for the tests: on a free 127.0.0.1 port, shapes world, stopped afterwards.

``start_app(tmp, cache)`` is a context manager yielding (url, runs root). The browser tests and the
client tests each use one server for their module.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Sequence, Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120
PIDS: dict = {}  # url -> the server's process id (for tests that read its memory)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def start_app(tmp: Path, cache: Path, args: Sequence[str] = (), env: dict | None = None) -> Iterator[Tuple[str, Path]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log_path = tmp / "app.log"
    full_env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1", PSD_GS_PRESET="shapes",
                    PSD_GS_CACHE=str(cache), GRADIO_TEMP_DIR=str(tmp / "gradio"), TMPDIR=str(tmp / "tmp"),
                    **(env or {}))
    (tmp / "tmp").mkdir(exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port),
                                 "--runs", str(tmp / "runs"), *args], cwd=REPO, env=full_env, stdout=log,
                                stderr=subprocess.STDOUT)
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
        PIDS[url] = proc.pid
        yield url, tmp / "runs"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
