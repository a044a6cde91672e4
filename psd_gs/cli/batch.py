"""``python -m psd_gs batch`` and ``evaluate-suite``: many jobs on Ray, and their held-out judges.

The logic is in ``psd_gs.batch.jobs``, ``psd_gs.batch.runner``, ``psd_gs.batch.report`` and ``psd_gs.batch.suite``; this
module is their command line (parsers, input checks, the printed tables), added to the main parser by
``psd_gs.cli.main.build_parser``. Exit codes as in ``psd_gs.cli.main``: 0 done, 2 an error (or a job that failed
for good), 130 cancelled with Ctrl-C.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List

from .common import EXIT_CANCELLED, EXIT_OK, CLIError, Formatter, check_device, para
from ..config import PRESETS
from ..registry import METHODS, PRIORS, REWARDS

BATCH_EXAMPLES = """\
examples:
  python -m psd_gs batch assets/prompts/shapes.txt --out batches/shapes --methods psd,sds --seeds 4
  python -m psd_gs batch jobs.jsonl --out batches/sweep --set steps=200       # one job per JSON line
  python -m psd_gs batch assets/prompts/objects.txt --preset sd --methods psd,sds --out batches/objects \\
      --address auto                                                           # a running Ray cluster
  python -m psd_gs evaluate-suite batches/shapes
  python -m psd_gs evaluate-suite batches/objects --judges pickscore,aesthetic,clip
"""


def add_commands(sub) -> None:
    """The batch and evaluate-suite sub-commands."""
    _add_batch(sub)
    _add_suite(sub)


def _add_batch(sub) -> None:
    p = sub.add_parser(
        "batch", formatter_class=Formatter, epilog=BATCH_EXAMPLES,
        help="generate many objects at once on Ray (this machine, or a cluster): one task per job",
        description=para(
            "Run every job of JOBS as a Ray task and write each run under DIR/runs/<job id>/ (scene.ply, "
            "config.json, metrics.json, logs.json, mesh.glb, preview.png; turntable.mp4 with --turntable). "
            "JOBS is a text file of prompts, one a line, or a .jsonl file of jobs, one JSON object a line: "
            '{"prompt": "a red cube", "method": "psd", "seed": 0, "reward": "shapes-warm", "guidance.tau": 0.3} '
            "(any config path in the dotted form of --set). A line without a method or seed becomes one job per "
            "--methods and per seed 0..--seeds-1. DIR/index.json records every job; running the same command "
            "again skips finished jobs. A failed job is retried --retries times, then recorded as failed, and "
            "never stops the others. Without --address Ray starts inside this process; a job asks for one GPU "
            "where there are GPUs, else --cpus-per-job CPUs. Ctrl-C cancels what has not finished."))
    p.add_argument("jobs", metavar="JOBS", help="a text file of prompts (one a line) or a .jsonl file of jobs")
    p.add_argument("--out", required=True, metavar="DIR", help="the batch folder: index.json, runs/, summary (required)")
    p.add_argument("--preset", default="shapes", choices=sorted(PRESETS),
                   help="the preset every job starts from, unless its JSON line names one (default: shapes)")
    p.add_argument("--methods", default="psd", metavar="NAMES",
                   help=f"comma-separated methods from {', '.join(METHODS)} for lines without one (default: psd)")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="seeds 0..N-1 for lines without a seed (default: 1)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="set a config field for every job (before a JSON line's own), e.g. --set steps=200 "
                        "(repeatable; `python -m psd_gs config` lists every PATH)")
    p.add_argument("--address", metavar="ADDR",
                   help="join a running Ray cluster: auto, or ray://HOST:10001 (default: start Ray in this process)")
    p.add_argument("--cpus", type=int, metavar="N",
                   help="CPUs of the local Ray instance, without --address (default: all of this machine's)")
    p.add_argument("--cpus-per-job", type=float, default=1, metavar="N",
                   help="CPUs a job asks for where there is no GPU (default: 1)")
    p.add_argument("--retries", type=int, default=2, metavar="N",
                   help="attempts after a job's first failure before it is recorded as failed (default: 2)")
    p.add_argument("--retry-failed", action="store_true",
                   help="run the jobs a previous run of this batch recorded as failed again (default: skip them)")
    p.add_argument("--turntable", action="store_true", help="also return each run's turntable.mp4 (default: off)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: show it on stderr)")
    p.set_defaults(func=cmd_batch)


def _add_suite(sub) -> None:
    s = sub.add_parser(
        "evaluate-suite", formatter_class=Formatter, epilog=BATCH_EXAMPLES,
        help="judge every finished run of a batch folder with rewards it was not trained with",
        description=para(
            "Render --views orbit views of every done run in a batch folder and score them with each judge except "
            "the reward the run was trained with, plus R-precision: how often a view matches its own prompt best "
            "among the batch's prompts (CLIP ViT-L/14 for real images; in the shapes world the CLIP judge trained "
            "there, learned-clip). Writes DIR/suite.json and DIR/suite.md: per method, mean ± sd across runs."))
    s.add_argument("batch", metavar="DIR", help="a folder written by `python -m psd_gs batch`")
    s.add_argument("--judges", metavar="NAMES",
                   help=f"comma-separated rewards from {', '.join(REWARDS)} (default: every reward of the runs' world; "
                        "pickscore,aesthetic,clip for a batch trained with hpsv2)")
    s.add_argument("--views", type=int, default=8, metavar="N", help="orbit views per run (default: 8)")
    s.add_argument("--resolution", type=int, metavar="PX",
                   help="view size in pixels (default: each run's last training resolution)")
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to render and score (default: auto)")
    s.set_defaults(func=cmd_evaluate_suite)


def _names(text: str, option: str) -> List[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise CLIError(f"{option} is empty; pass comma-separated names")
    return names


def _check_local_jobs(jobs) -> None:
    """CLIError for jobs this machine cannot run: a prior that needs CUDA without a GPU, weights missing from
    the local cache (naming fetch-weights). Local Ray only: a cluster's nodes have GPUs and caches of their own."""
    from ..run.fetch import required_files, status
    from ..batch.jobs import job_config

    cfgs = [job_config(j) for j in jobs]
    needs_cuda = sorted({c.prior.name for c in cfgs if PRIORS[c.prior.name].needs_cuda})
    if needs_cuda:
        import torch

        if not torch.cuda.is_available():
            raise CLIError(f"the {', '.join(needs_cuda)} prior needs a CUDA GPU and this machine has none; run the "
                           f"batch on a GPU host, or join a cluster with GPUs with --address")
    files = []
    for cfg in {(c.prior.name, c.prior.source): c for c in cfgs}.values():
        files += required_files(cfg.prior, [])
    files += required_files(None, sorted({c.reward for c in cfgs}))
    missing = status(dict.fromkeys(files))[1]
    if missing:
        raise CLIError(f"{len(missing)} weight files the jobs need are not in the local cache (e.g. {missing[0][0]}); "
                       f"fetch them with `python -m psd_gs fetch-weights --preset {cfgs[0].prior.name} --rewards "
                       f"{','.join(sorted({c.reward for c in cfgs}))}`")


def cmd_batch(args: argparse.Namespace) -> int:
    # 1. Check inputs: every job, before Ray starts
    from ..config import apply_overrides, preset
    from ..batch.jobs import read_jobs

    methods = _names(args.methods, "--methods")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise CLIError(f"unknown method {unknown[0]!r} (--methods); choose from {', '.join(METHODS)}")
    if not Path(args.jobs).is_file():
        raise CLIError(f"{args.jobs} does not exist; pass a text file of prompts or a .jsonl file of jobs")
    if args.retries < 0 or args.cpus_per_job <= 0 or (args.cpus is not None and args.cpus < 1):
        raise CLIError("--retries must be >= 0, --cpus-per-job > 0 and --cpus >= 1")
    overrides = {}
    for item in args.overrides:
        path, sep, value = item.partition("=")
        if not sep:
            raise CLIError(f"--set {item!r}: expected PATH=VALUE, e.g. steps=200")
        overrides[path.strip()] = value
    apply_overrides(preset(args.preset), overrides)  # an unknown PATH is named here, not per line
    jobs = read_jobs(args.jobs, args.preset, methods, args.seeds, overrides)
    if args.address is None:
        _check_local_jobs(jobs)

    # 2. Run them
    from ..batch.runner import run_batch
    from ..batch.report import contact_sheet, markdown, summary_rows

    out = Path(args.out)
    print(f"batch: {len(jobs)} jobs from {args.jobs} into {out}/ on "
          f"{'Ray at ' + args.address if args.address else 'a local Ray instance'}", flush=True)
    try:
        index = run_batch(jobs, out, address=args.address, num_cpus=args.cpus, cpus_per_job=args.cpus_per_job,
                          retries=args.retries, retry_failed=args.retry_failed, turntable=args.turntable,
                          progress=not args.quiet)
    except KeyboardInterrupt:
        from ..batch.runner import BatchIndex

        counts = BatchIndex(out).counts()
        print(f"cancelled: {counts['done']} done, {counts['cancelled']} cancelled, {counts['pending']} not started; "
              f"run the same command again to finish (finished jobs are skipped)")
        return EXIT_CANCELLED

    # 3. Report: the table per method, summary.md, the contact sheet
    rows = summary_rows(index)
    table = markdown(rows)
    (out / "summary.md").write_text(table)
    sheet = contact_sheet(index, out / "contact_sheet.png")
    print(table, end="")
    print(f"wrote {out / 'index.json'}, {out / 'summary.md'} and {sheet}")
    print(f"next:  python -m psd_gs evaluate-suite {out}")
    failed = index.counts()["failed"]
    if failed:
        raise CLIError(f"{failed} of {len(index.jobs)} jobs failed (their errors are in {out / 'index.json'}); "
                       f"run again with --retry-failed to retry them")
    return EXIT_OK


def cmd_evaluate_suite(args: argparse.Namespace) -> int:
    # 1. Check inputs

    judges = _names(args.judges, "--judges") if args.judges is not None else None
    if args.views < 1:
        raise CLIError(f"--views {args.views}: must be >= 1")
    if args.resolution is not None and not 8 <= args.resolution <= 2048:
        raise CLIError(f"--resolution {args.resolution}: must be between 8 and 2048 pixels")
    if not Path(args.batch).is_dir():
        raise CLIError(f"{args.batch} is not a folder; pass a batch folder written by `python -m psd_gs batch`")
    check_device(args.device)

    # 2. Judge, write suite.json and suite.md, print the table
    from ..batch.report import markdown
    from ..batch.suite import SUITE_MD, evaluate_suite

    report = evaluate_suite(args.batch, judges, views=args.views, resolution=args.resolution, device=args.device)
    print(markdown(report["methods"]), end="")
    print(f"wrote {Path(args.batch) / 'suite.json'} and {Path(args.batch) / SUITE_MD}")
    return EXIT_OK
