"""What makes the app safe to expose: login, what it serves, what it keeps, and what it says at start.

- Login: ``PSD_GS_AUTH="user:password"``; a malformed setting or an empty part stops start-up with a
  message; each wrong attempt costs ``FAILED_LOGIN_DELAY`` seconds, one attempt at a time, so guessing
  is slow (30 wrong passwords take 30 x 0.5 s at least).
- Files: the runs folder is never served directly (it is not in Gradio's allowed paths, so
  ``/gradio_api/file=<runs>/...`` is refused). What a user may download is copied into a folder of
  random names below the system's temp folder (``serve_copies``), from which Gradio moves it into its
  own cache; both are pruned (``prune``) so nothing accumulates: entries older than the runs' age
  limit, and beyond ``MAX_CACHE_ENTRIES`` the oldest first. Uploads are capped at ``MAX_UPLOAD``: the
  page's one upload is "Refine a splat", a .ply of at most scene.max_gaussians Gaussians at SH degree 3
  (``upload_cap``); the upload is deleted when its run ends (its copy is the run's input.ply) or at once
  when it is not a splat the page can refine.
- Messages: server paths are replaced by "<runs>" before a user sees them (``public_message``).
- Start-up: a server bound beyond loopback without a login says so loudly, on stderr and on the page.
"""

from __future__ import annotations

import hmac
import shutil
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

FAILED_LOGIN_DELAY = 0.5  # seconds per wrong attempt, attempts in turn


def upload_cap(max_gaussians: int) -> int:
    """Bytes of the largest .ply "Refine a splat" takes: ``max_gaussians`` rows of a 3DGS splat at SH degree 3
    (62 float32: position, normal, 48 SH coefficients, opacity, 3 scales, 4 rotations), a quarter more for
    other tools' extra properties, and 64 KB of header."""
    return int(max_gaussians * 62 * 4 * 1.25) + 65536


MAX_UPLOAD = upload_cap(20_000)  # Gradio's upload route; 20000 = scene.max_gaussians in every preset
MAX_CACHE_ENTRIES = 400
SERVE_DIR = Path(tempfile.gettempdir()) / "psd-gs-serve"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def parse_auth(setting: Optional[str]) -> Optional[Tuple[str, str]]:
    """(user, password) from ``PSD_GS_AUTH``, None when unset; ValueError naming the fix when malformed."""
    if setting is None or setting == "":
        return None
    user, sep, password = setting.partition(":")
    if not sep:
        raise ValueError("PSD_GS_AUTH must be user:password (a colon between them); it has no colon")
    if not user.strip() or not password:
        raise ValueError("PSD_GS_AUTH must be user:password with both parts non-empty; "
                         f"the {'user' if not user.strip() else 'password'} is empty")
    return user, password


def slow_auth(user: str, password: str, delay: float = FAILED_LOGIN_DELAY) -> Callable[[str, str], bool]:
    """Gradio's ``auth`` callable: constant-time comparison; each failure waits ``delay`` seconds while
    holding a lock, so failed attempts are answered one after another, slowly."""
    lock = threading.Lock()

    def check(given_user: str, given_password: str) -> bool:
        ok = hmac.compare_digest(given_user.encode(), user.encode()) & hmac.compare_digest(
            given_password.encode(), password.encode())
        if not ok:
            with lock:
                time.sleep(delay)
        return bool(ok)

    return check


def startup_warnings(host: str, auth: Optional[Tuple[str, str]]) -> List[str]:
    """What to say loudly at start-up: a server reachable from other machines without a login."""
    if host in LOOPBACK or auth is not None:
        return []
    return [f"psd-gs listens on {host} without a login: anyone who can reach this port can run "
            "generations on this machine. Set PSD_GS_AUTH=user:password to ask for one."]


def public_message(text: str, roots: Sequence[Path]) -> str:
    """``text`` with the server's folders (``roots``, as given and resolved) replaced by "<runs>"."""
    for root in roots:
        for form in sorted({str(Path(root).resolve()), str(root)}, key=len, reverse=True):
            if form and form != ".":
                text = text.replace(form, "<runs>")
    return text


def serve_copies(paths: Sequence[Optional[Path]]) -> List[Optional[str]]:
    """Copies of ``paths`` in a new random folder below ``SERVE_DIR`` (None or a missing file gives None),
    for Gradio to move into its cache: the runs folder itself is never served. Each copy keeps its file
    name (what a download is called) in a subfolder of its own, so two runs' scene.ply stay apart."""
    folder = SERVE_DIR / secrets.token_hex(16)
    out = []
    for i, path in enumerate(paths):
        if path is None or not Path(path).exists():
            out.append(None)
            continue
        target = folder / str(i) / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        out.append(str(target))
    return out


def prune(folder: Path, max_age_seconds: float, max_entries: int = MAX_CACHE_ENTRIES) -> int:
    """Remove entries (files or folders) directly below ``folder`` older than ``max_age_seconds``, then
    the oldest beyond ``max_entries``; returns how many were removed."""
    if not folder.is_dir():
        return 0
    entries = []
    for entry in folder.iterdir():
        try:
            entries.append((entry.stat().st_mtime, entry))
        except OSError:
            continue
    entries.sort(reverse=True)  # newest first
    now, removed = time.time(), 0
    for i, (mtime, entry) in enumerate(entries):
        if i >= max_entries or now - mtime > max_age_seconds:
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed += 1
    return removed


def gradio_cache() -> Path:
    """Gradio's cache folder (where it keeps every file it serves and every upload)."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder())
