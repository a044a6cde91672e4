"""Command line: ``python -m psd_gs generate | evaluate | export-mesh | batch | evaluate-suite | bench |
fetch-weights | doctor | config`` (``main(argv) -> exit code``).

- ``generate``: one run of ``psd_gs.run.loop.generate`` with a progress bar; Ctrl-C ends it after the
  current step and still writes the partial result.
- ``evaluate``: multi-view reward scores of a finished run or ``.ply`` (``psd_gs.run.evaluate``), plus the
  shapes-world fidelity report for shapes runs.
- ``batch``, ``evaluate-suite``: many jobs on Ray, and their held-out judges (``psd_gs.cli.batch``).
- ``bench``: runs a script from the repo's ``bench/`` folder with the remaining arguments.
- ``fetch-weights``: downloads the checkpoints a preset and its rewards need (``psd_gs.run.fetch``).
- ``doctor``: checks that this host can run psd-gs and prints a table (``psd_gs.doctor.checks``).

Expected failures (bad arguments, ValueError from the config checks or the shapes vocabulary, absent
weights, a run that had to stop) print ONE line ``error: ...`` on stderr and exit with code 2; argparse
adds its usage line before it. Exit codes: 0 done, 2 error, 130 cancelled with Ctrl-C. ``--debug``
shows the full traceback instead. Torch and the models are imported only inside the commands, so
``--help`` and argument errors are instant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from .. import __version__
from ..config import PRESETS, RunConfig, apply_overrides, config_fields, preset
from ..registry import METHODS, PRIORS, REWARDS
from .common import EXIT_CANCELLED, EXIT_ERROR, EXIT_OK, CLIError, Formatter, Parser, check_device, para

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO / "bench"
POSTFIX_LOGS = ("loss_sds", "reward_w", "gap", "k", "reward")  # Progress.logs shown on the progress bar

EXAMPLES = """\
examples:
  python -m psd_gs generate "a red cube" --preset shapes --method psd --out runs/
  python -m psd_gs evaluate runs/<run folder>            # scores + shapes report, writes evaluation.json
  python -m psd_gs export-mesh runs/<run folder> --format obj   # the splat's surface as mesh.obj
  python -m psd_gs generate "a corgi wearing a crown" --preset sd --steps 1000   # GPU and SD weights
  python -m psd_gs bench step_cost
"""


# ---- parser -----------------------------------------------------------------------------------


def _per_preset(get) -> str:
    """'shapes: X, sd: Y' for a value read from each preset's RunConfig."""
    return ", ".join(f"{name}: {get(factory())}" for name, factory in PRESETS.items())


def available_benchmarks() -> List[str]:
    """Names of the runnable scripts in bench/ (those with a ``__main__`` block)."""
    if not BENCH_DIR.is_dir():
        return []
    return sorted(p.stem for p in BENCH_DIR.glob("*.py") if '__name__ == "__main__"' in p.read_text())


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m psd_gs", formatter_class=Formatter, epilog=EXAMPLES,
                     description=para("Text to 3D Gaussian splats by score distillation, aligned with human "
                                 "preference by Preference Score Distillation (PSD)."))
    parser.add_argument("--version", action="version", version=f"psd-gs {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of one line (default: off)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_generate(sub)
    _add_refine(sub)
    _add_evaluate(sub)
    _add_export_mesh(sub)
    from .batch import add_commands  # batch, evaluate-suite

    add_commands(sub)
    from .train import add_commands as add_train  # train-prior

    add_train(sub)
    _add_bench(sub)
    _add_fetch_weights(sub)
    _add_doctor(sub)
    _add_config(sub)
    return parser


# Shortcut options of ``generate``: each sets one config path, exactly as ``--set PATH=VALUE`` would.
SHORTCUTS = {"method": "guidance.method", "reward": "reward", "prior": "prior.name", "prior_source": "prior.source",
             "steps": "steps", "seed": "seed", "out": "out_dir", "device": "device", "cfg_scale": "guidance.cfg_scale",
             "lambda_p": "guidance.lambda_p", "neg_lr": "guidance.neg_lr", "tau": "guidance.tau",
             "checkpoint_every": "checkpoint_every", "turntable_views": "turntable_views"}
CHOICES = {"method": METHODS, "reward": REWARDS, "prior": PRIORS, "device": ("auto", "cpu", "cuda")}


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """--preset, the shortcut options and --set: every field of a RunConfig, one way."""
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="a named bundle of defaults: shapes (the offline closed-form world, a CPU is enough) or "
                        "sd (Stable Diffusion, needs a GPU and its weights) (default: shapes)")
    helps = {f.path: f.help for f in config_fields(RunConfig(), with_options=False)}
    for dest, path in SHORTCUTS.items():
        choices = CHOICES.get(dest)
        p.add_argument(f"--{dest.replace('_', '-')}", dest=dest, metavar=None if choices else "VALUE",
                       choices=list(choices) if choices else None,
                       help=f"{helps[path]} (sets {path}; default: {_per_preset(lambda c: _get(c, path))})")
    p.add_argument("--resolution", type=int, metavar="PX",
                   help="render size in pixels for the whole run, a multiple of 8 (sets camera.resolution; default: "
                        f"{_per_preset(lambda c: '/'.join(str(r) for _, r in c.camera.resolution))})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="set any config field, e.g. --set guidance.tau=0.3 --set camera.batch=2 (repeatable; "
                        "`python -m psd_gs config` lists every PATH; default: none, the preset's values)")


def _get(cfg: RunConfig, path: str):
    obj = cfg
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _add_generate(sub) -> None:
    p = sub.add_parser(
        "generate", formatter_class=Formatter, epilog=EXAMPLES,
        help="make a 3D Gaussian splat (.ply + turntable.mp4 + mesh.glb) from a text prompt",
        description=para("Optimise a 3D Gaussian splat for PROMPT and write it into a new run folder below --out: "
                    "config.json, scene.ply, turntable.mp4, mesh.glb (none with --set mesh=false), metrics.json "
                    "(and checkpoint.pt with --checkpoint-every). Ctrl-C stops after the current step and keeps what exists; "
                    "press it twice to abort at once. Options left out keep the preset's value; --set reaches "
                    "every other field."))
    p.add_argument("prompt", nargs="?", metavar="PROMPT",
                   help='what to make, e.g. "a red cube". The shapes prior knows only its colour and shape '
                        'words ("a red cube", "a cube", "a sphere"); required unless --resume')
    _add_run_options(p)
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a run folder from its checkpoint.pt with its own config.json; no PROMPT "
                        "or run options with it (default: start a new run)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: show it on stderr)")
    p.set_defaults(func=cmd_generate)


def _add_refine(sub) -> None:
    p = sub.add_parser(
        "refine", formatter_class=Formatter,
        help="align a splat you already have (any tool's 3DGS .ply) with a preference: PSD, SDS or the reward gradient",
        description=para("Start from SCENE.ply (a standard 3DGS .ply, SH degree 0-3, as LGM, TRELLIS, DiffSplat, "
                          "gsplat, SuperSplat or psd-gs write it) instead of random Gaussians, and optimise it toward "
                          "--prompt and the reward with the refinement schedule (psd_gs/run/refine.py: no "
                          "densification, positions, rotations and scales at a tenth of the preset's rates). The "
                          "cameras are placed on the splat (--frame), the splat is never moved: the run folder's "
                          "scene.ply is in the input's own frame and units. The folder holds what generate writes, "
                          "the input's copy (input.ply), and in metrics.json the reward before and after and how far "
                          "the result moved from the input (PSNR and silhouette IoU over 8 orbit views)."),
        epilog="examples:\n  python -m psd_gs refine runs/<run>/scene.ply --prompt \"a cube\" --keep geometry\n"
               "  python -m psd_gs refine lgm_output.ply --prompt \"a corgi\" --preset sd --reward hpsv2")
    p.add_argument("ply", metavar="SCENE.ply", help="the splat to refine")
    p.add_argument("--prompt", required=True, help="what the splat shows, in the prior's words (the shapes prior: "
                                                   '"a cube", "a red sphere")')
    p.add_argument("--keep", choices=("none", "geometry", "appearance"), default="none",
                   help="what stays bit for bit as the input had it: geometry (positions, scales, rotations; only "
                        "colours and opacities change), appearance (colours) (default: none)")
    p.add_argument("--frame", choices=("fit", "own"), default="fit",
                   help="fit: the cameras frame the splat's visible Gaussians, whatever its units; own: the splat's "
                        "units are the cameras' (psd-gs's own results) (default: fit)")
    _add_run_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: show it on stderr)")
    p.set_defaults(func=cmd_refine, resume=None)


def _add_config(sub) -> None:
    p = sub.add_parser(
        "config", formatter_class=Formatter,
        help="print every config field (PATH, value, help) of a preset with your options applied",
        description=para("List every field --set can reach, with its value after --preset, the shortcut options and "
                          "--set, and its help; or, with --json, the whole config as generate would save it. "
                          "Nothing runs."),
        epilog="examples:\n  python -m psd_gs config --preset sd\n"
               "  python -m psd_gs config --set guidance.tau=0.3 --json")
    _add_run_options(p)
    p.add_argument("--prompt", default=None, help="the prompt (default: the preset's)")
    p.add_argument("--json", action="store_true", help="print the config as JSON (default: the table)")
    p.set_defaults(func=cmd_config)


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate", formatter_class=Formatter, epilog=EXAMPLES,
        help="score a finished run or .ply from orbit views with reward models",
        description=para("Render --views orbit views of a run's scene.ply (or any 3DGS .ply), score them with each "
                    "reward, and write evaluation.json and views.png (the views side by side). Where the run's prior "
                    "(or, for a lone .ply, the rewards' world) can say more, the report adds it: in the shapes "
                    "world the nearest allowed object, its PSNR, the object the reward prefers, and whether they "
                    "match."))
    p.add_argument("target", metavar="RUN_OR_PLY",
                   help="a run folder (its config.json gives the prompt, preset and camera) or a .ply file")
    p.add_argument("--prompt", metavar="TEXT",
                   help="the prompt the rewards score against (default: the run's prompt; required for a .ply "
                        "outside a run folder)")
    p.add_argument("--rewards", metavar="NAMES",
                   help=f"comma-separated reward names from {', '.join(REWARDS)} (default: the run's own reward; "
                        f"hpsv2 for a .ply outside a run folder)")
    p.add_argument("--views", type=int, default=8, metavar="N", help="orbit views to render (default: 8)")
    p.add_argument("--resolution", type=int, metavar="PX",
                   help="view size in pixels (default: the run's last training resolution, 64 without a run)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to render and score (default: auto)")
    p.add_argument("--out", metavar="DIR",
                   help="folder for evaluation.json and views.png (default: the run folder, or the .ply's folder)")
    p.set_defaults(func=cmd_evaluate)


def _add_export_mesh(sub) -> None:
    p = sub.add_parser(
        "export-mesh", formatter_class=Formatter, epilog=EXAMPLES,
        help="the surface of a run's splat (or any 3DGS .ply) as a coloured mesh: mesh.glb, .obj or .ply",
        description=para("Carve a grid by the splat's rendered alpha and depth from 42 views (or, with --source "
                          "opacity, take the Gaussians' opacity field), its surface by marching cubes, drop "
                          "small pieces, decimate to --max-faces and colour the vertices from the splat's renders "
                          "(psd_gs.mesh.extract, psd_gs.mesh.carve, docs/design.md). Every run already writes mesh.glb at its "
                          "config's mesh_resolution; this remakes it with other settings or for a .ply from elsewhere."))
    p.add_argument("target", metavar="RUN_OR_PLY", help="a run folder (its scene.ply) or a .ply file")
    p.add_argument("--resolution", type=int, default=128, metavar="N",
                   help="voxels along the grid's side, 16..256 (default: 128)")
    p.add_argument("--format", choices=("glb", "obj", "ply"), default="glb",
                   help="glb for web viewers and engines, obj for DCC tools, ply (default: glb)")
    p.add_argument("--source", choices=("depth", "opacity"), default="depth",
                   help="depth: the surface the splat's renders agree on (works for hazy, generated splats); "
                        "opacity: the opacity field's iso-surface at --level (for clean shells) (default: depth)")
    p.add_argument("--level", type=float, default=None, metavar="X",
                   help="--source opacity: iso-level of the opacity field, > 0 (default: 1.0, lowered where the "
                        "splat's shell is thinner; see docs/design.md)")
    p.add_argument("--max-faces", type=int, default=50_000, metavar="N",
                   help="decimate above this many faces; 0 never (default: 50000)")
    p.add_argument("--out", metavar="FILE", help="where to write (default: mesh.FORMAT beside the .ply)")
    p.set_defaults(func=cmd_export_mesh)


def _add_bench(sub) -> None:
    names = available_benchmarks()
    p = sub.add_parser(
        "bench", formatter_class=Formatter,
        help="run a benchmark script from bench/ (prints tables)",
        description=para(f"Run bench/NAME.py with the remaining arguments. Available: {', '.join(names) or 'none'}."),
        epilog="examples:\n  python -m psd_gs bench step_cost\n  python -m psd_gs bench render_bench --quick\n"
               "  python -m psd_gs bench render_bench --help")
    p.add_argument("name", nargs="?", metavar="NAME", help=f"the benchmark: {', '.join(names) or 'none found'}")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="passed on to the script unchanged, e.g. --help (default: none)")
    p.set_defaults(func=cmd_bench)


def _add_fetch_weights(sub) -> None:
    p = sub.add_parser(
        "fetch-weights", formatter_class=Formatter,
        help="download every checkpoint a prior and rewards need, for offline runs (HF_HUB_OFFLINE=1)",
        description=para("List the Hugging Face files the chosen prior and rewards load (psd_gs.registry), say "
                          "which are already in the local cache, and download the missing ones (unless "
                          "--check). Afterwards runs with HF_HUB_OFFLINE=1 never touch the network."),
        epilog="examples:\n  python -m psd_gs fetch-weights --prior sd --rewards hpsv2\n"
               "  python -m psd_gs fetch-weights --rewards hpsv2,pickscore,aesthetic,clip --check\n"
               "  python -m psd_gs fetch-weights --prior none --rewards pickscore")
    p.add_argument("--prior", default=None, choices=[*PRIORS, "none"],
                   help="whose weights to fetch, or none (default: the preset's prior, sd)")
    p.add_argument("--prior-source", default="", metavar="ID_OR_DIR",
                   help="the prior's checkpoint, hub id or folder (default: the prior's own default)")
    p.add_argument("--preset", default="sd", choices=sorted(PRESETS),
                   help="take the prior from this preset when --prior is not given (default: sd)")
    p.add_argument("--rewards", default="hpsv2",
                   help=f"comma-separated reward names from {', '.join(REWARDS)}, or none (default: hpsv2)")
    p.add_argument("--check", action="store_true", help="only report what is present and missing (default: fetch)")
    p.set_defaults(func=cmd_fetch_weights)


def _add_doctor(sub) -> None:
    p = sub.add_parser(
        "doctor", formatter_class=Formatter,
        help="check that this host can run psd-gs (versions, GPU, rasterisers, guidance, weights)",
        description=para("Run every check that applies to this host and print a table with a status and a figure "
                          "for each: versions and the GPU, which rasteriser renders, the PyTorch rasteriser against "
                          "a float64 reference, on CUDA gsplat against the PyTorch rasteriser, one SDS/PSD/reward-"
                          "gradient step on tiny random models, a short shapes-world run, the weights in the local "
                          "cache and, with CUDA and the SD weights cached, 10 PSD steps at 512 px. Exit code 0 "
                          "when every check that applies passed, 2 otherwise."),
        epilog="examples:\n  python -m psd_gs doctor\n  python -m psd_gs doctor --json doctor.json\n"
               "  docker compose run --rm psd-gs python -m psd_gs doctor")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="the device to check (default: auto, CUDA when available)")
    p.add_argument("--json", metavar="PATH", help="also write the table as JSON to PATH (default: no file)")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    check_device(args.device)
    from ..doctor.checks import passed, run_checks, table, write_json

    print(f"psd-gs doctor: checking device {args.device} (this takes up to two minutes)", flush=True)
    rows = run_checks(args.device)
    print(table(rows))
    if args.json:
        write_json(rows, Path(args.json), args.device)
    ok = passed(rows)
    print("every check that applies passed" if ok else
          f"{sum(r.status == 'fail' for r in rows)} check(s) failed: see the rows marked fail")
    return EXIT_OK if ok else EXIT_ERROR


def cmd_fetch_weights(args: argparse.Namespace) -> int:
    from ..run.fetch import fetch, required_files, status

    # 1. Check inputs: the prior and the reward names resolve to a list of hub files
    from ..config import PriorConfig

    rewards = [r.strip() for r in args.rewards.split(",") if r.strip() and r.strip() != "none"]
    name = args.prior or preset(args.preset).prior.name
    prior = None if name == "none" else PriorConfig(name, args.prior_source)
    files = required_files(prior, rewards)
    present, missing = status(files)
    for repo, name in present:
        print(f"present  {repo}/{name}")
    for repo, name in missing:
        print(f"missing  {repo}/{name}")
    print(f"{len(present)} present, {len(missing)} missing")
    if args.check or not missing:
        return EXIT_OK if not missing else EXIT_ERROR

    # 2. Download what is missing
    failed = fetch(missing)
    for (repo, name), why in failed:
        print(f"failed   {repo}/{name}: {why}", file=sys.stderr)
    if failed:
        raise CLIError(f"{len(failed)} of {len(missing)} files could not be fetched (offline? HF_HUB_OFFLINE set? "
                       "a gated repo needs `hf auth login`)")
    print(f"fetched {len(missing)} files; runs can now use HF_HUB_OFFLINE=1")
    return EXIT_OK


# ---- generate ---------------------------------------------------------------------------------


def config_from_args(args: argparse.Namespace, base: Optional[RunConfig] = None) -> RunConfig:
    """The preset (or ``base``), then the shortcut options, then every --set (the last one given wins); unchecked."""
    cfg = base or preset(args.preset or "shapes")
    given = {path: getattr(args, dest) for dest, path in SHORTCUTS.items() if getattr(args, dest) is not None}
    if getattr(args, "prompt", None) is not None:
        given["prompt"] = args.prompt
    if args.resolution is not None:
        given["camera.resolution"] = [[0.0, args.resolution]]
    apply_overrides(cfg, given)
    return apply_overrides(cfg, args.overrides)


def _run_options_given(args: argparse.Namespace) -> List[str]:
    return [f"--{o.replace('_', '-')}" for o in ["preset", *SHORTCUTS, "resolution"] if getattr(args, o) is not None] \
        + (["--set"] if args.overrides else [])


def _check_generate_inputs(args: argparse.Namespace) -> RunConfig:
    """The checked config of a new run, or of the run to resume; CLIError/ValueError naming the fix."""
    from ..run.validate import validate

    if args.resume is not None:
        given = _run_options_given(args)
        if args.prompt is not None or given:
            raise CLIError(f"--resume continues a run with its own config.json; drop "
                           f"{', '.join((['PROMPT'] if args.prompt is not None else []) + given)}")
        run_dir = Path(args.resume)
        for name in ("config.json", "checkpoint.pt"):
            if not (run_dir / name).is_file():
                raise CLIError(f"cannot resume {run_dir}: it has no {name}; only runs made with "
                               f"--checkpoint-every N can be resumed")
        cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    else:
        if args.prompt is None:
            raise CLIError('missing PROMPT: say what to make, e.g. python -m psd_gs generate "a red cube"')
        cfg = config_from_args(args)
    check_device(cfg.device)
    return validate(cfg)  # ValueError naming the field: the empty prompt, an unknown word, a reward's world


def cmd_config(args: argparse.Namespace) -> int:
    from ..run.validate import validate

    cfg = validate(config_from_args(args))
    if args.json:
        print(cfg.to_json())
        return EXIT_OK
    rows = [(f.path, json.dumps(f.value) if not isinstance(f.value, str) else repr(f.value), f.help)
            for f in config_fields(cfg)]
    w0, w1 = max(len(r[0]) for r in rows), min(24, max(len(r[1]) for r in rows))
    for path, value, help_text in rows:
        print(f"{path:<{w0}}  {value:<{w1}}  {help_text}")
    return EXIT_OK


@contextlib.contextmanager
def cancel_on_ctrl_c(cancel: threading.Event) -> Iterator[None]:
    """While inside, the first Ctrl-C sets ``cancel`` (the run stops after its current step and exports);
    a second one raises KeyboardInterrupt as usual. Only the main thread can own the handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if cancel.is_set():
            if hasattr(cancel, "abort"):
                cancel.abort()  # the run does not write its partial result on the way out
            raise KeyboardInterrupt
        cancel.set()
        with contextlib.suppress(Exception):  # never let a message break the cancel
            sys.stderr.write("\ncancelling: stopping after the current step and writing what exists "
                             "(Ctrl-C again to abort at once)\n")
            sys.stderr.flush()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def cmd_generate(args: argparse.Namespace) -> int:
    return _run_and_report(_check_generate_inputs(args), args)  # inputs checked before any run folder exists


def cmd_refine(args: argparse.Namespace) -> int:
    from ..run.refine import refine_config
    from ..run.validate import validate

    if not Path(args.ply).is_file():
        raise CLIError(f"{args.ply} is not a file; pass a 3DGS .ply")
    cfg = config_from_args(args)  # the preset and your options: the budget the file is checked against
    cfg.scene.frame = args.frame
    refine_config(cfg, args.ply, args.keep)  # the file read and checked once, before the progress bar
    cfg = config_from_args(args, cfg)  # your options win over the schedule
    check_device(cfg.device)
    return _run_and_report(validate(cfg), args)


def _run_and_report(cfg: RunConfig, args: argparse.Namespace) -> int:
    """Run ``cfg`` with a progress bar and Ctrl-C as cancel, then print where its outputs are."""
    from tqdm import tqdm

    from ..run.loop import CancelToken, Progress, generate

    cancel = CancelToken()
    latest: Dict[str, float] = {}  # the last value of each POSTFIX_LOGS entry seen
    result = None
    if not args.quiet:
        where = f"resuming {args.resume}" if args.resume else f"into {cfg.out_dir}/"
        doing = f"refining {Path(cfg.scene.init).name} toward" if cfg.scene.init else "generating"
        print(f"{doing} {cfg.prompt!r}: prior {cfg.prior.name}, method {cfg.guidance.method}, reward {cfg.reward}, "
              f"{cfg.steps} steps, "
              f"seed {cfg.seed}, {where}", flush=True)
    with tqdm(total=cfg.steps, desc="preparing", unit="step", disable=args.quiet, file=sys.stderr,
              dynamic_ncols=True, mininterval=0.5) as bar, cancel_on_ctrl_c(cancel):
        for event in generate(cfg, cancel=cancel, resume=args.resume):
            if not isinstance(event, Progress):
                result = event
                continue
            latest.update({k: v for k, v in event.logs.items() if k in POSTFIX_LOGS})
            bar.set_description("refining" if cfg.scene.init else "generating", refresh=False)
            bar.set_postfix({**{k: _fmt(v) for k, v in latest.items()}, "gaussians": event.n_gaussians},
                            refresh=False)
            bar.update(event.step - bar.n)

    # 3. Report
    m = result.metrics
    summary = (f"{m['steps_done']}/{m['steps']} steps in {m['seconds']:.1f} s "
               f"({m['seconds_per_step']:.2f} s/step), {m['n_gaussians']} Gaussians"
               + "".join(f", {k} {_fmt(v)}" for k, v in latest.items())
               + (f", {m['nan_steps_skipped']} non-finite steps skipped" if m["nan_steps_skipped"] else ""))
    if result.cancelled:
        print(f"cancelled after step {m['steps_done']} of {m['steps']}; the partial result is in {result.out_dir}")
        print(f"scene:      {result.ply_path}")
        print(f"metrics:    {summary}")
        return EXIT_CANCELLED
    print(f"run folder: {result.out_dir}")
    print(f"scene:      {result.ply_path}")
    print(f"turntable:  {result.turntable_path}")
    print(f"metrics:    {summary}")
    if m.get("pair"):
        from ..app.ui import pair_sentence

        print(f"pairs:      {pair_sentence(m).replace('**', '')}")
    if m.get("refine"):
        from ..app.ui import refine_sentence

        print(f"refined:    {refine_sentence(m).replace('**', '')}")
    print(f"next:       python -m psd_gs evaluate {result.out_dir}")
    return EXIT_OK


# ---- evaluate ---------------------------------------------------------------------------------


def _resolve_target(target: str) -> Tuple[Path, Optional[RunConfig]]:
    """(scene .ply, the run's config or None) for a run folder or a .ply path."""
    path = Path(target)
    if path.is_dir():
        ply = path / "scene.ply"
        if not ply.is_file():
            raise CLIError(f"{path} has no scene.ply; pass a run folder written by generate or a .ply file")
    elif path.is_file():
        ply = path
    else:
        raise CLIError(f"{path} does not exist; pass a run folder or a .ply file")
    config_path = ply.parent / "config.json"
    if path.is_dir() and not config_path.is_file():
        raise CLIError(f"{path} has no config.json; pass its .ply with --prompt instead")
    cfg = RunConfig.from_dict(json.loads(config_path.read_text())) if config_path.is_file() else None
    return ply, cfg


def _world_report(cfg: Optional[RunConfig], names: List[str]) -> Tuple[Optional[str], Optional[str]]:
    """(prior name whose report applies, the reward it judges with), or (None, None): the run's own prior;
    for a lone .ply, a prior of the world every reward scores."""
    if cfg is not None:
        name = cfg.prior.name
    else:
        worlds = set.intersection(*(set(REWARDS[n].worlds) for n in names))
        name = next((p for p, e in PRIORS.items() if e.world in worlds and e.report), None)
    if name is None or not PRIORS[name].report:
        return None, None
    world = PRIORS[name].world
    judge = next((n for n in names if world in REWARDS[n].worlds), cfg.reward if cfg else None)
    return name, judge


def _check_weights_cached(rewards: List[str]) -> None:
    """CLIError at once, naming fetch-weights, for a reward whose weights are not in the local cache:
    evaluate never downloads (offline, a download attempt would hang for half a minute first)."""
    from ..run.fetch import required_files, status

    missing = status(required_files(None, list(dict.fromkeys(rewards))))[1]
    if missing:
        names = sorted({name for name in rewards for repo, f in missing
                        if (repo, f) in required_files(None, [name])})
        raise CLIError(f"the weights of {', '.join(names)} are not in the local cache ({len(missing)} files); fetch "
                       f"them with `python -m psd_gs fetch-weights --prior none --rewards {','.join(names)}`")


def cmd_evaluate(args: argparse.Namespace) -> int:
    # 1. Check inputs: the scene, prompt, reward names, views, and whether a world report applies
    ply, cfg = _resolve_target(args.target)
    prompt = args.prompt if args.prompt is not None else (cfg.prompt if cfg else None)
    if prompt is None:
        raise CLIError(f"{ply} is not in a run folder, so there is no prompt to score against; pass --prompt TEXT")
    names = [n.strip() for n in args.rewards.split(",") if n.strip()] if args.rewards else \
        [cfg.reward if cfg else "hpsv2"]
    if not names:
        raise CLIError("--rewards is empty; pass names such as shapes-warm or hpsv2,clip")
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise CLIError(f"unknown reward {', '.join(map(repr, unknown))} (--rewards); known rewards: "
                       f"{', '.join(sorted(REWARDS))}")
    if args.views < 1:
        raise CLIError(f"--views {args.views}: must be >= 1")
    resolution = args.resolution or (cfg.camera.resolution[-1][1] if cfg else 64)
    if not 8 <= resolution <= 2048:
        raise CLIError(f"--resolution {resolution}: must be between 8 and 2048 pixels")
    report_prior, judge_name = _world_report(cfg, names)
    out_dir = Path(args.out) if args.out else ply.parent
    check_device(args.device)
    _check_weights_cached(names + ([judge_name] if judge_name else []))

    # 2. Load the scene and the reward models
    from ..device import resolve_device
    from ..run.evaluate import eval_cameras, evaluate
    from ..scene.ply import load_ply
    from ..registry import resolve
    from ..rewards import load_reward

    device = resolve_device(args.device)
    scene = load_ply(ply, device=device)  # ValueError naming the file for a malformed .ply
    if cfg is not None and cfg.scene.init:  # a refinement's scene.ply is in its input's frame: seen as the run saw it
        from ..run.refine import frame_of

        scene = frame_of(ply.parent, cfg).normalised(scene)
    rewards = {name: load_reward(name, device=device) for name in names}
    report = None
    if report_prior is not None:
        judge = rewards.get(judge_name) or load_reward(judge_name, device=device)
        report = (report_prior, resolve(PRIORS[report_prior].report), judge)

    # 3. Render the orbit views, score, write evaluation.json and views.png
    radius = sum(cfg.camera.radius) / 2 if cfg else 2.0
    fovy = sum(cfg.camera.fovy) / 2 if cfg else 49.1
    cams = eval_cameras(args.views, resolution, radius, fovy)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = evaluate(scene, prompt, rewards, cams, out_dir=out_dir, world_report=report)

    # 4. Print a short table
    print(f"{ply}: {len(scene)} Gaussians, prompt {prompt!r}, {args.views} views at {resolution} px")
    width = max(len("reward"), *map(len, names))
    print(f"{'reward':<{width}}  {'mean':>8}  {'min':>8}  {'max':>8}")
    for name, r in report["rewards"].items():
        print(f"{name:<{width}}  {r['mean']:8.4f}  {min(r['per_view']):8.4f}  {max(r['per_view']):8.4f}")
    if report_prior in report:  # the world's own report: its scalar entries
        items = [(k, v) for k, v in report[report_prior].items() if isinstance(v, (str, int, float))]
        print(f"{report_prior}: " + ", ".join(
            f"{k} {('yes' if v else 'no') if isinstance(v, bool) else f'{v:.3f}' if isinstance(v, float) else v}"
            for k, v in items))
    print(f"wrote {out_dir / 'evaluation.json'} and {out_dir / 'views.png'}")
    return EXIT_OK


def cmd_export_mesh(args: argparse.Namespace) -> int:
    # 1. Check inputs
    ply, _ = _resolve_target(args.target) if Path(args.target).is_file() else (_run_ply(args.target), None)
    if not 16 <= args.resolution <= 256:
        raise CLIError(f"--resolution {args.resolution}: must be between 16 and 256")
    if args.level is not None and not args.level > 0:
        raise CLIError(f"--level {args.level}: must be > 0")
    if args.max_faces < 0:
        raise CLIError(f"--max-faces {args.max_faces}: must be >= 0 (0: no decimation)")
    out = Path(args.out) if args.out else ply.parent / f"mesh.{args.format}"
    if out.suffix.lstrip(".").lower() != args.format:
        raise CLIError(f"--out {out} does not end in .{args.format} (--format {args.format})")

    # 2. Load, extract, write
    from ..mesh.extract import LEVEL, extract_mesh, write_mesh
    from ..scene.ply import load_ply

    scene = load_ply(ply)  # ValueError naming the file for a malformed .ply
    result = extract_mesh(scene, resolution=args.resolution, level=args.level or LEVEL, max_faces=args.max_faces,
                          source=args.source)
    write_mesh(result, out)
    st = result.stats
    print(f"{ply}: {len(scene)} Gaussians -> {st['vertices']} vertices, {st['faces']} faces, "
          f"{'watertight' if st['watertight'] else 'not watertight'}, Euler characteristic {st['euler']}, "
          f"{'level %.3f' % result.level if args.source == 'opacity' else 'carved by 42 views'}, "
          f"{result.pieces_dropped} small pieces dropped, {result.seconds:.1f} s")
    print(f"wrote {out}")
    return EXIT_OK


def _run_ply(target: str) -> Path:
    """scene.ply of a run folder, or CLIError saying what is missing."""
    path = Path(target)
    if not path.is_dir():
        raise CLIError(f"{path} does not exist; pass a run folder or a .ply file")
    if not (path / "scene.ply").is_file():
        raise CLIError(f"{path} has no scene.ply, so there is no splat to mesh; pass a run folder written by "
                       "generate (a run still going writes scene.ply at its end) or a .ply file")
    return path / "scene.ply"


# ---- bench ------------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    # 1. Check inputs
    names = available_benchmarks()
    if args.name is None:
        raise CLIError(f"missing NAME; available benchmarks: {', '.join(names) or 'none'}")
    name = args.name[:-3] if args.name.endswith(".py") else args.name
    if name not in names:
        where = f"available: {', '.join(names)}" if names else f"no benchmark scripts found in {BENCH_DIR}"
        raise CLIError(f"unknown benchmark {args.name!r}; {where}")

    # 2. Run it in a fresh interpreter from the repo root, passing its exit code on
    return subprocess.run([sys.executable, str(BENCH_DIR / f"{name}.py"), *args.args], cwd=REPO).returncode


# ---- entry point ------------------------------------------------------------------------------


def _is_expected(error: BaseException) -> bool:
    """Errors that are the user's to fix, shown as one line; anything else is a bug and keeps its traceback."""
    if isinstance(error, (CLIError, ValueError, FileNotFoundError)):
        return True
    from ..run.loop import GenerationError
    from ..priors.base import MissingWeightsError
    from ..run.folders import RunFolderError

    return isinstance(error, (MissingWeightsError, GenerationError, RunFolderError))


def quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush of a closed pipe raises nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default: sys.argv[1:]); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, argparse errors (already printed)
        return e.code if isinstance(e.code, int) else EXIT_ERROR
    except BrokenPipeError:  # --help into a closed pipe
        quiet_stdout()
        return 0
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader went away (`| head`, `| less` quit): end quietly, as other tools do
        quiet_stdout()
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as e:
        if args.debug or not _is_expected(e):
            raise
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return EXIT_ERROR
