"""Where the examples write: a folder checked before any work starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
