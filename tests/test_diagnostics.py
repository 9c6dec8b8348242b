"""Diagnostics: to_arviz groups/dims/coords, R-hat of chains, FitResult.summary, plots."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _stats import z_bound

import smc_ebm as se
from smc_ebm.diagnostics import _arviz
from smc_ebm.energies import Gaussian, GaussianMixture


def _fake_result(n=32, d=3, t=5):
    rng = np.random.default_rng(0)
    hist = {
        "step": 10 * np.arange(t),
        "ess": rng.uniform(0.5, 1.0, t),
        "log_Z": rng.normal(size=t),
        "cross_entropy": rng.normal(size=t),
        "resampled": rng.integers(0, 2, t),
        "loss": rng.normal(size=t),
        "acceptance": np.ones(t),
        "kl": rng.uniform(size=t),
    }
    return types.SimpleNamespace(
        walkers=rng.normal(size=(n, d)).astype(np.float32),
        log_weights=rng.normal(size=n).astype(np.float32),
        history=hist,
        steps=50,
        log_Z=1.0,
        cross_entropy=2.0,
        wall_time=0.5,
    )


def _check_groups(idata, res, traces):
    n, d = res.walkers.shape
    assert set(_arviz.group_names(idata)) == {
        "posterior",
        "sample_stats",
        "walkers",
        "history",
        "training_traces",
    }
    post = _arviz.group(idata, "posterior")
    assert post["x"].dims == ("chain", "draw", "x_dim")
    assert post["x"].shape == (1, n, d)
    np.testing.assert_array_equal(post["x_dim"], np.arange(d))
    # The equal-weight set is made of walkers.
    rows = {tuple(r) for r in res.walkers.tolist()}
    assert all(tuple(r) in rows for r in post["x"].values[0].tolist())
    walk = _arviz.group(idata, "walkers")
    assert walk["x"].dims == ("chain", "draw", "x_dim")
    np.testing.assert_array_equal(walk["x"].values[0], res.walkers)
    np.testing.assert_array_equal(walk["log_weight"].values[0], res.log_weights)
    np.testing.assert_allclose(float(walk["weight"].sum()), 1.0, rtol=1e-5)
    stats = _arviz.group(idata, "sample_stats")
    anc = stats["ancestor"].values[0]
    np.testing.assert_array_equal(post["x"].values[0], res.walkers[anc])
    np.testing.assert_allclose(float(stats["log_marginal_likelihood"][0]), res.log_Z)
    hist = _arviz.group(idata, "history")
    assert hist.attrs["stationary"] == "false"
    np.testing.assert_array_equal(hist["draw"], res.history["step"])
    for name, col in res.history.items():
        if name != "step":
            assert hist[name].dims == ("chain", "draw")
            np.testing.assert_array_equal(hist[name].values[0], col)
    np.testing.assert_allclose(hist["ess_abs"].values[0], n * res.history["ess"], rtol=1e-6)
    tr = _arviz.group(idata, "training_traces")
    assert tr.attrs["stationary"] == "false" and "Not stationary" in tr.attrs["note"]
    assert tr["x"].dims == ("chain", "draw", "x_dim")
    np.testing.assert_array_equal(tr["chain"], traces["walker"])
    np.testing.assert_array_equal(tr["draw"], traces["step"])
    np.testing.assert_array_equal(tr["x"].values[1, 2], traces["position"][2, 1])
    assert tr["log_weight"].dims == ("chain", "draw")


@pytest.fixture
def traces():
    rng = np.random.default_rng(1)
    return {
        "position": rng.normal(size=(4, 2, 3)),
        "step": np.array([0, 10, 20, 30]),
        "walker": np.array([5, 7]),
        "log_weights": rng.normal(size=(4, 2)),
    }


def test_to_arviz_inference_data(traces):
    res = _fake_result()
    idata = se.diagnostics.to_arviz(res, traces=traces)
    if se.diagnostics.arviz_major() == 0:
        import arviz as az

        assert isinstance(idata, az.InferenceData)
    _check_groups(idata, res, traces)


def test_to_arviz_datatree_layout(monkeypatch, traces):
    """The ArviZ 1.x container (xarray.DataTree), built with the installed xarray."""
    import xarray as xr

    if not hasattr(xr, "DataTree"):
        pytest.skip("xarray without DataTree")
    monkeypatch.setattr(_arviz, "arviz_major", lambda: 1)
    res = _fake_result()
    tree = se.diagnostics.to_arviz(res, traces=traces)
    assert isinstance(tree, xr.DataTree)
    assert tree.attrs["inference_library"] == "smc_ebm"
    _check_groups(tree, res, traces)
    # ArviZ statistics accept the groups of the tree as datasets.
    post = _arviz.group(tree, "training_traces")[["x"]]
    assert se.diagnostics.summary_table(post).shape == (3, 7)


def test_to_arviz_rejects_bad_traces():
    res = _fake_result()
    with pytest.raises(ValueError, match="traces"):
        se.diagnostics.to_arviz(res, traces={"position": np.zeros((4, 2, 5))})


# ----------------------------------------------------------------------------- R-hat
def test_rhat_of_independent_gaussian_chains_is_near_one():
    """128 MALA chains from exact N(0, I_2) draws: R-hat below 1.01 for x and U.

    At stationarity rank-normalised split R-hat exceeds 1 by O(1 / sqrt(chains * ESS per
    chain)) ~ 1e-3 here, so 1.01 is a wide margin (Vehtari et al., 2021, use 1.01).
    """
    target = Gaussian.standard(2)
    diag = se.diagnose(
        target,
        key=jax.random.key(0),
        init=target,
        num_chains=128,
        num_steps=1000,
        step_size=0.5,
    )
    assert diag.max_rhat < 1.01, diag.table
    assert diag.min_ess_bulk > 1000
    assert 0.6 < diag.acceptance < 1.0
    assert list(diag.table.index) == ["x[0]", "x[1]", "U"]
    post = _arviz.group(diag.idata, "posterior")
    assert post["x"].shape == (128, 1000, 2)
    # The chains sample the target: mean 0 and sd 1 within z MCSE (ArviZ's, from the
    # autocorrelation-corrected ESS); 2 means + 2 sds = 4 comparisons.
    z = z_bound(4)
    t = diag.table
    assert np.all(
        np.abs(t.loc[["x[0]", "x[1]"], "mean"]) < z * t.loc[["x[0]", "x[1]"], "mcse_mean"]
    )
    assert np.all(
        np.abs(t.loc[["x[0]", "x[1]"], "sd"] - 1) < z * t.loc[["x[0]", "x[1]"], "mcse_sd"]
    )


def test_rhat_of_chains_stuck_in_separate_modes_is_large():
    """64 chains in each mode of a mixture with modes 12 sigma apart never cross.

    The ranks then separate the two groups of chains completely: the rank-normalised split
    R-hat of x[0] is about sqrt(1 + B/W) with B/W = E[z|z>0]^2 / Var(z|z>0) = 0.64/0.36,
    i.e. about 1.66, whatever the chain length.
    """
    gmm = GaussianMixture(means=jnp.array([[-6.0, 0.0], [6.0, 0.0]]), logits=jnp.zeros(2))
    init = jnp.concatenate([jnp.tile(gmm.means[:1], (64, 1)), jnp.tile(gmm.means[1:], (64, 1))])
    diag = se.diagnose(gmm, key=jax.random.key(1), init=init, num_chains=128, num_steps=400)
    assert diag.table.loc["x[0]", "r_hat"] > 1.5
    assert diag.max_rhat > 1.5
    assert diag.table.loc["x[1]", "r_hat"] < 1.05  # the shared coordinate mixes


def test_diagnose_rejects_bad_input():
    g = Gaussian.standard(2)
    with pytest.raises(ValueError, match="initial points"):
        se.diagnose(g, key=jax.random.key(0))
    with pytest.raises(ValueError, match="num_chains"):
        se.diagnose(g, key=jax.random.key(0), init=g, num_chains=1)
    with pytest.raises(ValueError, match="kernel"):
        se.diagnose(g, key=jax.random.key(0), init=g, kernel="hmc")
    with pytest.raises(ValueError, match="init must be"):
        se.diagnose(g, key=jax.random.key(0), init=np.zeros((3, 2)), num_chains=4)
    with pytest.raises(ValueError, match="thin"):
        se.diagnose(g, key=jax.random.key(0), init=g, num_steps=10, thin=3)


# ----------------------------------------------------------------------------- FitResult
@pytest.fixture(scope="module")
def fitted():
    data = se.datasets.two_mode_teacher(jax.random.key(0), n=400, dim=2, a=-3.0, b=3.0)
    energy = GaussianMixture.init(jax.random.key(1), 2, 2, scale=0.5)
    res = se.fit(
        energy,
        data.samples,
        strategy=se.Jarzynski(128, 0.1, resampling=se.ESSResampling(0.9)),
        optimizer=optax.sgd(0.05),
        num_steps=60,
        key=jax.random.key(2),
        metrics={"w0": se.metrics.mode_weight(0)},
        record_every=5,
        chunk_size=60,
        progress=False,
        trace_walkers=6,
    )
    return data, res


def test_diagnose_says_when_chains_diverge_or_never_move():
    """ULA at h = 1e3 on a unit-scale mixture: non-finite chains raise FloatingPointError
    (they gave a NaN R-hat and numpy's warnings). MALA at h = 1e3 never accepts: a warning
    names it. Identical constant chains: the NaN R-hat is named, max_rhat ignores it."""
    import warnings

    e = GaussianMixture.init(jax.random.key(1), 2, 2, scale=1.0)
    x0 = e.sample(jax.random.key(5), 8)
    kw = {"num_chains": 8, "num_steps": 100, "init": x0}
    with pytest.raises(FloatingPointError, match=r"8 of 8 chains .* non-finite"):
        se.diagnose(e, key=jax.random.key(0), kernel="ula", step_size=1e3, **kw)
    with pytest.warns(RuntimeWarning, match="accepted 0.00% of the time") as rec:
        d = se.diagnose(e, key=jax.random.key(0), kernel="mala", step_size=1e3, **kw)
    assert d.acceptance == 0.0 and d.max_rhat > 1e3
    assert not any("undefined" in str(w.message) for w in rec)
    same = jnp.broadcast_to(x0[:1], x0.shape)
    with pytest.warns(RuntimeWarning, match=r"R-hat is undefined \(NaN\) for x\[0\]"):
        d = se.diagnose(
            e, key=jax.random.key(0), kernel="mala", step_size=1e3, **{**kw, "init": same}
        )
    assert np.isnan(d.max_rhat)
    with warnings.catch_warnings():  # a healthy run: no word
        warnings.simplefilter("error")
        d = se.diagnose(e, key=jax.random.key(0), kernel="mala", step_size=0.3, **kw)
    assert np.isfinite(d.max_rhat) and d.acceptance > 0.3


def test_fit_records_walker_traces(fitted):
    data, res = fitted
    tr = res.traces
    assert tr["position"].shape == (12, 6, 2) and tr["log_weights"].shape == (12, 6)
    np.testing.assert_array_equal(tr["step"], res.history["step"])
    np.testing.assert_array_equal(tr["walker"], np.arange(6))
    # The per-step keys do not depend on the chunking, so neither do the traces.
    res2 = se.fit(
        res.energy.__class__.init(jax.random.key(1), 2, 2, scale=0.5),
        data.samples,
        strategy=res.strategy,
        optimizer=optax.sgd(0.05),
        num_steps=60,
        key=jax.random.key(2),
        record_every=5,
        chunk_size=20,
        progress=False,
        trace_walkers=6,
    )
    np.testing.assert_allclose(res2.traces["position"], tr["position"], rtol=1e-5, atol=1e-5)
    group = _arviz.group(res.to_arviz(), "training_traces")
    assert group["x"].shape == (6, 12, 2)  # (chain = walker slot, draw = record, x_dim)
    with pytest.raises(ValueError, match="trace_walkers"):
        se.fit(
            res.energy,
            data.samples,
            strategy=res.strategy,
            optimizer=optax.sgd(0.05),
            num_steps=1,
            key=jax.random.key(0),
            progress=False,
            trace_walkers=-1,
        )


def test_fit_result_to_arviz_and_summary(fitted):
    _, res = fitted
    idata = res.to_arviz()
    hist = _arviz.group(idata, "history")
    assert set(hist.data_vars) == set(res.history) - {"step"} | {"ess_abs"}
    assert hist["ess"].shape == (1, 12)
    assert idata.posterior.attrs["strategy"] == "Jarzynski"
    s = res.summary()
    assert s.strategy == "Jarzynski" and s.steps == 60
    assert s.num_resamplings == int(np.sum(res.history["resampled"]))
    assert s.min_ess == pytest.approx(float(np.min(res.history["ess"])))
    assert s.log_Z == res.log_Z and s.wall_time == res.wall_time
    assert set(s.metrics) == {"w0"}
    text = str(s)
    for word in ("steps", "wall time", "final ESS", "resamplings", "log Z", "w0"):
        assert word in text


def test_diagnose_from_fit_result(fitted):
    _, res = fitted
    diag = se.diagnose(res, key=jax.random.key(3), num_chains=16, num_steps=40, thin=2)
    assert diag.step_size == 0.1 and diag.num_draws == 20
    post = _arviz.group(diag.idata, "posterior")
    assert post["x"].shape == (16, 20, 2)
    np.testing.assert_array_equal(post["draw"], 1 + 2 * np.arange(20))
    assert "max R-hat" in str(diag)


def test_arviz_runs_on_every_group_of_a_fit_result(fitted):
    from test_arviz_output import _run_arviz_on_every_group

    _, res = fitted
    idata = res.to_arviz()
    assert set(_arviz.group_names(idata)) == {
        "posterior",
        "sample_stats",
        "walkers",
        "history",
        "training_traces",
    }
    _run_arviz_on_every_group(idata)


def test_plots_go_through_arviz(fitted, tmp_path):
    from matplotlib.figure import Figure

    _, res = fitted
    # The arguments of test_diagnose_from_fit_result: its compiled chains are reused.
    diag = se.diagnose(res, key=jax.random.key(3), num_chains=16, num_steps=40, thin=2)
    for fig in (diag.plot_trace(), diag.plot_rank(), diag.plot_ess(), diag.plot_pair()):
        assert isinstance(fig, Figure) and fig.axes
    assert len(diag.plot_trace(var="U").axes) == 2  # ArviZ's density and trace panels
    fig = se.plots.plot_trace(res.to_arviz(), group="training_traces", path=tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 0 and "0" in fig.axes[1].get_title()
