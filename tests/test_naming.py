"""One naming scheme (smc_ebm/_naming.py): the public API follows it, and the old names
still work with a DeprecationWarning that names the new one."""

import importlib
import inspect
import warnings

import jax
import numpy as np
import pytest

import smc_ebm as se
from smc_ebm._naming import OLD_NAMES

SUBPACKAGES = [
    "smc_ebm",
    "smc_ebm.datasets",
    "smc_ebm.diagnostics",
    "smc_ebm.energies",
    "smc_ebm.flows",
    "smc_ebm.kernels",
    "smc_ebm.metrics",
    "smc_ebm.recipes",
    "smc_ebm.runs",
    "smc_ebm.smc",
    "smc_ebm.strategies",
]
# Where a key may sit elsewhere than first or keyword-only: a dataclass result built by the
# library (not called by users), and the resampling primitives, whose first argument is the
# schedule's decision `do` (as lax.cond takes its predicate first).
EXCEPTIONS = {"FitResult", "resample", "maybe_resample_indices"}


def _public_callables():
    for mod_name in SUBPACKAGES:
        mod = importlib.import_module(mod_name)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.isclass(obj):
                for meth in ("__init__", "init"):
                    if meth in vars(obj):
                        yield f"{mod_name}.{name}.{meth}", getattr(obj, meth)
            elif callable(obj):
                yield f"{mod_name}.{name}", obj


def test_the_public_api_uses_only_the_new_names():
    """No public parameter has an old name, and the key is first or keyword-only."""
    checked, bad = 0, []
    for where, f in _public_callables():
        try:
            params = list(inspect.signature(f).parameters.values())
        except (TypeError, ValueError):
            continue
        checked += 1
        if params and params[0].name in ("self", "cls"):
            params = params[1:]
        for i, p in enumerate(params):
            if p.name in OLD_NAMES:
                bad.append(f"{where}: `{p.name}` (now `{OLD_NAMES[p.name]}`)")
            if p.name == "key" and i > 0 and p.kind != p.KEYWORD_ONLY:
                if not EXCEPTIONS & set(where.split(".")):
                    bad.append(f"{where}: `key` at position {i}, neither first nor keyword-only")
    assert checked > 80, checked
    assert not bad, "\n".join(bad)


def _warns_old(match):
    return pytest.warns(DeprecationWarning, match=f"`{match}` is deprecated")


def test_old_keywords_build_the_same_strategies_with_a_warning():
    with _warns_old("n_walkers"):
        old = se.Jarzynski(n_walkers=64, step_size=0.1)
    assert old == se.Jarzynski(num_walkers=64, step_size=0.1)
    with _warns_old("n_observers"):
        obs = se.Jarzynski(64, 0.1, n_observers=16)
    assert obs == se.Jarzynski(64, 0.1, num_observers=16)
    with _warns_old("n_steps"):
        assert se.CD(n_steps=3) == se.CD(num_steps=3)
    with _warns_old("n_walkers"):
        assert se.PCD(n_walkers=32).num_walkers == 32
    with _warns_old("n_walkers"):
        assert se.Jarzynski(64).n_walkers == 64  # the old attribute reads too
    with pytest.raises(TypeError, match="both `n_walkers`"):
        se.Jarzynski(n_walkers=64, num_walkers=64)


def test_sample_and_diagnose_take_the_key_by_keyword_and_the_old_order_still_works():
    gmm = se.energies.GaussianMixture.init(jax.random.key(0), 2, 2, scale=2.0)
    new = se.sample(gmm, key=jax.random.key(1), num_walkers=64, num_steps=5, num_runs=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = se.sample(gmm, jax.random.key(1), 64, n_steps=5, n_runs=2)
    said = sorted(str(w.message) for w in caught if w.category is DeprecationWarning)
    assert len(said) == 4, said  # key and num_walkers by position, two old keywords
    for part in ("`key` by position", "`num_walkers` by position", "`n_steps`", "`n_runs`"):
        assert sum(part in m for m in said) == 1, (part, said)
    assert all(w.filename == __file__ for w in caught)  # points at the caller's line
    np.testing.assert_array_equal(old.samples, new.samples)
    assert old.log_Z == new.log_Z
    with _warns_old("n_resampled"):
        np.testing.assert_array_equal(old.n_resampled, new.num_resamplings)

    init = new.samples[:4]
    d_new = se.diagnose(gmm, key=jax.random.key(2), init=init, num_chains=4, num_steps=8)
    with pytest.warns(DeprecationWarning, match="passing `key` by position"):
        d_old = se.diagnose(gmm, jax.random.key(2), init=init, num_chains=4, num_steps=8)
    np.testing.assert_array_equal(d_old.table.to_numpy(), d_new.table.to_numpy())
    with _warns_old("n_chains"):
        assert d_old.n_chains == 4
    with pytest.raises(TypeError, match="positional"):
        se.diagnose(gmm, jax.random.key(2), 4)


def test_old_config_keys_are_renamed_with_a_warning_that_the_command_line_shows():
    from smc_ebm.runs._config import config_problems

    cfg = {
        "name": "x",
        "steps": 10,
        "dataset": {"name": "two_mode_teacher", "n": 100, "dim": 2},
        "energy": {"name": "GaussianMixture", "n_modes": 2},
        "strategy": {"name": "Jarzynski", "n_walkers": 64},
        "optimizer": {"name": "sgd", "learning_rate": 0.1},
        "diagnostics": {"n_chains": 8},
        "sample": {"n": 64, "n_steps": 5},
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, problems = config_problems(cfg)
    said = {str(w.message) for w in caught if w.category is FutureWarning}
    assert "config [strategy]: `n_walkers` is deprecated; use `num_walkers`." in said, said
    assert len(said) == 5, said  # n_modes, n_walkers, n_chains, n, n_steps
    assert not problems, problems
    assert out["strategy"]["num_walkers"] == 64 and "n_walkers" not in out["strategy"]
    assert out["energy"]["num_modes"] == 2
    assert out["diagnostics"]["num_chains"] == 8
    assert out["sample"] == {"num_walkers": 64, "num_steps": 5}
    assert out["dataset"]["n"] == 100  # data sizes keep `n`
