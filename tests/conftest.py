"""Shared test configuration: strict JAX, a PRNG key fixture, a headless matplotlib.

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

import matplotlib

matplotlib.use("Agg")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def key():
    return jax.random.key(0)
