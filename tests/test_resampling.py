"""Resamplers (unbiased ancestor counts), ESS and resampling schedules."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _stats import promotion_for, z_bound

from smc_ebm.smc import (
    RESAMPLERS,
    ESSResampling,
    IntervalResampling,
    NoResampling,
    ess_fraction,
    log_mean_exp,
    maybe_resample_indices,
    off_until,
    resample_indices,
)

METHODS = sorted(RESAMPLERS)


@pytest.mark.parametrize("name", ["systematic", "stratified"])
@pytest.mark.parametrize("n", [1, 7, 1000, 10_000])
def test_unrolled_resamplers_give_blackjax_s_ancestors(name, n):
    """The library's systematic and stratified resamplers (blackjax's, with the binary search
    unrolled for speed on a GPU) draw exactly blackjax's ancestors: the same key and weights
    give the same indices, for spread, peaked and partly zero weights."""
    import blackjax.smc.resampling as bjr

    ours, theirs = RESAMPLERS[name], getattr(bjr, name)
    keys = jax.random.split(jax.random.key(3), 8)
    for i, key in enumerate(keys):
        k_w, k_r = jax.random.split(key)
        a = jax.random.normal(k_w, (n,)) * (0.1, 1.0, 5.0, 30.0)[i % 4]
        if i >= 4:  # some weights exactly zero
            a = jnp.where(jnp.arange(n) % 3 == 1, -jnp.inf, a)
        w = jax.nn.softmax(a)
        for m in {n, 2 * n + 1}:
            np.testing.assert_array_equal(
                np.asarray(jax.jit(ours, static_argnums=2)(k_r, w, m)),
                np.asarray(jax.jit(theirs, static_argnums=2)(k_r, w, m)),
            )


@pytest.mark.parametrize("method", METHODS)
def test_resampler_is_unbiased(method):
    """E[count_i] = N p_i, checked over M independent draws.

    Tolerance: z_bound(10) standard errors of the mean count (10 categories; tests/_stats.py),
    with the multinomial (binomial) variance N p_i (1 - p_i) per draw, an upper bound for
    systematic, stratified and residual resampling which only reduce it.
    """
    n, m = 10, 20_000
    p = np.array([0.30, 0.01, 0.002, 0.15, 0.0, 0.25, 0.05, 0.088, 0.1, 0.05])
    p = p / p.sum()
    log_w = jnp.log(jnp.asarray(p, jnp.float32)) + 3.0  # unnormalised on purpose
    keys = jax.random.split(jax.random.key(1), m)
    with promotion_for(method):
        idx = np.asarray(jax.jit(jax.vmap(lambda k: resample_indices(k, log_w, method)))(keys))
    assert idx.shape == (m, n)
    assert idx.min() >= 0 and idx.max() < n
    counts = np.stack([np.bincount(row, minlength=n) for row in idx])
    assert np.all(counts.sum(1) == n)
    assert np.all(counts[:, 4] == 0)  # a zero weight is never drawn
    mean = counts.mean(0)
    se_ = np.sqrt(n * p * (1 - p) / m)
    assert np.all(np.abs(mean - n * p) <= z_bound(10) * se_ + 1e-12), (mean, n * p)


@pytest.mark.parametrize("method", METHODS)
def test_resampler_degenerate_and_shift_invariant(method, key):
    n = 16
    one_hot = jnp.full(n, -jnp.inf).at[5].set(0.0)
    with promotion_for(method):
        np.testing.assert_array_equal(np.asarray(resample_indices(key, one_hot, method)), 5)
        a = jax.random.normal(key, (n,))
        i1 = resample_indices(jax.random.key(7), a, method)
        i2 = resample_indices(jax.random.key(7), a + 50.0, method)
    np.testing.assert_array_equal(np.asarray(i1), np.asarray(i2))


@pytest.mark.parametrize("method", ["systematic", "stratified", "residual"])
def test_low_variance_resamplers_keep_uniform_populations(method, key):
    """With equal weights the low-variance schemes keep every particle exactly once."""
    n = 32
    with promotion_for(method):
        idx = np.asarray(resample_indices(key, jnp.zeros(n), method))
    np.testing.assert_array_equal(np.sort(idx), np.arange(n))


# --------------------------------------------------------------------------- ESS
def test_ess_fraction_matches_formula(key):
    a = 3.0 * jax.random.normal(key, (200,)) + 1000.0  # large offset: must be stable
    w = np.exp(np.asarray(a, np.float64) - float(a.max()))
    expected = w.mean() ** 2 / np.mean(w**2)
    # float32 at |a| ~ 1000 has an ulp of 6e-5, so the subtraction of the maximum inside
    # log-sum-exp leaves relative errors of a few 1e-5 in the weights: rtol 5e-4.
    np.testing.assert_allclose(float(ess_fraction(a)), expected, rtol=5e-4)
    np.testing.assert_allclose(float(ess_fraction(a - 1000.0)), expected, rtol=1e-5)
    np.testing.assert_allclose(float(ess_fraction(jnp.zeros(50))), 1.0, rtol=1e-6)
    one_hot = jnp.full(50, -jnp.inf).at[3].set(0.0)
    np.testing.assert_allclose(float(ess_fraction(one_hot)), 1 / 50, rtol=1e-5)
    assert 0.0 < float(ess_fraction(a)) <= 1.0


def test_log_mean_exp(key):
    a = 5.0 * jax.random.normal(key, (100,)) - 500.0
    a64 = np.asarray(a, np.float64)
    ref = a64.max() + math.log(np.mean(np.exp(a64 - a64.max())))
    np.testing.assert_allclose(float(log_mean_exp(a)), ref, rtol=1e-6)


# --------------------------------------------------------------------------- schedules
def _decisions(schedule, steps, ess):
    f = jax.jit(jax.vmap(schedule.should_resample))
    return np.asarray(f(jnp.asarray(steps), jnp.asarray(ess, jnp.float32)))


def test_ess_resampling_threshold():
    s = ESSResampling(threshold=0.5)
    ess = [0.1, 0.49, 0.5, 0.51, 1.0]
    np.testing.assert_array_equal(_decisions(s, [3] * 5, ess), [True, True, False, False, False])
    s = ESSResampling(threshold=1.0)
    np.testing.assert_array_equal(_decisions(s, [0, 1], [0.999, 1.0]), [True, False])


def test_ess_resampling_start():
    s = ESSResampling(threshold=0.5, start=10)
    steps = [0, 9, 10, 11, 100]
    np.testing.assert_array_equal(_decisions(s, steps, [0.1] * 5), [False, False, True, True, True])
    np.testing.assert_array_equal(_decisions(s, steps, [0.9] * 5), [False] * 5)


def test_off_until_schedule():
    s = ESSResampling(threshold=off_until(100, 0.5))
    steps = [0, 50, 99, 100, 101, 1000]
    np.testing.assert_array_equal(
        _decisions(s, steps, [0.01] * 6), [False, False, False, True, True, True]
    )
    np.testing.assert_array_equal(_decisions(s, steps, [0.6] * 6), [False] * 6)
    # A lower threshold before step0 instead of none.
    s = ESSResampling(threshold=off_until(100, 0.5, before=0.02))
    np.testing.assert_array_equal(
        _decisions(s, steps, [0.01] * 6), [True, True, True, True, True, True]
    )
    np.testing.assert_array_equal(
        _decisions(s, steps, [0.1] * 6), [False, False, False, True, True, True]
    )
    # Any traced function of the step works as a threshold.
    s = ESSResampling(threshold=lambda k: jnp.where(k % 2 == 0, 0.5, 0.0))
    np.testing.assert_array_equal(_decisions(s, [0, 1, 2, 3], [0.3] * 4), [True, False] * 2)


def test_interval_resampling():
    steps = np.arange(12)
    s = IntervalResampling(every=3)
    np.testing.assert_array_equal(_decisions(s, steps, [1.0] * 12), steps % 3 == 0)
    s = IntervalResampling(every=4, start=2)
    expected = (steps >= 2) & ((steps - 2) % 4 == 0)
    np.testing.assert_array_equal(_decisions(s, steps, [0.01] * 12), expected)
    np.testing.assert_array_equal(expected.nonzero()[0], [2, 6, 10])


def test_no_resampling():
    np.testing.assert_array_equal(_decisions(NoResampling(), [0, 5, 50], [0.0, 0.01, 1e-9]), False)


@pytest.mark.parametrize("method", METHODS)
def test_maybe_resample_indices_resamples_only_when_asked(method, key):
    """``do`` false: identity, weights and anchor unchanged. ``do`` true: the resampler's
    ancestors for the same key, zero weights, and the anchor moved by log mean exp(a), so that
    ``anchor + log_mean_exp(a)`` (the log Z estimate) is the same before and after."""
    k1, k2 = jax.random.split(key)
    a = jax.random.normal(k1, (64,))
    anchor = jnp.asarray(1.5)
    f = jax.jit(maybe_resample_indices, static_argnums=4)
    with promotion_for(method):
        idx, a_out, anchor_out = f(jnp.asarray(False), k2, a, anchor, method)
        np.testing.assert_array_equal(idx, np.arange(64))
        np.testing.assert_array_equal(a_out, a)
        assert float(anchor_out) == 1.5
        idx, a_out, anchor_out = f(jnp.asarray(True), k2, a, anchor, method)
        np.testing.assert_array_equal(idx, resample_indices(k2, a, method))
    np.testing.assert_array_equal(a_out, np.zeros(64))
    np.testing.assert_allclose(
        float(anchor_out + log_mean_exp(a_out)), float(anchor + log_mean_exp(a)), rtol=1e-6
    )


def test_family_wise_bound_against_the_normal_table():
    """``z_bound`` against tabulated normal quantiles (two-sided 1e-3: 3.2905; 1e-3 over 15
    comparisons, i.e. 3.33e-5 two-sided: 3.9875), and its family-wise rate by simulation."""
    assert abs(z_bound(1) - 3.2905) < 1e-4
    assert abs(z_bound(15) - 3.9875) < 1e-3
    assert abs(z_bound(10, budget=0.1) - 2.5758) < 1e-4  # 0.01 two-sided
    # 10 comparisons at budget 0.1: the chance that any |N(0,1)| exceeds the bound is <= 0.1
    # (about 0.0956 for independent ones). 20000 families: SE 0.0021.
    z = np.random.default_rng(0).standard_normal((20000, 10))
    rate = np.mean(np.any(np.abs(z) > z_bound(10, budget=0.1), axis=1))
    assert abs(rate - 0.0956) < 4 * 0.0021
