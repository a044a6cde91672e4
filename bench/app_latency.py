"""What a user waits for in the app: the first live image after a click (cold and warm), and what the page
costs a run (the same run through the page in Chromium and through the API).

    .venv/bin/python bench/app_latency.py [--steps 400] [--repo PATH] [--skip-page] [--pairs 2] [--cold-sizes 32,64,128]

Starts ``app.py`` of ``--repo`` (default: this checkout; another checkout measures "before") in the shapes
world on a free 127.0.0.1 port with an empty ``$PSD_GS_CACHE``, and measures, with the page's own defaults
for every control (read from the API, as the page holds them):

1. cold click (API): the first Generate of a fresh server with an empty model cache, time to the first
   update that carries a live render, and to the end of the run;
2. warm click (API): the same again, models and pose grid in memory;
3. the same run with a page attached: Debian's Chromium (Playwright) opens the page, clicks Generate with
   its defaults and waits for "Done."; then once more through the API; ``--pairs`` times, alternating, so
   the machine's drift (a shared 2-core host varies by 20% from minute to minute) falls on both. Each run's
   own seconds per step come from its metrics.json; the ratio is of their medians.

Prints a Markdown table; stops the server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
CHROMIUM = "/usr/bin/chromium"


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


def api_click(client, controls: list) -> dict:
    """One /generate submission: seconds to the first live render and to the end."""
    t0 = time.perf_counter()
    job = client.submit(*controls, api_name="/generate")
    first = None
    for update in job:
        if first is None and update[1] and "<img" in str(update[1]):  # outputs[1] is the live render
            first = time.perf_counter() - t0
    return {"first": first, "total": time.perf_counter() - t0}


def first_image(client, controls: list) -> float:
    """Seconds from a /generate submission to its first live render; the run is cancelled then."""
    t0 = time.perf_counter()
    job = client.submit(*controls, api_name="/generate")
    for update in job:
        if update[1] and "<img" in str(update[1]):
            break
    seconds = time.perf_counter() - t0
    job.cancel()
    return seconds


@contextlib.contextmanager
def fresh_server(repo: str):
    """``app.py`` of ``repo`` (shapes world, empty cache) on a free port: (client, the page's /generate parameters
    with their defaults, the runs folder); stopped on the way out."""
    from gradio_client import Client

    with tempfile.TemporaryDirectory() as tmp:
        port, runs = free_port(), Path(tmp) / "runs"
        env = dict(os.environ, PSD_GS_PRESET="shapes", PSD_GS_CACHE=f"{tmp}/cache", GRADIO_ANALYTICS_ENABLED="False")
        proc = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port), "--runs",
                                 str(runs)], cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_for(url, proc)
            client = Client(url, verbose=False)
            params = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]["parameters"]
            yield url, client, params, runs
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def page_defaults(params: list, **by_label) -> list:
    """The /generate arguments at the page's defaults, Compare off, with ``by_label`` (label -> value) on top."""
    controls = [q.get("parameter_default") for q in params]
    controls[0] = False  # "Compare"
    labels = [q["label"] for q in params]
    for label, value in by_label.items():
        controls[labels.index(label)] = value
    return controls


def cold_first_images(repo: str, sizes: list) -> list:
    """(size, seconds to the first live image) of a fresh server's first click at each size."""
    rows = []
    for size in sizes:
        with fresh_server(repo) as (_, client, params, _):
            rows.append((size, first_image(client, page_defaults(params, Resolution=str(size)))))
    return rows


def newest_metrics(runs: Path) -> dict:
    folder = max((p for p in runs.iterdir() if (p / "metrics.json").exists()), key=lambda p: p.stat().st_mtime)
    return json.loads((folder / "metrics.json").read_text())


def page_click(url: str, timeout_s: float = 900.0) -> dict:
    """Generate clicked on the page with its defaults: seconds to the first live render and to "Done."."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu",
                                                                      "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.locator("#generate").wait_for()
        time.sleep(2.0)  # the page settles (its history loads)
        t0 = time.perf_counter()
        page.locator("#generate").click()
        page.locator("#preview img").wait_for(timeout=timeout_s * 1000)
        first = time.perf_counter() - t0
        page.locator("#status").get_by_text("Done.").wait_for(timeout=timeout_s * 1000)
        total = time.perf_counter() - t0
        browser.close()
    return {"first": first, "total": total}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="steps per run (default: the page's own)")
    p.add_argument("--repo", default=str(REPO), help="the checkout whose app.py is measured (default: this one)")
    p.add_argument("--skip-page", action="store_true", help="no browser run")
    p.add_argument("--pairs", type=int, default=2, help="page-then-API pairs of warm runs (default: 2)")
    p.add_argument("--cold-sizes", default="", help="also a fresh server's first click at each of these sizes, "
                                                     "e.g. 32,64,128: seconds to the first live image")
    args = p.parse_args(argv)
    if args.cold_sizes:
        print("| size, px | cold click to first live image, s |")
        print("|---:|---:|")
        for size, seconds in cold_first_images(args.repo, [int(v) for v in args.cold_sizes.split(",")]):
            print(f"| {size} | {seconds:.2f} |")
    with fresh_server(args.repo) as (url, client, params, runs):
        defaults = {q["label"]: q.get("parameter_default") for q in params}
        controls = page_defaults(params, **({"Steps": args.steps} if args.steps else {}))
        rows = [("cold click, API (empty model cache)", api_click(client, controls), newest_metrics(runs)),
                ("warm click, API", api_click(client, controls), newest_metrics(runs))]
        page_s, api_s = [], [rows[-1][2]["seconds_per_step"]]  # the warm API click counts too
        if args.steps and not args.skip_page:
            print("note: the page runs its own default steps", file=sys.stderr)
        for pair in range(0 if args.skip_page else args.pairs):
            rows.append((f"warm click, page in Chromium ({pair + 1})", page_click(url), newest_metrics(runs)))
            page_s.append(rows[-1][2]["seconds_per_step"])
            rows.append((f"warm click, API ({pair + 2})", api_click(client, controls), newest_metrics(runs)))
            api_s.append(rows[-1][2]["seconds_per_step"])
    steps, res = args.steps or defaults.get("Steps"), defaults.get("Resolution")
    print(f"app latency, shapes world, the page's defaults: {steps} steps at {res} px ({args.repo})")
    print("| click | to first live image, s | whole run, s | run's s/step | steps done |")
    print("|---|---:|---:|---:|---:|")
    for name, t, m in rows:
        first = f"{t['first']:.2f}" if t["first"] is not None else "none"
        print(f"| {name} | {first} | {t['total']:.1f} | {m['seconds_per_step']:.3f} | {m['steps_done']} |")
    if page_s:
        ratio = statistics.median(page_s) / statistics.median(api_s)
        print(f"page-attached / API, median seconds per step: {statistics.median(page_s):.3f} / "
              f"{statistics.median(api_s):.3f} = {ratio:.2f}x")


if __name__ == "__main__":
    main()
