"""A step size adapted to the acceptance (``se.strategies.with_step_adaptation``).

The moving Gaussian of tests/_moving.py, 2000 MALA walkers started at a step of 2.0, too large
for its scales 0.6-1.2: the adapted step must bring the acceptance to its target while the
weights stay exact, checked against the closed-form moments and log Z by tests/test_weights.py's
check (``z_bound(15)`` standard errors: a false-alarm budget of 1e-3 for the test).
"""

import functools

import jax
import numpy as np
import optax
import pytest
from _moving import simulate
from test_weights import _check_moments_and_log_Z as check_moments_and_log_Z

import smc_ebm as se
from smc_ebm.energies import GaussianMixture

N = 2000
TARGET = 0.57


@functools.cache
def _run(adapted: bool, kernel="mala"):
    strategy = se.Jarzynski(N, 2.0, kernel=kernel, resampling=se.NoResampling())
    if adapted:
        strategy = se.strategies.with_step_adaptation(strategy, TARGET, adapt_rate=0.5)
    out = simulate(strategy, jax.random.split(jax.random.key(11), 1))
    return jax.tree.map(lambda v: v[0], out)


@pytest.mark.filterwarnings("ignore:advance is deprecated")
def test_adapted_walkers_reach_the_target_acceptance_and_stay_exact():
    out, fixed = _run(True), _run(False)
    # At the fixed step the acceptance stays far below the target; adapted, it reaches it.
    assert fixed["acc"][-10:].mean() < TARGET - 0.2, fixed["acc"][-10:]
    assert abs(out["acc"][-10:].mean() - TARGET) < 0.1, out["acc"][-10:]
    check_moments_and_log_Z(out)


@pytest.mark.filterwarnings("ignore:advance is deprecated")
def test_adapted_kernel_objects_take_the_adapted_step_at_every_transition():
    """A kernel object gets the adapted step through ``with_step_size``: ``MALA`` as an object
    repeats the named kernel's run bit for bit (a kernel left at its first step, 2.0, would
    not), and ``Repeated(MALA, 3)`` reaches the target too, with exact weights (a repetition
    whose later transitions kept the first step would leave the acceptance near the fixed
    run's)."""
    named = _run(True)
    as_object = _run(True, se.kernels.MALA(2.0))
    for name in ("x", "a", "acc"):
        np.testing.assert_array_equal(as_object[name], named[name])
    repeated = _run(True, se.kernels.Repeated(se.kernels.MALA(2.0), 3))
    assert abs(repeated["acc"][-10:].mean() - TARGET) < 0.1, repeated["acc"][-10:]
    check_moments_and_log_Z(repeated)


def test_adaptation_needs_metropolis_adjusted_walkers_of_its_own():
    with pytest.raises(ValueError, match="MALA"):
        se.strategies.with_step_adaptation(se.Jarzynski(64, 0.1))
    with pytest.raises(ValueError, match="MALA"):
        se.strategies.with_step_adaptation(se.Jarzynski(64, 0.1, kernel=se.kernels.ULA(0.1)))
    observed = se.strategies.with_observers(se.Jarzynski(64, 0.1, kernel="mala"), 16)
    with pytest.raises(ValueError, match="before any other option"):
        se.strategies.with_step_adaptation(observed)
    with pytest.raises(ValueError, match="target_accept"):
        se.strategies.with_step_adaptation(se.PCD(64, 0.1, kernel="mala"), 1.0)
    with pytest.raises(ValueError, match="adapt_rate"):
        se.strategies.with_step_adaptation(se.PCD(64, 0.1, kernel="mala"), adapt_rate=0.0)


def _fit(num_steps, **over):
    data = se.datasets.two_mode_teacher(jax.random.key(0), n=300, dim=2).samples
    energy = GaussianMixture.init(jax.random.key(1), 2, 2, scale=0.1)
    inner = se.Jarzynski(64, 1.5, kernel="mala", resampling=se.ESSResampling(0.9))
    kw = dict(
        strategy=se.strategies.with_observers(se.strategies.with_step_adaptation(inner), 16),
        optimizer=optax.sgd(0.01),
        key=jax.random.key(2),
        progress=False,
        chunk_size=7,
    )
    return se.fit(energy, data, num_steps=num_steps, **{**kw, **over})


def test_fit_adapts_the_step_and_resumes_exactly():
    straight = _fit(30)
    step_size = float(straight.state.walkers.step_size)
    assert step_size < 1.5  # a step of 1.5 is too large for modes of scale 1: it shrank
    resumed = _fit(13, resume=_fit(17))
    assert float(resumed.state.walkers.step_size) == step_size
    np.testing.assert_array_equal(np.asarray(resumed.walkers), np.asarray(straight.walkers))
    np.testing.assert_array_equal(np.asarray(resumed.log_weights), np.asarray(straight.log_weights))
