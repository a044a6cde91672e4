"""Time from a Generate click to the first live image in the app, first click and later clicks.

    .venv/bin/python bench/app_latency.py [--clicks 3] [--steps 40]

Starts ``app.py`` (shapes world) on a free 127.0.0.1 port, submits the /generate endpoint through
gradio_client as the page does, and times each submission until the first update that carries a live
render (the first preview, after ``preview_every`` = 10 steps). The first click loads the prior and the
reward; later clicks reuse them (``psd_gs.models.ModelCache``). Prints a table; stops the server.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"app.py exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("app.py did not answer")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clicks", type=int, default=3, help="Generate clicks, one after another (default: 3)")
    p.add_argument("--steps", type=int, default=40, help="steps per run (default: 40)")
    args = p.parse_args(argv)
    from gradio_client import Client

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = dict(os.environ, PSD_GS_PRESET="shapes", PSD_GS_CACHE=os.environ.get("PSD_GS_CACHE", f"{tmp}/cache"))
        proc = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port), "--runs",
                                 f"{tmp}/runs"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_for(url, proc)
            client = Client(url, verbose=False)
            # the page's own defaults for every control, with a few set by their label
            params = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]["parameters"]
            chosen = {"Prompt": "a sphere", "Steps": args.steps, "Resolution": "64"}
            controls = [chosen.get(q["label"], q.get("parameter_default")) for q in params]
            controls[0] = False  # "Compare" off
            rows = []
            for click in range(1, args.clicks + 1):
                t0 = time.perf_counter()
                job = client.submit(*controls, api_name="/generate")
                first = None
                for update in job:
                    if first is None and update[1] is not None:  # outputs[1] is the live render
                        first = time.perf_counter() - t0
                total = time.perf_counter() - t0
                rows.append((click, first, total))
            print(f"app latency, shapes world, {args.steps} steps at 64 px, first preview after 10 steps")
            print("| click | to first live image, s | whole run, s |")
            print("|---:|---:|---:|")
            for click, first, total in rows:
                print(f"| {click} | {first:.2f} | {total:.2f} |")
            later = [first for click, first, _ in rows if click > 1]
            if later:
                print(f"later clicks, median to first image: {statistics.median(later):.2f} s")
        finally:
            proc.terminate()
            proc.wait(timeout=20)


if __name__ == "__main__":
    main()
