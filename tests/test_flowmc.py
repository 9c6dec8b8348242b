"""i-SIR invariance, the FlowMC strategy, flow-Jarzynski weights, mixture datasets and metrics."""

import dataclasses
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _stats import z_bound

import smc_ebm as se
from smc_ebm.energies import Gaussian
from smc_ebm.flows import make_flow
from smc_ebm.kernels import isir_move

# Standard errors allowed per Monte Carlo comparison: the largest family here is 15 (3
# checkpoints x 2 coordinates x 2 moments, and log Z at each; tests/_stats.py).
Z = z_bound(15)


@functools.cache
def _flow2(sigma=0.8):
    return make_flow(jax.random.key(7), 2, sigma=sigma, num_layers=3, width=16)


def _check_isir_keeps_target(flow):
    """Exact samples of N(m, diag s^2) stay exact after 4 i-SIR moves proposing from ``flow``.

    Each chain is independent, so the moments of N chains have standard error sd/sqrt(N)
    (first) and sd(x^2)/sqrt(N) (second): 4 moves x 2 coordinates x 2 moments = 16
    comparisons, z_bound(16).
    """
    target = Gaussian(jnp.array([1.0, -0.5]), jnp.array([0.7, 1.3]))
    n, n_moves = 4000, 4

    @eqx.filter_jit
    def run(flow, key):
        k0, key = jax.random.split(key)
        x = target.sample(k0, n)
        u = jax.vmap(target)(x)

        def body(carry, k):
            x, u = carry
            x, u, p = isir_move(k, x, u, target, flow, 8)
            return (x, u), (x, jnp.mean(p))

        _, (xs, p) = jax.lax.scan(body, (x, u), jax.random.split(key, n_moves))
        return xs, p

    xs, p_move = run(flow, jax.random.key(3))
    xs, p_move = np.asarray(xs, np.float64), np.asarray(p_move)
    m1, m2 = np.array([1.0, -0.5]), np.array([1.0, -0.5]) ** 2 + np.array([0.7, 1.3]) ** 2
    z = z_bound(16)
    for x in xs:
        se1 = x.std(0) / np.sqrt(n)
        se2 = (x**2).std(0) / np.sqrt(n)
        assert np.all(np.abs(x.mean(0) - m1) < z * se1), (x.mean(0), m1, se1)
        assert np.all(np.abs((x**2).mean(0) - m2) < z * se2), ((x**2).mean(0), m2, se2)
    return p_move


def test_isir_leaves_a_gaussian_invariant_with_a_mismatched_proposal():
    """The flow at its start, q = N(0, 0.8^2 I): off-centre and too narrow along the second
    axis, so the importance weights vary a lot."""
    p_move = _check_isir_keeps_target(_flow2())
    # The moves are real: most chains leave their point, not all.
    assert np.all((p_move > 0.3) & (p_move < 0.99)), p_move


def test_isir_stays_invariant_with_a_trained_flow():
    """A flow trained (200 Adam steps) on another law, N((2, -1), diag(0.3, 2)^2): its
    couplings are no longer the identity (its log density differs from its base's by more
    than 1 nat on the target's samples), and i-SIR with it still keeps the target exact."""
    from smc_ebm.flows import init_flow_optimizer, mle_step

    flow = _flow2(1.0)
    x = jnp.array([2.0, -1.0]) + jax.random.normal(jax.random.key(1), (512, 2)) * jnp.array(
        [0.3, 2.0]
    )
    opt = optax.adam(3e-3)

    @eqx.filter_jit
    def train(f):
        f_static = eqx.filter(f, eqx.is_array, inverse=True)

        def body(c, _):
            f, s, _ = mle_step(eqx.combine(c[0], f_static), c[1], x, opt)
            return (eqx.filter(f, eqx.is_array), s), None

        start = (eqx.filter(f, eqx.is_array), init_flow_optimizer(f, opt))
        (fa, _), _ = jax.lax.scan(body, start, None, length=200)
        return eqx.combine(fa, f_static)

    trained = train(flow)
    probe = Gaussian(jnp.array([1.0, -0.5]), jnp.array([0.7, 1.3])).sample(jax.random.key(4), 256)
    base = se.flows.base_distribution(trained)
    gap = np.abs(np.asarray(trained.log_prob(probe) - base.log_prob(probe)))
    assert gap.max() > 1.0, gap.max()
    p_move = _check_isir_keeps_target(trained)
    assert np.all(p_move > 0.05), p_move


def test_isir_needs_two_candidates(key):
    target = Gaussian(jnp.zeros(2), jnp.ones(2))
    x = jnp.zeros((3, 2))
    with pytest.raises(ValueError, match="num_proposals"):
        isir_move(key, x, jax.vmap(target)(x), target, _flow2(), 1)


# ---------------------------------------------------------------------------------------
# FlowMC through se.fit


def _two_mode_fit(strategy, steps=200):
    data = se.datasets.two_gaussians(jax.random.key(0), 2000)
    energy = se.energies.GaussianMixture(
        means=data.info["means"], logits=jnp.zeros(2), sigma=float(np.sqrt(0.075))
    )
    return se.fit(
        energy,
        data.samples,
        strategy=strategy,
        optimizer=optax.sgd(0.05),
        num_steps=steps,
        batch_size=256,
        key=jax.random.key(1),
        progress=False,
    )


SMALL_FLOW = dict(num_proposals=16, num_global=1, num_local=2, flow_layers=2, flow_width=16)


def test_flowmc_recovers_the_mode_weights_that_pcd_misses():
    """1/3 : 2/3 mixture, modes 4.2 apart with sd 0.22-0.32: ULA walkers never cross.

    The model is a two-mode mixture at the true centres with equal initial weights; only
    the crossing of walkers between modes can move its weights to 1/3 : 2/3. PCD keeps its
    data-initialised walkers in place (weights drift away from the truth); FlowMC's i-SIR
    moves rebalance them. With 256 walkers the weight estimate per step has sd
    ~ sqrt(p(1-p)/256) = 0.03, averaged by SGD over many steps: 0.06 is a loose bound.
    """
    flowmc = _two_mode_fit(se.FlowMC(256, step_size=0.02, **SMALL_FLOW))
    pcd = _two_mode_fit(se.PCD(256, 0.005))
    w_flow = float(flowmc.energy.weights[0])
    w_pcd = float(pcd.energy.weights[0])
    assert abs(w_flow - 1 / 3) < 0.06, w_flow
    assert abs(w_flow - 1 / 3) < abs(w_pcd - 1 / 3) - 0.1, (w_flow, w_pcd)
    # The flow is returned, the step size adapted toward 0.75 acceptance, global moves happen.
    assert flowmc.flow is not None and pcd.flow is None
    assert 0.6 < flowmc.history["acceptance"][-1] < 0.9
    assert float(flowmc.state.global_acceptance) > 0.3
    assert np.isfinite(float(flowmc.state.flow_nll))


# ---------------------------------------------------------------------------------------
# Flow-Jarzynski: AIS weights through i-SIR and MALA moves on a moving Gaussian


def test_flow_jarzynski_weights_follow_a_moving_gaussian():
    """E[f(X) e^A]/E[e^A] = E_rho_k[f] and log mean e^A = log Z_k - log Z_0 along the path.

    tests/_moving.py's schedule (mean moving fast, scale shrinking), never resampled, so
    the 2000 walkers are independent and the delta-method standard errors apply; the flow
    is trained on the weighted walkers along the way (the kernels stay invariant).
    """
    from _moving import CHECKPOINTS, exact, schedule, target
    from _stats import log_mean_exp_and_se, weighted_mean_and_se

    n = 2000
    strategy = se.FlowJarzynski(
        n, step_size=0.3, resampling=se.NoResampling(), feedback_correction=False, **SMALL_FLOW
    )
    means, scales = schedule()
    e0 = target(0, means, scales)
    state = strategy.init_state(jax.random.key(5), e0, jnp.zeros((1, 2)), e0.log_partition())

    @jax.jit
    def run(state, key):
        def body(state, inp):
            k, kk = inp
            state, _, acc = strategy.advance(
                kk, state, target(k, means, scales), target(k + 1, means, scales), k
            )
            ess, log_z = strategy.ess_and_log_Z(state)
            return state, (state.position, state.log_weights, log_z, ess, acc)

        ks = jnp.arange(means.shape[0] - 1)
        return jax.lax.scan(body, state, (ks, jax.random.split(key, ks.shape[0])))[1]

    xs, a_s, log_z, ess, acc = jax.tree.map(np.asarray, run(state, jax.random.key(6)))
    ex = exact(means, scales)
    for k in CHECKPOINTS:
        x, a = xs[k], a_s[k]
        for f, truth in ((x, ex["m1"][k + 1]), (x**2, ex["m2"][k + 1])):
            m, s = weighted_mean_and_se(f, a)
            assert np.all(np.abs(m - truth) < Z * s), (k, m, truth, s)
        lz, slz = log_mean_exp_and_se(a)
        np.testing.assert_allclose(log_z[k], ex["log_Z"][0] + lz, atol=1e-4)
        assert abs(log_z[k] - ex["log_Z"][k + 1]) < Z * slz, (k, log_z[k], ex["log_Z"][k + 1])
    # Invariant moves add nothing to the weights: they degrade only through the AIS terms.
    assert 0.1 < ess[-1] < 0.99
    assert np.all((acc > 0.3) & (acc < 1.0))


def test_jarzynski_flow_kernel_is_flow_jarzynski():
    """``se.Jarzynski(kernel="flow", ...)`` builds the same strategy as ``se.FlowJarzynski``."""
    kw = dict(resampling=se.NoResampling(), feedback_correction=False, **SMALL_FLOW)
    a = se.Jarzynski(64, 0.3, kernel="flow", **kw)
    b = se.FlowJarzynski(64, step_size=0.3, **kw)
    assert type(a) is type(b)
    for field in dataclasses.fields(b):
        va, vb = getattr(a, field.name), getattr(b, field.name)
        la, lb = jax.tree.leaves(va), jax.tree.leaves(vb)
        assert jax.tree.structure(va) == jax.tree.structure(vb), field.name
        assert all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True)), field.name


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(kernel="flow", walker_batch=8), "walker_batch"),
        (dict(kernel="flow", num_observers=8), "num_observers"),
        (dict(kernel="ula", num_proposals=8), "num_proposals.*kernel='flow'"),
        (dict(kernel="hmc"), "kernel must be one of"),
    ],
)
def test_jarzynski_flow_kernel_rejects_what_it_cannot_do(kwargs, match):
    with pytest.raises(ValueError, match=match):
        se.Jarzynski(64, 0.3, **kwargs)
