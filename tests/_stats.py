"""Monte Carlo helpers shared by the statistical tests (numpy, float64)."""

from statistics import NormalDist

import numpy as np

# The false-alarm probability allowed per test: all of a test's comparisons together.
FAMILY_BUDGET = 1e-3


def z_bound(comparisons, budget=FAMILY_BUDGET):
    """Standard errors allowed per comparison when a test makes ``comparisons`` of them.

    Bonferroni: each comparison is two-sided at ``budget / comparisons``, so the chance that
    a correct estimator fails any of them is at most ``budget``:
    ``z = Phi^-1(1 - budget / (2 m))`` (1 comparison: 3.29; 15: 3.99; 60: 4.31).
    """
    return NormalDist().inv_cdf(1.0 - budget / (2.0 * comparisons))


def softmax(a):
    a = np.asarray(a, np.float64)
    w = np.exp(a - a.max(axis=-1, keepdims=True))
    return w / w.sum(axis=-1, keepdims=True)


def weighted_mean_and_se(f, log_weights):
    """Self-normalised estimate sum_i p_i f_i and its delta-method standard error.

    For N independent weighted walkers, Var(sum_i p_i f_i) ~= sum_i p_i^2 (f_i - mean)^2
    (first-order expansion of the ratio estimator). ``f`` is ``(N,)`` or ``(N, m)``.
    """
    p = softmax(log_weights)
    f = np.asarray(f, np.float64)
    if f.ndim == 1:
        f = f[:, None]
    m = p @ f
    se = np.sqrt((p**2) @ (f - m) ** 2)
    return m, se


def log_mean_exp_and_se(log_weights):
    """log mean e^A and its delta-method standard error sqrt(sum p^2 - 1/N).

    Var(mean w) / (mean w)^2 ~= (mean w^2 / (mean w)^2 - 1) / N = sum_i p_i^2 - 1/N.
    """
    a = np.asarray(log_weights, np.float64)
    n = a.shape[0]
    top = a.max()
    lme = top + np.log(np.mean(np.exp(a - top)))
    p = softmax(a)
    return lme, np.sqrt(max(np.sum(p**2) - 1.0 / n, 0.0))


def promotion_for(method):
    """Dtype-promotion context for a resampling method.

    blackjax's residual resampler (blackjax/smc/resampling.py, ``residual``: ``N_sample_weights
    - integer_part``) subtracts an int32 array from a float32 one, which strict promotion
    rejects; everything else runs under the strict setting of conftest.py.
    """
    import jax

    return jax.numpy_dtype_promotion("standard" if method == "residual" else "strict")
