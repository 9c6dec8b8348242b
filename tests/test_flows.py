"""Companion flows: identity at initialisation, exact log-determinants, the MLE step, the buffer."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import smc_ebm as se
from smc_ebm.flows import ReplayBuffer, init_flow_optimizer, make_flow, mle_step


def _perturbed(flow, key, scale=0.3):
    """The flow with every trainable array jittered (so it is no longer the identity)."""
    params, static = se.flows.trainable(flow)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    leaves = [
        p + scale * jax.random.normal(k, p.shape, p.dtype)
        for p, k in zip(leaves, keys, strict=True)
    ]
    return eqx.combine(jax.tree.unflatten(tree, leaves), static)


@pytest.mark.parametrize("kind", ["affine", "spline"])
def test_flow_is_the_base_at_initialisation(kind, key):
    flow = make_flow(key, 3, sigma=1.7, kind=kind, num_layers=3, width=16)
    x = 2.0 * jax.random.normal(jax.random.key(1), (64, 3))
    base = se.flows.base_distribution(flow)
    log_q = eqx.filter_jit(lambda f, z: f.log_prob(z))(flow, x)
    np.testing.assert_allclose(log_q, base.log_prob(x), rtol=1e-5, atol=1e-5)
    # Every coupling is the identity, so the map only permutes coordinates (the flow
    # interleaves fixed permutations), which leaves an isotropic base unchanged.
    y, log_det = flow.bijection.transform_and_log_det(x[0])
    np.testing.assert_allclose(jnp.sort(y), jnp.sort(x[0]), atol=1e-6)
    np.testing.assert_allclose(log_det, 0.0, atol=1e-6)


@pytest.mark.parametrize("kind", ["affine", "spline"])
def test_log_det_matches_jacobian(kind, key):
    flow = _perturbed(make_flow(key, 3, kind=kind, num_layers=3, width=16), jax.random.key(3))

    @eqx.filter_jit
    def check(bij, xs):
        def one(x):
            y, log_det = bij.transform_and_log_det(x)
            jac = jax.jacobian(bij.transform)(x)
            return log_det, jnp.linalg.slogdet(jac)[1], bij.inverse(y)

        return jax.vmap(one)(xs)

    xs = jax.random.normal(jax.random.key(2), (8, 3))
    log_det, slogdet, back = check(flow.bijection, xs)
    np.testing.assert_allclose(log_det, slogdet, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(back, xs, atol=1e-4)  # and the inverse round trip
    assert not np.allclose(flow.log_prob(jnp.ones(3)), flow.base_dist.log_prob(jnp.ones(3)))


def test_mle_step_lowers_the_nll_and_leaves_the_base_alone(key):
    flow = make_flow(key, 2, num_layers=3, width=16)
    # Target: a shifted, anisotropic Gaussian the identity flow fits badly.
    x = jnp.array([2.0, -1.0]) + jax.random.normal(jax.random.key(1), (512, 2)) * jnp.array(
        [0.3, 2.0]
    )
    opt = optax.adam(3e-3)
    state = init_flow_optimizer(flow, opt)
    nll_of = eqx.filter_jit(lambda f: -jnp.mean(f.log_prob(x)))

    @eqx.filter_jit
    def train(f, s):
        def body(c, _):
            f, s = eqx.combine(c[0], f_static), c[1]
            f, s, nll = mle_step(f, s, x, opt)
            return (eqx.filter(f, eqx.is_array), s), nll

        f_static = eqx.filter(f, eqx.is_array, inverse=True)
        (fa, s), nll = jax.lax.scan(body, (eqx.filter(f, eqx.is_array), s), None, length=100)
        return eqx.combine(fa, f_static), s, nll[-1]

    nll0 = float(nll_of(flow))
    flow, state, nll = train(flow, state)  # Adam under the strict promotion of conftest
    nll1 = float(nll_of(flow))
    # Exact NLL of the target itself (its entropy, ~2.43) is a lower bound in expectation.
    assert nll1 < nll0 - 1.0, (nll0, nll1)
    np.testing.assert_allclose(float(nll), nll1, atol=0.1)
    base = se.flows.base_distribution(flow)
    np.testing.assert_array_equal(base.loc, 0.0)
    np.testing.assert_allclose(base.scale, 1.0)


def test_weighted_mle_step_equals_duplicated_samples(key):
    """Weights (2, 1, 1)/4 on three points are the same loss as the four points (a, a, b, c)."""
    flow = _perturbed(make_flow(key, 2, num_layers=3, width=16), jax.random.key(4), 0.1)
    x = jax.random.normal(jax.random.key(5), (3, 2))
    opt = optax.sgd(0.1)
    s = init_flow_optimizer(flow, opt)
    step = eqx.filter_jit(
        lambda f, s, x, w: mle_step(f, s, x, opt, w)[0].log_prob(jnp.ones((1, 2)))
    )
    nll = eqx.filter_jit(lambda f, s, x, w: mle_step(f, s, x, opt, w)[2])
    w = jnp.array([0.5, 0.25, 0.25])
    x4, w4 = x[jnp.array([0, 0, 1, 2])], jnp.full((4,), 0.25)
    np.testing.assert_allclose(nll(flow, s, x, w), nll(flow, s, x4, w4), rtol=1e-5)
    np.testing.assert_allclose(step(flow, s, x, w), step(flow, s, x4, w4), rtol=1e-5)


def test_mle_step_compiles_once(key):
    flow = make_flow(key, 2, num_layers=3, width=16)
    opt = optax.sgd(1e-3)
    s = init_flow_optimizer(flow, opt)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def step(f, s, x):
        return mle_step(f, s, x, opt)

    for i in range(3):
        flow, s, _ = step(flow, s, jax.random.normal(jax.random.key(i), (16, 2)))


def test_replay_buffer_ring(key):
    buf = ReplayBuffer.empty(5, 1)
    buf = buf.push(jnp.arange(3.0)[:, None])
    assert set(np.asarray(buf.draw(key, 200)).ravel()) <= {0.0, 1.0, 2.0}
    buf = buf.push(jnp.arange(3.0, 7.0)[:, None])
    np.testing.assert_array_equal(buf.samples.ravel(), [5.0, 6.0, 2.0, 3.0, 4.0])
    assert int(buf.count) == 7
    assert set(np.asarray(buf.draw(key, 400)).ravel()) == {2.0, 3.0, 4.0, 5.0, 6.0}


def test_bad_flow_arguments(key):
    with pytest.raises(ValueError, match="dim >= 2"):
        make_flow(key, 1)
    with pytest.raises(ValueError, match="kind"):
        make_flow(key, 2, kind="maf")
    with pytest.raises(ValueError, match="sigma"):
        make_flow(key, 2, sigma=0.0)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer.empty(0, 2)
