"""Device diagnostics: R-hat, bulk/tail ESS and MCSE in jax.numpy against ArviZ.

The (4, 500) cases are stacked along a trailing event axis and computed in one call, which
is also the test of the vectorisation over event dimensions (and keeps compilations few).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import smc_ebm as se
from smc_ebm.diagnostics import _arviz

STATS = ("r_hat", "ess_bulk", "ess_tail", "mcse_mean", "mcse_sd")
FUNCTIONS = {
    "r_hat": se.diagnostics.device_rhat,
    "ess_bulk": se.diagnostics.device_ess_bulk,
    "ess_tail": se.diagnostics.device_ess_tail,
    "mcse_mean": se.diagnostics.device_mcse_mean,
    "mcse_sd": se.diagnostics.device_mcse_sd,
}
SUMMARY = se.diagnostics.device_summary_stats


def _ar1(rng, shape, phi):
    """Stationary AR(1) chains along axis 1: autocorrelation phi**lag."""
    e = rng.normal(size=shape)
    x = np.empty(shape)
    x[:, 0] = e[:, 0] / np.sqrt(1.0 - phi**2)
    for t in range(1, shape[1]):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x


def _cases():
    rng = np.random.default_rng(0)
    mixed = np.stack(
        [rng.normal(size=(4, 500)), _ar1(rng, (4, 500), 0.99), rng.standard_cauchy((4, 500))],
        axis=-1,
    )
    return {
        "iid": rng.normal(size=(4, 500)),
        "ar1": _ar1(rng, (4, 500), 0.95),
        "stuck": rng.normal(size=(4, 500)) + np.array([0.0, 0.0, 0.0, 3.0])[:, None],
        "ties": rng.integers(0, 4, size=(4, 500)).astype(float),
        "rare_indicator": (rng.random(size=(4, 500)) < 0.05).astype(float),
        "constant": np.ones((4, 500)),
        "iid_ar1_cauchy": mixed,
    }


CASES = _cases()
_SIZES = {name: int(np.prod(x.shape[2:])) for name, x in CASES.items()}
SLICES = {
    name: slice(end - k, end)
    for (name, k), end in zip(_SIZES.items(), np.cumsum(list(_SIZES.values())), strict=True)
}
BATCH = np.concatenate([x.reshape(4, 500, -1) for x in CASES.values()], axis=-1)  # (4, 500, 9)
ODD = _ar1(np.random.default_rng(1), (3, 101, 2), 0.5)  # the middle draw is dropped
ONE_CHAIN = np.random.default_rng(3).normal(size=(1, 9))  # R-hat undefined, ESS defined


def _reference(x):
    """ArviZ's statistics of x (chain, draw, *event), of shape event."""
    x = np.asarray(x, dtype=float)
    dims = ("chain", "draw", *(f"d{i}" for i in range(x.ndim - 2)))
    ds = _arviz.xarray().Dataset({"x": (dims, x)})
    results = {
        "r_hat": _arviz.arviz().rhat(ds),
        "ess_bulk": _arviz.ess(ds, "bulk"),
        "ess_tail": _arviz.ess(ds, "tail"),
        "mcse_mean": _arviz.mcse(ds, "mean"),
        "mcse_sd": _arviz.mcse(ds, "sd"),
    }
    return {k: np.asarray(v["x"], dtype=float) for k, v in results.items()}


def _on_device(x):
    return {k: np.asarray(v, dtype=float) for k, v in SUMMARY(jnp.asarray(x)).items()}


def _unbatch(stats):
    """Statistics of BATCH split back into the cases."""
    return {
        name: {k: v[..., s].reshape(CASES[name].shape[2:]) for k, v in stats.items()}
        for name, s in SLICES.items()
    }


@pytest.fixture(scope="module")
def references():
    with np.errstate(invalid="ignore", divide="ignore"):
        refs = {name: _reference(x) for name, x in CASES.items()}
        refs |= {"odd": _reference(ODD), "one_chain": _reference(ONE_CHAIN)}
    return refs


@pytest.fixture(scope="module")
def device32():
    """float32 results: the batch (one call) split back into the cases, and the odd case."""
    return _unbatch(_on_device(BATCH)) | {"odd": _on_device(ODD)}


def _errors(got, ref):
    """Largest absolute and relative differences; NaN must match NaN."""
    got, ref = np.asarray(got, dtype=float), np.asarray(ref, dtype=float)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    ok = ~np.isnan(ref)
    diff = np.abs(got[ok] - ref[ok])
    rel = diff / np.maximum(np.abs(ref[ok]), 1e-12)
    return diff.max(initial=0.0), rel.max(initial=0.0)


@pytest.mark.parametrize("name", [*CASES, "odd"])
def test_float32_matches_arviz(name, references, device32):
    """float32 on the device against ArviZ in float64 on the host, to 1e-3."""
    got, ref = device32[name], references[name]
    for stat in STATS:  # NaN (R-hat of constant draws) must be NaN in both
        np.testing.assert_allclose(got[stat], ref[stat], rtol=1e-3, atol=1e-6, err_msg=stat)
    x = (CASES.get(name, ODD)).reshape(-1, *got["mean"].shape)
    np.testing.assert_allclose(got["mean"], x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["sd"], x.std(0, ddof=1), rtol=1e-5, atol=1e-6)


def _x64():
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # older jax

    return enable_x64()


def test_float64_matches_arviz_to_rounding(references):
    with _x64():
        got = _unbatch(_on_device(BATCH)) | {"one_chain": _on_device(ONE_CHAIN)}
        assert SUMMARY(jnp.asarray(BATCH))["r_hat"].dtype == jnp.float64
    worst = max(_errors(got[n][k], references[n][k])[1] for n in got for k in STATS)
    assert worst < 1e-9
    assert np.isnan(got["one_chain"]["r_hat"]) and np.isfinite(got["one_chain"]["ess_bulk"])


def test_rhat_separates_exact_from_stuck_chains(device32):
    for name in ("iid", "ties", "rare_indicator"):
        assert device32[name]["r_hat"] < 1.01, name
    assert np.all(device32["iid_ar1_cauchy"]["r_hat"][[0, 2]] < 1.01)
    assert device32["stuck"]["r_hat"] > 1.1
    assert device32["ar1"]["ess_bulk"] < 0.1 * device32["iid"]["ess_bulk"]


def test_single_functions_match_summary_and_compile_once():
    """Each public function is jitted, agrees with the summary and compiles once per shape."""
    x = jnp.asarray(BATCH)
    y = jnp.asarray(np.random.default_rng(6).normal(size=BATCH.shape))
    batch = _on_device(BATCH)
    for stat, fn in FUNCTIONS.items():
        np.testing.assert_allclose(fn(x), batch[stat], rtol=1e-5, err_msg=stat)
        size = fn._cache_size()
        fn(y).block_until_ready()
        assert fn._cache_size() == size, stat
    size = SUMMARY._cache_size()
    SUMMARY(y)
    assert SUMMARY._cache_size() == size


def test_runs_inside_user_jit_without_host_callbacks():
    x = jnp.asarray(BATCH)
    assert "callback" not in str(jax.make_jaxpr(SUMMARY)(x))

    @jax.jit
    def worst_rhat(x):
        return jnp.nanmax(se.diagnostics.device_rhat(x))

    assert 1.1 < float(worst_rhat(x)) < 10.0


def test_undefined_cases_are_nan():
    x = BATCH.copy()
    x[1, 7, 0] = np.nan
    got = _on_device(x)
    for stat in STATS:
        assert np.isnan(got[stat][0]) and np.isfinite(got[stat][1]), stat
    assert np.isnan(se.diagnostics.device_rhat(jnp.ones((1, 50))))
    assert np.isnan(se.diagnostics.device_ess_bulk(jnp.ones((4, 3))))
    ints = np.round(2 * BATCH).astype(np.int32)  # converted to the default float type
    np.testing.assert_allclose(
        se.diagnostics.device_mcse_mean(jnp.asarray(ints)),
        se.diagnostics.device_mcse_mean(jnp.asarray(ints, dtype=jnp.float32)),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="chain, draw"):
        se.diagnostics.device_rhat(jnp.ones(10))
