"""Files of a run directory: atomic writes with checksums, the directory's checks and its lock.

Every file of a run is written through a temporary file in the same directory, ``fsync`` and
``os.replace``, so that a crash leaves either the old file or the new one, never a part of one;
``run.json`` is written last and records the sha256 of every other file (its ``files`` entry),
which :func:`~smc_ebm.runs.load_run` checks.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smc_ebm._checkpoint import TMP_SUFFIX, write_atomic

RUN_JSON = "run.json"
LOCK = ".lock"
# What a run writes besides run.json, its config and its checkpoint: removed when a run is
# resumed (they are written again) so that nothing of an earlier attempt is left.
OUTPUTS = (
    "history.npz",
    "walkers.npz",
    "energy.eqx",
    "diagnostics.csv",
    "samples.npy",
    "report.html",
    "figures",
)


def file_sha256(path: Path) -> str:
    """The hex sha256 of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def to_bytes(write: Callable[[io.BytesIO], Any]) -> bytes:
    """What ``write(buffer)`` writes (``np.savez``, ``np.save``, equinox serialisation)."""
    buf = io.BytesIO()
    write(buf)
    return buf.getvalue()


def write_json(path: Path, meta: dict, default: Callable[[Any], Any]) -> None:
    """Write ``meta`` as JSON, atomically."""
    write_atomic(path, json.dumps(meta, indent=2, default=default).encode())


def fsync_tree(root: Path) -> None:
    """``fsync`` every file under ``root`` (before it is renamed into place)."""
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


# --------------------------------------------------------------------------- names and dirs
def name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name a run folder under ``runs/`` (``None`` when it can)."""
    if not isinstance(name, str):
        return f"`name` must be a string; got {name!r}."
    if name.strip() in ("", ".", "..") or any(c in name for c in "/\\\0") or (os.path.isabs(name)):
        return (
            f"`name` {name!r} must be a plain folder name (no '/' or '\\', not '.' or '..', "
            "not empty, not absolute), so that runs/<name> stays inside the runs folder."
        )
    return None


def _ignorable(p: Path) -> bool:
    return p.name == LOCK or p.name.endswith(TMP_SUFFIX)


def dir_state(run_dir: Path) -> str:
    """``"missing"``, ``"empty"``, ``"run"``, ``"file"`` (not a directory) or ``"other"``."""
    if not run_dir.exists():
        return "missing"
    if not run_dir.is_dir():
        return "file"
    if (run_dir / RUN_JSON).is_file():
        # Only a run.json that smc-ebm wrote makes a run (--overwrite removes everything in
        # a run directory: a folder that merely holds some run.json is not one).
        try:
            meta = json.loads((run_dir / RUN_JSON).read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            return "other"
        if isinstance(meta, dict) and {"format", "config", "status"} <= set(meta):
            return "run"
        return "other"
    if all(_ignorable(p) for p in run_dir.iterdir()):
        return "empty"  # nothing, or only what a run killed before its run.json leaves
    return "other"


def clear(run_dir: Path, keep: tuple[str, ...] = (LOCK,)) -> None:
    """Remove everything in ``run_dir`` except the names in ``keep``."""
    for p in run_dir.iterdir():
        if p.name in keep:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def clear_outputs(run_dir: Path) -> None:
    """Remove the outputs of an earlier attempt (see ``OUTPUTS``) and stray temporary files."""
    for p in run_dir.iterdir():
        if p.name in OUTPUTS or (p.name.endswith(TMP_SUFFIX) and p.name != LOCK):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()


class Lock:
    """An exclusive lock on a run directory (``flock`` on ``RUN_DIR/.lock``).

    Two processes never write the same run; the system releases the lock when the process
    ends, even when it is killed.
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock (Windows): no lock
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ValueError(
                f"{self.path.parent} is in use by another smc-ebm process (pid {pid}); wait "
                "for it to end or stop it first."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
