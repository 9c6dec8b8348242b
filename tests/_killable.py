"""``smc-ebm`` for the fault tests, with hooks that let a test kill it at a chosen moment.

Run as ``python tests/_killable.py fit CONFIG --out RUN_DIR``. Environment:

* ``STALL=NAME:N``: the N-th atomic write of a file whose name starts with ``NAME`` (a
  checkpoint's ``params-``, its ``manifest.json``, the run's ``walkers.npz`` or ``run.json``)
  stops half-way: half its bytes are in the temporary file, fsynced; then the file ``MARK`` is
  written and the process waits to be killed.
* ``PAUSE=SECONDS``: sleep this long after each checkpoint (a wider window between them).

JAX's strict dtype promotion is on, as in the tests' own process (``conftest.py``).
"""

import os
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_numpy_dtype_promotion", "strict")

from smc_ebm import _checkpoint, _fit  # noqa: E402
from smc_ebm.cli import main  # noqa: E402
from smc_ebm.runs import _execute, _files, _plan  # noqa: E402

_COUNT = {"n": 0}


def _stalling(write):
    prefix, _, nth = os.environ["STALL"].partition(":")

    def stalled(path, data):
        path = Path(path)
        if path.name.startswith(prefix):
            _COUNT["n"] += 1
            if _COUNT["n"] == int(nth):
                tmp = path.with_name(path.name + ".tmp")
                with open(tmp, "wb") as f:
                    f.write(data[: len(data) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                Path(os.environ["MARK"]).write_text(str(path))
                time.sleep(600)
        return write(path, data)

    return stalled


if os.environ.get("STALL"):
    stalled_write = _stalling(_checkpoint.write_atomic)  # the one writer, and its imports
    for module in (_checkpoint, _files, _execute, _plan):
        module.write_atomic = stalled_write

if os.environ.get("PAUSE"):
    _save, _pause = _fit.save_checkpoint, float(os.environ["PAUSE"])

    def _paused_save(*args, **kwargs):
        _save(*args, **kwargs)
        time.sleep(_pause)

    _fit.save_checkpoint = _paused_save

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
