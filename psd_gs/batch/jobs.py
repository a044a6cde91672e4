"""A batch's jobs: read from a prompt list or a JSONL file, expanded, named, turned into RunConfigs.

A job is a plain dict (it travels to Ray workers and into the batch index as it is)::

    {"prompt": str, "preset": str, "method": str, "seed": int, "reward": str | None, "set": {path: value}}

``reward`` None keeps the preset's reward; ``set`` holds config overrides in the dotted form of
``--set`` (``{"guidance.tau": 0.3, "steps": 200}``), applied after the batch's own ``--set``. A job's
``id`` is a hash of that dict, so the same job in a re-run has the same id and is skipped when done.

Files (``read_jobs``):
- a text file: one prompt a line; blank lines and lines starting with ``#`` are skipped;
- a ``.jsonl`` file: one JSON object a line, with "prompt" and optionally "method", "seed",
  "reward", "preset"; every other key is a dotted config path (``"guidance.tau": 0.3``).

A line without a method or seed is expanded into one job per method of ``methods`` and per seed
``0 .. seeds-1`` (``--methods psd,sds --seeds 4``); duplicates are merged. Every job is checked
(``validate``) before anything runs; a bad line is a ValueError naming the file, line and fix.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..config import PRESETS, RunConfig, apply_overrides, preset
from ..run.folders import slug

Job = Dict[str, Any]
FIELDS = ("prompt", "preset", "method", "seed", "reward")  # the keys of a JSONL line that are not overrides
MAX_JOBS = 100_000


def job_id(job: Job) -> str:
    """``<prompt slug>-<method>-seed<seed>-<10 hex digits of the job's hash>``: a safe folder name, stable
    across re-runs, different for any two different jobs."""
    spec = {k: v for k, v in job.items() if k != "id"}
    digest = hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{slug(job['prompt'], 32)}-{slug(job['method'], keep='_')}-seed{job['seed']}-{digest}"


def job_config(job: Job, out_dir: str = "runs") -> RunConfig:
    """The job's RunConfig (unchecked): its preset, method, seed and reward, then its overrides."""
    cfg = preset(job["preset"], prompt=job["prompt"], out_dir=out_dir)
    given: Dict[str, Any] = {"guidance.method": job["method"], "seed": job["seed"]}
    if job.get("reward") is not None:
        given["reward"] = job["reward"]
    apply_overrides(cfg, given)
    return apply_overrides(cfg, dict(job.get("set") or {}))


def _lines(path: Path) -> List[tuple]:
    """(line number, raw entry) of every non-blank, non-comment line: a prompt, or a dict for JSONL."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read the jobs file {path}: {err}; pass a text file of prompts or a .jsonl file") \
            from None
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if path.suffix.lower() == ".jsonl":
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {number}: not JSON ({err.msg}); write one object a line, e.g. "
                                 '{"prompt": "a red cube", "method": "psd", "seed": 0}') from None
            if not isinstance(entry, dict) or not isinstance(entry.get("prompt"), str):
                raise ValueError(f'{path} line {number}: a job needs a "prompt" string, e.g. {{"prompt": "a red cube"}}')
            out.append((number, entry))
        else:
            out.append((number, line))
    return out


def read_jobs(path: str | Path, preset_name: str = "shapes", methods: Sequence[str] = ("psd",), seeds: int = 1,
              overrides: Optional[Mapping[str, Any]] = None) -> List[Job]:
    """Every job of the file at ``path``, expanded and checked (module docstring); ``overrides`` (the
    batch's ``--set``) go into each job's "set" before the line's own. ValueError names the line and fix."""
    from ..run.validate import validate

    path = Path(path)
    if preset_name not in PRESETS:
        raise ValueError(f"preset {preset_name!r} is unknown; choose one of {sorted(PRESETS)}")
    if not methods:
        raise ValueError("no methods given; pass --methods psd,sds")
    if seeds < 1:
        raise ValueError(f"--seeds {seeds}: must be >= 1")
    jobs: Dict[str, Job] = {}
    for number, entry in _lines(path):
        entry = {"prompt": entry} if isinstance(entry, str) else dict(entry)
        own = {k: v for k, v in entry.items() if k not in FIELDS}
        line_methods = [entry["method"]] if "method" in entry else list(methods)
        line_seeds = [entry["seed"]] if "seed" in entry else list(range(seeds))
        for method in line_methods:
            for seed in line_seeds:
                job = {"prompt": entry["prompt"].strip(), "preset": entry.get("preset", preset_name), "method": method,
                       "seed": seed, "reward": entry.get("reward"), "set": {**(overrides or {}), **own}}
                try:
                    cfg = job_config(job)
                    cfg.device = "auto"  # the device is the worker's (a GPU node's), checked there
                    validate(cfg)
                except (ValueError, TypeError, KeyError) as err:
                    raise ValueError(f"{path} line {number}: {err}") from None
                jobs.setdefault(job_id(job), job)
        if len(jobs) > MAX_JOBS:
            raise ValueError(f"{path}: more than {MAX_JOBS} jobs; split the file")
    if not jobs:
        raise ValueError(f"{path} has no jobs: write one prompt a line (or one JSON object a line in a .jsonl file)")
    return [job | {"id": key} for key, job in jobs.items()]
