"""to_arviz output read by ArviZ: ESS of the equal-weight draws, R-hat of independent runs,
device statistics against ArviZ's, and ArviZ's summary and plots on every group."""

import dataclasses
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import smc_ebm as se
from smc_ebm.diagnostics import _arviz
from smc_ebm.smc._resampling import resample_indices


def _walkers(x, log_weights):
    """A fit-result-like object: only walkers, weights and a one-record history."""
    return types.SimpleNamespace(
        walkers=x, log_weights=log_weights, history={"step": np.zeros(1, int)}
    )


def _ess(draws):
    return float(_arviz.arviz().ess(np.asarray(draws)[None], method="bulk"))


@pytest.mark.parametrize("spread", [0.0, 1.0])
def test_posterior_ess_reads_the_distinct_draws_not_the_slot_order(spread):
    """Walkers whose slot order follows their position, as a genealogy leaves them.

    400 i.i.d. N(0, 1) draws sorted by value. Resampled without permutation (systematic
    ancestors are sorted) the copies keep that order and ArviZ's ESS collapses; the
    posterior of to_arviz is permuted. With equal weights every walker is kept once, so
    its ESS must be about the 400 distinct draws. With unequal weights the ESS of the
    permuted copies is about the number of draws, at least the number of distinct ones
    (it does not see the duplicates: the weights' ESS is in sample_stats).
    """
    n = 400
    rng = np.random.default_rng(0)
    x = np.sort(rng.normal(size=n)).astype(np.float32)[:, None]
    a = (spread * rng.normal(size=n)).astype(np.float32)
    idata = se.diagnostics.to_arviz(_walkers(x, a), key=jax.random.key(1))
    post = _arviz.group(idata, "posterior")["x"].values[0, :, 0]
    stats = _arviz.group(idata, "sample_stats")
    distinct = len(np.unique(stats["ancestor"].values))
    sorted_copies = x[np.asarray(resample_indices(jax.random.key(1), jnp.asarray(a))), 0]
    ess_perm, ess_sorted = _ess(post), _ess(sorted_copies)
    print(
        f"spread {spread}: distinct {distinct}, ESS sorted {ess_sorted:.0f}, "
        f"permuted {ess_perm:.0f}, weights {float(stats['ess_abs'][0]):.0f}"
    )
    assert ess_sorted < 0.05 * distinct
    if spread == 0.0:
        assert distinct == n
        assert 0.8 * n < ess_perm < 1.25 * n
    else:
        assert distinct < 0.8 * n
        assert 0.9 * distinct < ess_perm < 1.4 * n
    np.testing.assert_allclose(
        float(stats["ess_abs"][0]), float(se.smc.ess_fraction(jnp.asarray(a))) * n, rtol=1e-4
    )


# ----------------------------------------------------------------------------- sample results
@pytest.fixture(scope="module")
def sampled():
    """4 independent annealing runs of 300 walkers to a mixture with an exact log Z."""
    gmm = se.energies.GaussianMixture(
        means=jnp.array([[-1.5, 0.0], [1.5, 0.5]]), logits=jnp.array([0.0, 0.7])
    )
    out = se.sample(
        gmm, key=jax.random.key(0), num_walkers=1200, num_steps=50, num_runs=4, step_size=0.2
    )
    return gmm, out


def test_sample_result_chains_are_the_runs(sampled):
    gmm, out = sampled
    idata = out.to_arviz()
    post = _arviz.group(idata, "posterior")
    assert post["x"].shape == (4, 300, 2)
    stats = _arviz.group(idata, "sample_stats")
    np.testing.assert_array_equal(stats["log_marginal_likelihood"], out.log_Z_runs)
    np.testing.assert_array_equal(stats["num_resamplings"], out.num_resamplings)
    assert stats.attrs["acceptance"] == out.acceptance
    # Each chain copies its own run's walkers.
    walk = _arviz.group(idata, "walkers")
    np.testing.assert_array_equal(walk["x"].values.reshape(-1, 2), out.samples)
    anc = stats["ancestor"].values
    np.testing.assert_array_equal(post["x"].values, walk["x"].values[np.arange(4)[:, None], anc])
    np.testing.assert_allclose(walk["weight"].sum("draw"), 1.0, rtol=1e-5)
    # Each run's log Z estimates the exact one.
    exact = float(gmm.log_partition())
    assert np.all(np.abs(out.log_Z_runs - exact) < 0.3), (out.log_Z_runs, exact)


def test_rhat_of_independent_runs_and_of_stuck_ones(sampled):
    """Exact independent runs agree (R-hat < 1.01); a run moved 6 units away does not."""
    _, out = sampled
    az = _arviz.arviz()
    rhat = az.rhat(_arviz.group(out.to_arviz(), "posterior"))["x"].values
    x = out.samples.copy()
    x[:300, 0] += 6.0  # run 0 stuck in a region the other runs never visit
    stuck = dataclasses.replace(out, samples=x)
    rhat_stuck = az.rhat(_arviz.group(stuck.to_arviz(), "posterior"))["x"].values
    print(f"R-hat of 4 exact runs {rhat}; with one stuck run {rhat_stuck}")
    assert np.max(rhat) < 1.01
    assert rhat_stuck[0] > 1.1 and rhat_stuck[1] < 1.05


def test_device_statistics_equal_arviz_on_to_arviz_output(sampled):
    _, out = sampled
    az = _arviz.arviz()
    post = _arviz.group(out.to_arviz(), "posterior")
    got = jax.device_get(se.diagnostics.device_summary_stats(jnp.asarray(post["x"].values)))
    ref = {
        "r_hat": az.rhat(post)["x"],
        "ess_bulk": az.ess(post, method="bulk")["x"],
        # The 5% and 95% quantiles (Vehtari et al. 2021), ArviZ 0.x's default tail; ArviZ 1.x
        # defaults to its rcParams["stats.ci_prob"] (0.89: the 11% and 89% quantiles).
        "ess_tail": az.ess(post, method="tail", prob=0.95)["x"],
        "mcse_mean": az.mcse(post, method="mean")["x"],
        "mcse_sd": az.mcse(post, method="sd")["x"],
    }
    for name, value in ref.items():
        np.testing.assert_allclose(got[name], value.values, rtol=1e-3, err_msg=name)


def _run_arviz_on_every_group(idata):
    import matplotlib.pyplot as plt

    az = _arviz.arviz()
    for name in _arviz.group_names(idata):
        ds = _arviz.group(idata, name)
        assert {"chain", "draw"} <= set(ds.dims), name
        table = az.summary(ds, kind="stats")
        assert len(table) >= 1, name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one chain: R-hat undefined, said by a warning
            az.summary(ds)
            az.plot_trace(ds)
            az.plot_rank(ds)
        plt.close("all")


def test_arviz_runs_on_every_group_of_a_sample_result(sampled):
    _, out = sampled
    idata = out.to_arviz()
    assert set(_arviz.group_names(idata)) == {"posterior", "sample_stats", "walkers"}
    _run_arviz_on_every_group(idata)


def test_one_population_is_one_chain_and_summarises_without_warnings():
    rng = np.random.default_rng(0)
    res = _walkers(rng.normal(size=(64, 2)).astype(np.float32), np.zeros(64, np.float32))
    idata = se.diagnostics.to_arviz(res)
    post = _arviz.group(idata, "posterior")
    assert post.sizes["chain"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = _arviz.arviz().summary(idata, kind="stats")
    assert list(table.index) == ["x[0]", "x[1]"]


def test_strategy_attribute_names_wrappers():
    inner = se.Jarzynski(8, 0.1)
    assert se.diagnostics.strategy_name(inner) == "Jarzynski"
    wrapped = se.strategies.with_observers(inner, 4)
    assert se.diagnostics.strategy_name(wrapped) == "WithObservers(Jarzynski)"
