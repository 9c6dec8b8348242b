"""Where the examples and benchmarks write: checked folders and atomic JSON files."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from smc_ebm._checkpoint import write_atomic


def output_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (with parents) and check that files can be written into it.

    Called before a long run, so that a bad ``--out`` fails at once, not after the run.
    Raises ``SystemExit`` with a message naming the folder.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as err:
        raise SystemExit(f"cannot write into the output folder {str(path)!r}: {err}") from err
    return path


def write_json(path: str | os.PathLike, payload: Any) -> None:
    """Write ``payload`` to ``path`` as indented JSON, atomically (the folder is created).

    A run that rewrites its numbers after every case leaves, if killed, the last complete
    file, never a part of one (:func:`smc_ebm._checkpoint.write_atomic`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(payload, indent=1).encode())


def stop_if_interrupted(result) -> None:
    """Raise ``KeyboardInterrupt`` when ``fit`` returned an interrupted run (Ctrl-C or SIGTERM).

    ``fit`` keeps the work of an interrupted run and returns it with ``interrupted=True``; a
    script that loops over methods or seeds calls this after each fit, so that it stops there
    instead of recording the partial run as a finished one.
    """
    if result.interrupted:
        raise KeyboardInterrupt(f"fit interrupted at step {result.steps}")
