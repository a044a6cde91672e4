"""psd-gs Gradio front end: type a prompt, watch the splat grow, stop, compare with SDS, download.

The entry point, thin on purpose: it reads the command line, checks the runs folder, and serves the page
``psd_gs.app.page.build_demo`` lays out (its events: ``psd_gs.app.handlers``; what it shows:
``psd_gs.app.ui``; the rules for serving it to others: ``psd_gs.app.serve``). Runs go through
``psd_gs.run.loop.generate`` in-process, with the models kept loaded between clicks.

    python app.py [--host 127.0.0.1] [--port 7860] [--runs runs/app] [--max-age-hours 24]

Environment: PSD_GS_AUTH="user:password" asks for a login; PSD_GS_PRESET=shapes|sd forces the world.
"""

from __future__ import annotations

import argparse
import os
import sys

from psd_gs.app import serve
from psd_gs.app.page import CSS, build_demo
from psd_gs.run.folders import RunFolderError, check_runs_root, recover_runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the psd-gs Gradio app.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default: %(default)s)")
    parser.add_argument("--runs", default="runs/app", help="run folders go below this (default: %(default)s)")
    parser.add_argument("--max-age-hours", type=float, default=24.0,
                        help="remove run folders and served files older than this (default: %(default)s)")
    parser.add_argument("--queue-size", type=int, default=8, help="waiting runs before new ones are refused "
                                                                   "(default: %(default)s)")
    parser.add_argument("--max-cached-files", type=int, default=serve.MAX_CACHE_ENTRIES,
                        help="files kept for downloads at most, the oldest removed first (default: %(default)s)")
    parser.add_argument("--max-memory-gb", type=float, default=None,
                        help="memory a run may bring the server to; the page offers and accepts only runs that fit "
                             "(default: 60%% of RAM on a CPU, 90%% of the GPU's free memory)")
    args = parser.parse_args(argv)
    try:
        auth = serve.parse_auth(os.environ.get("PSD_GS_AUTH"))
        root = check_runs_root(args.runs)  # before anything loads: a folder we cannot write would fail every run
    except (ValueError, RunFolderError) as e:
        raise SystemExit(f"psd-gs: {e}")
    recover_runs(root)  # runs a killed server left half-made, and cut-off writes
    warnings = serve.startup_warnings(args.host, auth)
    for warning in warnings:
        print(f"WARNING: {warning}", file=sys.stderr, flush=True)
    budget = int(args.max_memory_gb * 2 ** 30) if args.max_memory_gb else None
    demo = build_demo(runs_root=args.runs, max_age_hours=args.max_age_hours, budget=budget, warnings=warnings,
                      max_cached_files=args.max_cached_files)
    demo.queue(max_size=args.queue_size, default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, auth=serve.slow_auth(*auth) if auth else None, css=CSS,
        max_file_size=serve.MAX_UPLOAD)


if __name__ == "__main__":
    main()
