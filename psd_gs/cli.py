"""Command line: ``python -m psd_gs generate | evaluate | bench`` (``main(argv) -> exit code``).

- ``generate``: one run of ``psd_gs.generate.generate`` with a progress bar; Ctrl-C ends it after the
  current step and still writes the partial result.
- ``evaluate``: multi-view reward scores of a finished run or ``.ply`` (``psd_gs.evaluate``), plus the
  shapes-world fidelity report for shapes runs.
- ``bench``: runs a script from the repo's ``bench/`` folder with the remaining arguments.
- ``fetch-weights``: downloads the checkpoints a preset and its rewards need (``psd_gs.fetch``).
- ``doctor``: checks that this host can run psd-gs and prints a table (``psd_gs.doctor``).

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
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from . import __version__
from .config import METHODS, PRESETS, RunConfig, preset

EXIT_OK, EXIT_ERROR, EXIT_CANCELLED = 0, 2, 130
REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "bench"
# Kept in sync with psd_gs.rewards.registry.REWARDS by tests/test_cli.py (importing it costs torch).
REWARD_NAMES = ("shapes-warm", "shapes-cool", "hpsv2", "pickscore", "aesthetic", "clip")
POSTFIX_LOGS = ("loss_sds", "reward_w", "gap", "reward")  # Progress.logs shown on the progress bar

EXAMPLES = """\
examples:
  python -m psd_gs generate "a red cube" --preset shapes --method psd --out runs/
  python -m psd_gs evaluate runs/<run folder>            # scores + shapes report, writes evaluation.json
  python -m psd_gs generate "a corgi wearing a crown" --preset sd --steps 1000   # GPU and SD weights
  python -m psd_gs bench step_cost
"""


class CLIError(Exception):
    """An expected failure whose message tells the user what to fix (one line, exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one ``error: ...`` line after the usage, like every other CLI error here."""

    def error(self, message: str):  # noqa: D401 (argparse API)
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"error: {message} (see: {self.prog} --help)\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks; descriptions are wrapped by ``_para``."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=32)


def _para(text: str) -> str:
    return textwrap.fill(text, width=100)


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
    parser = _Parser(prog="python -m psd_gs", formatter_class=_Formatter, epilog=EXAMPLES,
                     description=_para("Text to 3D Gaussian splats by score distillation, aligned with human "
                                 "preference by Preference Score Distillation (PSD)."))
    parser.add_argument("--version", action="version", version=f"psd-gs {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of one line (default: off)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_generate(sub)
    _add_evaluate(sub)
    _add_bench(sub)
    _add_fetch_weights(sub)
    _add_doctor(sub)
    return parser


def _add_generate(sub) -> None:
    p = sub.add_parser(
        "generate", formatter_class=_Formatter, epilog=EXAMPLES,
        help="make a 3D Gaussian splat (.ply + turntable.mp4) from a text prompt",
        description=_para("Optimise a 3D Gaussian splat for PROMPT and write it into a new run folder below --out: "
                    "config.json, scene.ply, turntable.mp4, metrics.json (and checkpoint.pt with "
                    "--checkpoint-every). Ctrl-C stops after the current step and keeps what exists; "
                    "press it twice to abort at once. Options left out keep the preset's value."))
    p.add_argument("prompt", nargs="?", metavar="PROMPT",
                   help='what to make, e.g. "a red cube". The shapes preset knows only its colour and shape '
                        'words (assets/shapes.json: "a red cube", "a cube", "a sphere"); required unless --resume')
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="shapes: the offline closed-form world, runs on a CPU in minutes; sd: Stable "
                        "Diffusion, needs a GPU and its weights (default: shapes)")
    p.add_argument("--method", choices=METHODS,
                   help=f"guidance: sds (plain score distillation), psd (preference score distillation), "
                        f"reward_grad (SDS + reward gradient baseline) (default: {RunConfig().guidance.method})")
    p.add_argument("--reward", metavar="NAME",
                   help=f"reward model that ranks the pairs (psd) or is ascended (reward_grad), one of "
                        f"{', '.join(REWARD_NAMES)} (default: {_per_preset(lambda c: c.reward)})")
    p.add_argument("--steps", type=int, metavar="N",
                   help=f"optimisation steps (default: {_per_preset(lambda c: c.steps)})")
    p.add_argument("--seed", type=int, metavar="N", help=f"random seed (default: {RunConfig().seed})")
    p.add_argument("--out", metavar="DIR",
                   help=f"folder below which the run gets its own new folder (default: {RunConfig().out_dir}/)")
    p.add_argument("--cfg-scale", type=float, metavar="S",
                   help=f"classifier-free guidance scale s, >= 1 "
                        f"(default: {_per_preset(lambda c: c.guidance.cfg_scale)})")
    p.add_argument("--lambda-p", type=float, metavar="X",
                   help=f"weight of PSD's preference pair term; 0 turns it off "
                        f"(default: {_per_preset(lambda c: c.guidance.lambda_p)})")
    p.add_argument("--neg-lr", type=float, metavar="X",
                   help=f"learning rate of PSD's adaptive negative embedding; 0 freezes it "
                        f"(default: {_per_preset(lambda c: c.guidance.neg_lr)})")
    p.add_argument("--tau", type=float, metavar="X",
                   help=f"reward gap at which the pair term reaches full weight, > 0 "
                        f"(default: {_per_preset(lambda c: c.guidance.tau)})")
    p.add_argument("--resolution", type=int, metavar="PX",
                   help="render size in pixels for the whole run, a multiple of 8 (default: the preset's "
                        f"schedule, {_per_preset(lambda c: '/'.join(str(r) for _, r in c.camera.resolution))})")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"),
                   help="where to run; auto picks CUDA when available (default: auto)")
    p.add_argument("--prior", metavar="ID_OR_DIR",
                   help="sd preset: hub id or local folder of the Stable Diffusion checkpoint "
                        "(default: the built-in model id)")
    p.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="save a resumable checkpoint.pt every N steps; 0 never (default: 0)")
    p.add_argument("--turntable-views", type=int, metavar="N",
                   help=f"frames of turntable.mp4 (default: {RunConfig().turntable_views})")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a run folder from its checkpoint.pt with its own config.json; no PROMPT "
                        "or run options with it (default: start a new run)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: show it on stderr)")
    p.set_defaults(func=cmd_generate)


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate", formatter_class=_Formatter, epilog=EXAMPLES,
        help="score a finished run or .ply from orbit views with reward models",
        description=_para("Render --views orbit views of a run's scene.ply (or any 3DGS .ply), score them with each "
                    "reward, and write evaluation.json and views.png (the views side by side). For shapes runs "
                    "(or when every reward is shapes-*) the report adds the shapes world's fidelity: the "
                    "nearest allowed object, its PSNR, the object the reward prefers, and whether they match."))
    p.add_argument("target", metavar="RUN_OR_PLY",
                   help="a run folder (its config.json gives the prompt, preset and camera) or a .ply file")
    p.add_argument("--prompt", metavar="TEXT",
                   help="the prompt the rewards score against (default: the run's prompt; required for a .ply "
                        "outside a run folder)")
    p.add_argument("--rewards", metavar="NAMES",
                   help=f"comma-separated reward names from {', '.join(REWARD_NAMES)} (default: the run's "
                        f"reward for a shapes run, shapes-warm if it has none; hpsv2 otherwise)")
    p.add_argument("--views", type=int, default=8, metavar="N", help="orbit views to render (default: 8)")
    p.add_argument("--resolution", type=int, metavar="PX",
                   help="view size in pixels (default: the run's last training resolution, 64 without a run)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to render and score (default: auto)")
    p.add_argument("--out", metavar="DIR",
                   help="folder for evaluation.json and views.png (default: the run folder, or the .ply's folder)")
    p.set_defaults(func=cmd_evaluate)


def _add_bench(sub) -> None:
    names = available_benchmarks()
    p = sub.add_parser(
        "bench", formatter_class=_Formatter,
        help="run a benchmark script from bench/ (prints tables)",
        description=_para(f"Run bench/NAME.py with the remaining arguments. Available: {', '.join(names) or 'none'}."),
        epilog="examples:\n  python -m psd_gs bench step_cost\n  python -m psd_gs bench render_bench --quick\n"
               "  python -m psd_gs bench render_bench --help")
    p.add_argument("name", nargs="?", metavar="NAME", help=f"the benchmark: {', '.join(names) or 'none found'}")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="passed on to the script unchanged, e.g. --help (default: none)")
    p.set_defaults(func=cmd_bench)


def _add_fetch_weights(sub) -> None:
    p = sub.add_parser(
        "fetch-weights", formatter_class=_Formatter,
        help="download every checkpoint a preset and its rewards need, for offline runs (HF_HUB_OFFLINE=1)",
        description=_para("List the Hugging Face files the chosen preset's prior and the chosen rewards load, say "
                          "which are already in the local cache, and download the missing ones (unless "
                          "--check). Afterwards runs with HF_HUB_OFFLINE=1 never touch the network."),
        epilog="examples:\n  python -m psd_gs fetch-weights --preset sd --rewards hpsv2\n"
               "  python -m psd_gs fetch-weights --preset sd --rewards hpsv2,pickscore,aesthetic,clip --check")
    p.add_argument("--preset", default="sd", choices=sorted(PRESETS), help="whose prior to fetch (default: sd)")
    p.add_argument("--rewards", default="hpsv2",
                   help="comma-separated reward names, or none (default: hpsv2)")
    p.add_argument("--check", action="store_true", help="only report what is present and missing (default: fetch)")
    p.set_defaults(func=cmd_fetch_weights)


def _add_doctor(sub) -> None:
    p = sub.add_parser(
        "doctor", formatter_class=_Formatter,
        help="check that this host can run psd-gs (versions, GPU, rasterisers, guidance, weights)",
        description=_para("Run every check that applies to this host and print a table with a status and a figure "
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
    _check_device(args.device)
    from .doctor import passed, run_checks, table, write_json

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
    from .fetch import fetch, required_files, status

    # 1. Check inputs: the reward names and the preset resolve to a list of hub files
    rewards = [r.strip() for r in args.rewards.split(",") if r.strip() and r.strip() != "none"]
    files = required_files(args.preset, rewards)
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


# option dest -> RunConfig field; guidance options carry GuidanceConfig's own field names
RUN_OPTIONS = {"prompt": "prompt", "steps": "steps", "seed": "seed", "out": "out_dir", "device": "device",
               "reward": "reward", "prior": "prior", "checkpoint_every": "checkpoint_every",
               "turntable_views": "turntable_views"}
GUIDANCE_OPTIONS = ("method", "cfg_scale", "lambda_p", "neg_lr", "tau")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The preset with every option the user gave set on it (nothing checked yet)."""
    given = {field: getattr(args, opt) for opt, field in RUN_OPTIONS.items() if getattr(args, opt) is not None}
    cfg = preset(args.preset or "shapes", **given)
    for name in GUIDANCE_OPTIONS:
        if getattr(args, name) is not None:
            setattr(cfg.guidance, name, getattr(args, name))
    if args.resolution is not None:
        cfg.camera.resolution = ((0.0, args.resolution),)
    return cfg


def _check_generate_inputs(args: argparse.Namespace) -> RunConfig:
    """The checked config of a new run, or of the run to resume; CLIError/ValueError naming the fix."""
    if args.resume is not None:
        given = [f"--{opt.replace('_', '-')}" for opt in ["preset", *RUN_OPTIONS, *GUIDANCE_OPTIONS, "resolution"]
                 if opt != "prompt" and getattr(args, opt) is not None]
        if args.prompt is not None or given:
            raise CLIError(f"--resume continues a run with its own config.json; drop "
                           f"{', '.join((['PROMPT'] if args.prompt is not None else []) + given)}")
        run_dir = Path(args.resume)
        for name in ("config.json", "checkpoint.pt"):
            if not (run_dir / name).is_file():
                raise CLIError(f"cannot resume {run_dir}: it has no {name}; only runs made with "
                               f"--checkpoint-every N can be resumed")
        cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text())).check()
        _check_device(cfg.device)
        return cfg

    if args.prompt is None:
        raise CLIError('missing PROMPT: say what to make, e.g. python -m psd_gs generate "a red cube"')
    cfg = config_from_args(args).check()  # ValueError naming the field, e.g. the empty prompt or the steps
    from .rewards.registry import REWARDS

    if cfg.reward not in REWARDS:
        raise CLIError(f"unknown reward {cfg.reward!r} (--reward); known rewards: {', '.join(sorted(REWARDS))}")
    if cfg.preset == "shapes":
        from .priors.shapes_world import ShapesWorld

        ShapesWorld().select(cfg.prompt)  # ValueError naming the unknown words and the vocabulary
    _check_device(cfg.device)
    return cfg


def _check_device(device: str) -> None:
    from .device import resolve_device

    try:
        resolve_device(device)
    except ValueError:
        raise CLIError(f"--device {device}: CUDA is not available on this machine; use --device cpu or auto") from None


@contextlib.contextmanager
def cancel_on_ctrl_c(cancel: threading.Event) -> Iterator[None]:
    """While inside, the first Ctrl-C sets ``cancel`` (the run stops after its current step and exports);
    a second one raises KeyboardInterrupt as usual. Only the main thread can own the handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if cancel.is_set():
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
    # 1. Check inputs (before any run folder exists)
    cfg = _check_generate_inputs(args)

    # 2. Run, with a progress bar and Ctrl-C as cancel
    from tqdm import tqdm

    from .generate import CancelToken, Progress, generate

    cancel = CancelToken()
    latest: Dict[str, float] = {}  # the last value of each POSTFIX_LOGS entry seen
    result = None
    if not args.quiet:
        where = f"resuming {args.resume}" if args.resume else f"into {cfg.out_dir}/"
        print(f"generating {cfg.prompt!r}: preset {cfg.preset}, method {cfg.guidance.method}, {cfg.steps} steps, "
              f"seed {cfg.seed}, {where}", flush=True)
    with tqdm(total=cfg.steps, desc="preparing", unit="step", disable=args.quiet, file=sys.stderr,
              dynamic_ncols=True, mininterval=0.5) as bar, cancel_on_ctrl_c(cancel):
        for event in generate(cfg, cancel=cancel, resume=args.resume):
            if not isinstance(event, Progress):
                result = event
                continue
            latest.update({k: v for k, v in event.logs.items() if k in POSTFIX_LOGS})
            bar.set_description("generating", refresh=False)
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


def _default_rewards(cfg: Optional[RunConfig]) -> List[str]:
    if cfg is not None and cfg.preset == "shapes":
        return [cfg.reward if cfg.reward.startswith("shapes-") else "shapes-warm"]
    return ["hpsv2"]


def cmd_evaluate(args: argparse.Namespace) -> int:
    # 1. Check inputs: the scene, prompt, reward names, views, and whether the shapes report applies
    from .rewards.registry import REWARDS

    ply, cfg = _resolve_target(args.target)
    prompt = args.prompt if args.prompt is not None else (cfg.prompt if cfg else None)
    if prompt is None:
        raise CLIError(f"{ply} is not in a run folder, so there is no prompt to score against; pass --prompt TEXT")
    names = [n.strip() for n in args.rewards.split(",") if n.strip()] if args.rewards else _default_rewards(cfg)
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
    shapes = (cfg is not None and cfg.preset == "shapes") or all(n.startswith("shapes-") for n in names)
    if shapes and prompt.strip():
        from .priors.shapes_world import ShapesWorld

        ShapesWorld().select(prompt)  # the shapes report needs a prompt in its vocabulary
    out_dir = Path(args.out) if args.out else ply.parent
    _check_device(args.device)

    # 2. Load the scene and the reward models
    from .evaluate import eval_cameras, evaluate
    from .device import resolve_device
    from .ply import load_ply
    from .rewards.registry import load_reward

    device = resolve_device(args.device)
    scene = load_ply(ply, device=device)  # ValueError naming the file for a malformed .ply
    rewards = {name: load_reward(name, device=device) for name in names}
    shapes_reward = None
    if shapes:
        shapes_name = next((n for n in names if n.startswith("shapes-")), None) or _default_rewards(cfg)[0]
        if not shapes_name.startswith("shapes-"):
            shapes_name = "shapes-warm"
        shapes_reward = rewards.get(shapes_name) or load_reward(shapes_name, device=device)

    # 3. Render the orbit views, score, write evaluation.json and views.png
    radius = sum(cfg.camera.radius) / 2 if cfg else 2.0
    fovy = sum(cfg.camera.fovy) / 2 if cfg else 49.1
    cams = eval_cameras(args.views, resolution, radius, fovy)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = evaluate(scene, prompt, rewards, cams, out_dir=out_dir, shapes=shapes, reward_for_shapes=shapes_reward)

    # 4. Print a short table
    print(f"{ply}: {len(scene)} Gaussians, prompt {prompt!r}, {args.views} views at {resolution} px")
    width = max(len("reward"), *map(len, names))
    print(f"{'reward':<{width}}  {'mean':>8}  {'min':>8}  {'max':>8}")
    for name, r in report["rewards"].items():
        print(f"{name:<{width}}  {r['mean']:8.4f}  {min(r['per_view']):8.4f}  {max(r['per_view']):8.4f}")
    if "shapes" in report:
        s = report["shapes"]
        print(f"shapes: nearest {s['nearest']} (PSNR {s['psnr']:.2f} dB), preferred {s['preferred']}, "
              f"hit {'yes' if s['hit'] else 'no'}")
    print(f"wrote {out_dir / 'evaluation.json'} and {out_dir / 'views.png'}")
    return EXIT_OK


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
    from .generate import GenerationError
    from .priors.base import MissingWeightsError

    return isinstance(error, (MissingWeightsError, GenerationError))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default: sys.argv[1:]); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, argparse errors (already printed)
        return e.code if isinstance(e.code, int) else EXIT_ERROR
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as e:
        if args.debug or not _is_expected(e):
            raise
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return EXIT_ERROR
