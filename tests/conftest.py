"""Shared test configuration: strict JAX, a PRNG key fixture, a headless matplotlib, and one
on-disk XLA compilation cache for the run (below).

Strict dtype promotion is on. Rank promotion is left at JAX's default ("allow") because the
package relies on implicit rank broadcasting and fails under ``jax_numpy_rank_promotion =
"raise"``:

* ``smc_ebm/energies/_gmm.py`` ``GaussianMixture.__call__``: ``x - self.means`` broadcasts
  ``(d,)`` against ``(K, d)``;
* ``smc_ebm/energies/_gaussian.py`` ``Gaussian.sample``: ``self.scale * eps`` broadcasts
  ``(d,)`` against ``(n, d)`` (reached by the annealed initialisation);
* numpyro's ``Normal.sample`` (third party) broadcasts too, so ``Tilted`` with a numpyro
  base cannot initialise its walkers under "raise" either.

Strict dtype promotion passes everywhere in the package except through blackjax's residual
resampler (``blackjax/smc/resampling.py``, ``residual``: ``N_sample_weights - integer_part``
mixes float32 and int32), reached via ``smc_ebm.smc.resample_indices(..., "residual")``;
tests of that method relax promotion locally with ``_stats.promotion_for``.
"""

import os
import shutil
import tempfile

import matplotlib

matplotlib.use("Agg")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")

# The suite's time is mostly XLA compilation, and the test workers and the tests' subprocesses
# (float64, forced devices, command-line runs, examples) compile many of the same programs. One
# on-disk compilation cache for the run, made by the first process and inherited through the
# environment, lets each program compile once (except those that call the host, such as fit's
# training chunks, which jax does not cache). A compiled program read back is the one written
# (results are bitwise the same); tests that count compilations count them within one process,
# after a first call. A cache the user set already is left alone. jax writes an entry in place
# (no rename), so a process may read one that another is still writing: jax then warns and
# compiles the program itself (the warning is ignored in pyproject.toml), which costs the time
# the cache would have saved and nothing else.
_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_OWN_CACHE: list[str] = []


def pytest_configure(config):
    if os.environ.get(_CACHE_ENV):  # the user's, or the first process's (jax read it at import)
        return
    _OWN_CACHE.append(tempfile.mkdtemp(prefix="smc_ebm-tests-xla-"))
    # Every program is cached, however quick to compile: most are small and many.
    settings = {
        _CACHE_ENV: _OWN_CACHE[0],
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": 0.0,
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": 0,
    }
    # for the workers and the subprocesses started from here ...
    os.environ.update({name: str(value) for name, value in settings.items()})
    for name, value in settings.items():  # ... and this process, which imported jax before
        jax.config.update(name.lower(), value)


def pytest_unconfigure(config):
    for path in _OWN_CACHE:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def key():
    return jax.random.key(0)
