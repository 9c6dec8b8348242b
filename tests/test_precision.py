"""Precision: every strategy, ``sample`` and ``diagnose`` in float64; low-precision data.

The float64 run is a subprocess with ``JAX_ENABLE_X64=1`` so that the rest of the suite keeps
JAX's float32 default.
"""

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import smc_ebm as se
from smc_ebm.energies import GaussianMixture

ROOT = Path(__file__).parents[1]

X64_SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np, optax
    import smc_ebm as se
    from test_contract import SMALL, _problem

    assert jax.config.jax_enable_x64
    for name, (kw, sphere) in SMALL.items():
        strategy = se.strategies.build_strategy({"name": name, **kw})
        energy, data = _problem(sphere)
        opt = strategy.optimizer(energy) if name == "Dual" else optax.sgd(0.01)
        res = se.fit(energy, np.asarray(data, np.float64), strategy=strategy, optimizer=opt,
                     num_steps=3, key=jax.random.key(5), progress=False)
        assert res.walkers.dtype == np.float64, (name, res.walkers.dtype)
        assert np.all(np.isfinite(res.history["loss"])), name
        assert res.history["loss"].dtype == np.float64, name
        print(name, "ok")
    energy, data = _problem(False)
    res = se.fit(energy, data, strategy=se.Jarzynski(64, 0.1, kernel="mala", num_observers=16,
                 reseed_every=2, refresh_every=2), optimizer=optax.sgd(0.01), num_steps=4,
                 key=jax.random.key(5), progress=False)
    assert res.walkers.dtype == np.float64
    for kernel in ("ula", "mala"):
        out = se.sample(energy, key=jax.random.key(2), num_walkers=64, num_steps=10,
                        num_runs=2, kernel=kernel)
        assert np.isfinite(out.log_Z) and np.asarray(out.resampled).dtype == np.float64
    diag = se.diagnose(res, key=jax.random.key(3), num_chains=4, num_steps=20)
    assert np.isfinite(diag.max_rhat) and 0 <= diag.acceptance <= 1
    print("sample, diagnose ok")
    """
)


def test_every_strategy_sample_and_diagnose_run_in_float64():
    env = {
        **os.environ,
        "JAX_ENABLE_X64": "1",
        "JAX_NUMPY_DTYPE_PROMOTION": "strict",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", X64_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sample, diagnose ok" in proc.stdout


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_data_is_cast_with_a_warning(dtype):
    energy = GaussianMixture.init(jax.random.key(0), 2, 2, scale=1.0)
    data = (energy.sample(jax.random.key(1), 100) + 0.5).astype(dtype)
    with pytest.warns(UserWarning, match=f"{jnp.dtype(dtype).name} cast to float32"):
        res = se.fit(
            energy,
            data,
            strategy=se.PCD(16, 0.1),
            optimizer=optax.sgd(0.01),
            num_steps=2,
            key=jax.random.key(0),
            progress=False,
        )
    assert res.walkers.dtype == jnp.float32 and res.history["loss"].dtype == np.float32


def test_integer_data_is_cast_silently():
    energy = GaussianMixture.init(jax.random.key(0), 2, 2, scale=1.0)
    data = np.round(np.asarray(energy.sample(jax.random.key(1), 100)) * 3).astype(np.int32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = se.fit(
            energy,
            data,
            strategy=se.PCD(16, 0.1),
            optimizer=optax.sgd(0.01),
            num_steps=2,
            key=jax.random.key(0),
            progress=False,
        )
    assert res.walkers.dtype == jnp.float32


def test_sample_with_a_diverging_step_size_raises():
    """No silent NaN: a step size of 1e6 on a unit-scale mixture blows the walkers up."""
    energy = GaussianMixture.init(jax.random.key(0), 2, 2, scale=1.0)
    with pytest.raises(FloatingPointError, match="step_size=1000000.0"):
        se.sample(
            energy, key=jax.random.key(1), num_walkers=64, num_steps=5, step_size=1e6, num_runs=2
        )
