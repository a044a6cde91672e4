"""Run folders on disk: where a run writes, how it is named, when it counts as complete, and clean-up.

Every run writes only inside its own new folder below a runs root, named
``<time>-<slug of the prompt>-<method>-seed<seed>-<16 random hex digits>``: lowercase letters, digits,
dashes and the underscores of registry names (a prompt cannot make it a path), and not guessable from
what a user knows of someone else's run.

A folder is complete or it goes: ``new_run_dir`` drops an ``INCOMPLETE`` marker in the new folder and
the run removes it only once scene.ply, metrics.json and the turntable are written (a stopped,
cancelled or failed run writes what it has first, as Stop does). A process killed mid-run leaves the
marker, and ``recover_runs``, which the app calls when it starts, removes such folders and the
temporary files of writes that were cut short. The CLI does not call it: a killed CLI run with a
checkpoint can still be resumed.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import List, Union

INCOMPLETE = "INCOMPLETE"  # marker file of a run that has not finished writing its outputs
TMP_PATTERN = re.compile(r"^\..*\.tmp(\.[a-z0-9]+)?$")  # our atomic writes' temporaries: .<name>.<...>.tmp[.ext]


class RunFolderError(RuntimeError):
    """The runs folder cannot be used; the message says how to fix it."""


def check_runs_root(root: Union[str, Path]) -> Path:
    """``root`` exists (made if needed) and this process can create folders in it; returns it.

    Raises RunFolderError saying how to fix it otherwise: in Docker, a bind-mounted folder that did not
    exist is created by the daemon as root, and the app's non-root user cannot write there.
    """
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.mkdir()
        probe.rmdir()
    except OSError as err:
        uid, gid = os.getuid(), os.getgid()
        raise RunFolderError(
            f"cannot create run folders in {root} ({err.strerror or type(err).__name__}). Make it writable by "
            f"this user (uid {uid}): `sudo chown -R {uid}:{gid} {root}`. With Docker, a bind-mounted folder "
            f"that did not exist is created as root: create it first (`mkdir -p runs && sudo chown "
            f"{uid}:{gid} runs`) or keep compose.yaml's named volume") from None
    return root


def slug(text: str, limit: int = 40, keep: str = "") -> str:
    """``text`` as a safe folder-name fragment: lowercase letters, digits, single dashes and the
    characters in ``keep`` (``"_"`` for registry names such as ``reward_grad``)."""
    return re.sub(rf"[^a-z0-9{re.escape(keep)}]+", "-", text.lower()).strip("-")[:limit].strip("-") or "prompt"


def new_run_dir(root: Union[str, Path], prompt: str, method: str, seed: int) -> Path:
    """A fresh folder below ``root`` (never an existing one, never outside it), marked INCOMPLETE."""
    root = check_runs_root(root)
    for _ in range(100):
        name = (f"{time.strftime('%Y%m%d-%H%M%S')}-{slug(prompt)}-{slug(method, keep='_')}-seed{seed}-"
                f"{secrets.token_hex(8)}")
        path = root / name
        try:
            path.mkdir()
        except FileExistsError:
            continue
        (path / INCOMPLETE).touch()
        return path
    raise RunFolderError(f"could not create a new run folder under {root}")


def mark_complete(folder: Path) -> None:
    """The run in ``folder`` has written all it will write."""
    (folder / INCOMPLETE).unlink(missing_ok=True)


def mark_incomplete(folder: Path) -> None:
    """``folder``'s run writes again (a resumed run)."""
    (folder / INCOMPLETE).touch()


RUN_DIR_PATTERN = re.compile(r"^\d{8}-\d{6}-[a-z0-9_-]+-seed\d+-[0-9a-f]{16}$")


def is_run_dir(path: Path) -> bool:
    """A folder ``new_run_dir`` made (its name, and a config.json or the INCOMPLETE marker inside)."""
    return (path.is_dir() and bool(RUN_DIR_PATTERN.match(path.name))
            and ((path / "config.json").exists() or (path / INCOMPLETE).exists()))


def clean_old_runs(root: Path, max_age_seconds: float) -> List[Path]:
    """Delete run folders directly below ``root`` older than ``max_age_seconds``; returns them.

    Only folders that ``is_run_dir`` recognises are touched, so nothing else below ``root`` is removed.
    """
    removed = []
    if not root.is_dir():
        return removed
    now = time.time()
    for path in root.iterdir():
        if is_run_dir(path) and now - path.stat().st_mtime > max_age_seconds:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def recover_runs(root: Path) -> List[Path]:
    """After a restart: remove the run folders a killed process left INCOMPLETE, and the temporaries of
    atomic writes that were cut short in the others. Returns the folders removed. Call it only where no
    run is in progress below ``root`` (the app at start-up)."""
    removed = []
    if not root.is_dir():
        return removed
    for path in root.iterdir():
        if not is_run_dir(path):
            continue
        if (path / INCOMPLETE).exists():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            continue
        for leftover in path.iterdir():
            if leftover.is_file() and TMP_PATTERN.match(leftover.name):
                leftover.unlink(missing_ok=True)
    return removed
