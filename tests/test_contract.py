"""Every registered strategy through the same protocol checks, and the documented example.

The registry (``se.strategies.REGISTRY``) is the one list of strategies that runs, the CLI and
the demo use; this test builds each one small and runs ``init_state -> gradient -> step`` under
``jit`` and a short ``fit``, with the same checks for all of them.
"""

import re
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import smc_ebm as se
from smc_ebm.energies import GaussianMixture, ShallowReLU

SMALL_FLOW = dict(num_proposals=8, num_global=1, num_local=1, flow_layers=2, flow_width=8)

# name -> (keywords of a small instance, whether its energy lives on the sphere)
SMALL = {
    "Jarzynski": (dict(num_walkers=64, step_size=0.1), False),
    "PCD": (dict(num_walkers=64, step_size=0.1), False),
    "CD": (dict(num_walkers=64, num_steps=2, step_size=0.1), False),
    "Unweighted": (dict(num_walkers=64, step_size=0.1), False),
    "FlowMC": (dict(num_walkers=64, step_size=0.05, **SMALL_FLOW), False),
    "FlowJarzynski": (dict(num_walkers=64, step_size=0.05, **SMALL_FLOW), False),
    "Dual": (dict(num_walkers=64, step_size=0.02, alpha=1.0), True),
    "ScoreMatching": (dict(method="exact"), False),
}


def test_the_registry_holds_every_strategy():
    assert set(se.strategies.REGISTRY) == set(SMALL)


def _problem(sphere):
    if sphere:
        data = se.datasets.sphere_teacher(jax.random.key(0), 200, 3, angle=1.37)
        energy = ShallowReLU(3, 4, key=jax.random.key(1), beta=5.0)
        return energy, data.samples
    energy = GaussianMixture.init(jax.random.key(0), 2, 2, scale=1.0)
    data = energy.sample(jax.random.key(1), 200) + 0.5
    return energy, data


@pytest.mark.parametrize("name", list(SMALL))
def test_strategy_contract(name):
    kwargs, sphere = SMALL[name]
    strategy = se.strategies.build_strategy({"name": name, **kwargs})
    assert isinstance(strategy, se.strategies.AbstractStrategy)
    assert isinstance(strategy, se.strategies.REGISTRY[name])
    energy, data = _problem(sphere)
    params, static = se.kernels.split_energy(energy)
    state = strategy.init_state(jax.random.key(2), energy, data, None)
    energy_new = eqx.combine(jax.tree.map(lambda p: p * 1.01, params), static)

    @jax.jit
    def one(state):
        st, grad, loss, data_u, term = strategy.gradient(jax.random.key(3), state, energy, data)
        st, info = strategy.step(jax.random.key(4), st, energy, energy_new, jnp.asarray(0))
        return st, grad, loss, data_u, term, info

    st, grad, loss, data_u, term, info = one(state)
    # The model term has the shape of the trainable arrays; the records are scalars.
    assert jax.tree.structure(grad) == jax.tree.structure(params)
    assert jax.tree.structure(term.grad) == jax.tree.structure(params)
    for value in (term.energy, term.ess, term.log_Z, info.acceptance, info.resampled):
        assert jnp.shape(value) == ()
    assert 0.0 < float(term.ess) <= 1.0
    assert 0.0 <= float(info.acceptance) <= 1.0
    assert all(bool(v) for v in info.finite.values())
    assert np.isfinite(float(loss)) and np.isfinite(float(data_u))
    if strategy.weighted:
        assert np.isfinite(float(term.log_Z))
    else:
        assert np.isnan(float(term.log_Z))
    x, a = strategy.walkers(st)
    assert x.ndim == 2 and a.shape == x.shape[:1]
    # A short fit: history of the right length, finite loss, the compiled chunk reused.
    opt = strategy.optimizer(energy) if name == "Dual" else optax.sgd(0.01)
    res = se.fit(
        energy,
        data,
        strategy=strategy,
        optimizer=opt,
        num_steps=6,
        key=jax.random.key(5),
        progress=False,
        record_every=2,
    )
    assert list(res.history["step"]) == [0, 2, 4]
    assert np.all(np.isfinite(res.history["loss"]))
    assert set(res.history) >= {"ess", "log_Z", "cross_entropy", "resampled", "acceptance"}


def _documented_strategy():
    text = (Path(__file__).parents[1] / "docs" / "architecture.md").read_text()
    section = text.split("## Adding a strategy", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "architecture.md", "exec"), namespace)  # noqa: S102
    return namespace["PersistentChains"]


def test_the_documented_strategy_trains_a_gaussian():
    """docs/architecture.md's example, run as written: persistent MALA chains as the model term.

    The model is a Gaussian with a trainable mean and unit scale; the maximum-likelihood mean is
    the data mean (1.5, -0.5). Started at 0 and trained by SGD with rate 0.2 for 150 steps, the
    deterministic part of the error decays as 0.8^150 ~ 3e-15; what is left is the walkers' noise,
    an AR(1) with variance about 0.2 / (2 - 0.2) * 1/256 per coordinate, sd ~ 0.02 (and the
    chains' lag behind the moving target). 0.15 is 7 sd.
    """
    chains = _documented_strategy()
    strategy = chains(num_walkers=256, kernel=se.kernels.MALA(0.3))
    assert isinstance(strategy, se.strategies.AbstractStrategy)
    target = np.array([1.5, -0.5], np.float32)
    data = target + jax.random.normal(jax.random.key(0), (4000, 2))
    target = np.asarray(jnp.mean(data, axis=0))
    energy = se.energies.Gaussian(jnp.zeros(2), jnp.ones(2))
    opt = se.optim.by_field(mean=optax.sgd(0.2), scale=optax.set_to_zero())
    res = se.fit(
        energy,
        data,
        strategy=strategy,
        optimizer=opt,
        num_steps=150,
        key=jax.random.key(1),
        progress=False,
    )
    np.testing.assert_allclose(np.asarray(res.energy.mean), target, atol=0.15)
    assert 0.3 < res.history["acceptance"][-1] <= 1.0
