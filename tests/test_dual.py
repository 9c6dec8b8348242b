"""Shallow ReLU energies on the sphere, projected moves, the WFR step and Dual training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _stats import z_bound

import smc_ebm as se
import smc_ebm._fit as fit_module
from smc_ebm.energies import ShallowReLU
from smc_ebm.kernels import evaluate_uniform, mean_param_grad
from smc_ebm.manifolds import SPHERE


@pytest.fixture(scope="module")
def teacher5():
    """A monomodal two-neuron teacher on S^4 and independent test samples."""
    data = se.datasets.sphere_teacher(jax.random.key(0), 3000, 5, angle=1.37)
    test = data.teacher.sample(jax.random.key(1), 3000)
    return data, test


def _norms(x):
    return np.linalg.norm(np.asarray(x, np.float64), axis=-1)


def test_projected_langevin_stays_on_sphere(key):
    x = SPHERE.uniform(key, 500, 7)
    g = 50.0 * jax.random.normal(jax.random.key(3), x.shape)  # a violent drift
    for i in range(5):
        x = SPHERE.langevin(jax.random.fold_in(key, i), x, g, 0.3)
    np.testing.assert_allclose(_norms(x), 1.0, atol=1e-5)
    # Tangent projection removes the radial part.
    v = SPHERE.to_tangent(x, g)
    np.testing.assert_allclose(np.sum(np.asarray(v) * np.asarray(x), -1), 0.0, atol=1e-3)


def test_euclidean_manifold_is_the_default():
    gmm = se.energies.GaussianMixture.init(jax.random.key(0), 2, 3)
    assert se.manifolds.manifold_of(gmm) is se.manifolds.EUCLIDEAN
    e = ShallowReLU(4, 3, key=jax.random.key(0))
    assert se.manifolds.manifold_of(e) is se.manifolds.SPHERE


def test_shallow_relu_energy_and_bound():
    e = ShallowReLU(6, 5, key=jax.random.key(0), beta=3.0, w=jnp.arange(1.0, 6.0))
    x = SPHERE.uniform(jax.random.key(1), 20_000, 6)
    th, w, s = (np.asarray(a, np.float64) for a in (e.theta, e.w, e.sigma))
    expected = 3.0 * np.mean(s * w * np.maximum(np.asarray(x, np.float64) @ th.T, 0.0), -1)
    u = np.asarray(jax.vmap(e)(x))
    np.testing.assert_allclose(u, expected, rtol=1e-5, atol=1e-5)
    assert u.min() >= e.energy_lower_bound() - 1e-5
    np.testing.assert_allclose(_norms(e.theta), 1.0, atol=1e-6)
    # The teacher's bound is attained at the normalised sum of its neurons (angle < pi/2).
    t = se.datasets.sphere_teacher(jax.random.key(2), 10, 5, angle=1.37).teacher
    top = SPHERE.project(t.theta.sum(0))
    np.testing.assert_allclose(float(t(top)), t.energy_lower_bound(), rtol=1e-5)


def test_shallow_relu_sampler_is_exact():
    """Rejection samples against self-normalised importance sampling from the uniform law.

    Both estimate E[<x, theta_1>] under the teacher; SEs from the sample variances (the IS
    one with the delta method).
    """
    t = se.datasets.sphere_teacher(jax.random.key(0), 1, 4, angle=2.87, weight=-6.0).teacher
    xs = np.asarray(t.sample(jax.random.key(1), 20_000), np.float64)
    a = xs @ np.asarray(t.theta[0], np.float64)
    m1, s1 = a.mean(), a.std() / np.sqrt(a.size)
    xu = SPHERE.uniform(jax.random.key(2), 400_000, 4)
    lw = -np.asarray(jax.vmap(t)(xu), np.float64)
    p = np.exp(lw - lw.max())
    p /= p.sum()
    b = np.asarray(xu, np.float64) @ np.asarray(t.theta[0], np.float64)
    m2 = p @ b
    s2 = np.sqrt(np.sum(p**2 * (b - m2) ** 2))
    assert abs(m1 - m2) < z_bound(1) * np.hypot(s1, s2), (m1, m2, s1, s2)
    np.testing.assert_allclose(_norms(xs), 1.0, atol=1e-5)


def test_kl_and_score_metrics_vanish_at_the_teacher(teacher5):
    data, test = teacher5
    t = data.teacher
    # The same energy written with beta = 1 and weights 10: a different module, same density.
    same = ShallowReLU(5, 2, beta=1.0, theta=t.theta, w=10.0 * t.w, sigma=t.sigma)
    kl = se.metrics.kl_estimate(test, t)
    sc = se.metrics.score_error(test, t)
    assert abs(float(kl(same))) < 1e-5
    assert float(sc(same)) < 1e-6
    other = ShallowReLU(5, 8, key=jax.random.key(3), beta=10.0)
    assert float(kl(other)) > 0.1
    assert float(sc(other)) > 1.0


def _field_grads(energy, data, walkers):
    """dH/dtheta = data term - walker term, as ``fit`` computes it."""
    _, dg = mean_param_grad(energy, data)
    _, _, wg = evaluate_uniform(energy, walkers)
    return jax.tree.map(lambda a, b: a - b, dg, wg)


def test_wfr_step_is_the_neuron_update_of_the_paper(teacher5):
    """theta_j <- proj(theta_j + s alpha sigma_j P grad F), w_j <- w_j exp(s alpha sigma_j F).

    F(theta) = mean_walkers ReLU(<X, theta>) - mean_data ReLU(<x, theta>), computed here in
    float64 numpy; the radius is large so that the cap does not act.
    """
    data, _ = teacher5
    x = np.asarray(data.samples[:500], np.float64)
    walkers = SPHERE.uniform(jax.random.key(5), 400, 5)
    xw = np.asarray(walkers, np.float64)
    energy = ShallowReLU(5, 6, key=jax.random.key(4), beta=10.0, w=jnp.linspace(0.5, 1.5, 6))
    s, alpha = 0.02, 3.0
    dual = se.Dual(400, step_size=s, alpha=alpha, radius=100.0)
    opt = dual.optimizer(energy)
    params, static = se.kernels.split_energy(energy)
    grads = _field_grads(energy, data.samples[:500], walkers)
    updates, _ = opt.update(grads, opt.init(params), params)
    new = optax.apply_updates(params, updates)

    th = np.asarray(energy.theta, np.float64)
    w = np.asarray(energy.w, np.float64)
    sig = np.asarray(energy.sigma, np.float64)
    big_f = np.maximum(xw @ th.T, 0).mean(0) - np.maximum(x @ th.T, 0).mean(0)
    grad_f = ((xw @ th.T > 0)[:, :, None] * xw[:, None]).mean(0) - (
        (x @ th.T > 0)[:, :, None] * x[:, None]
    ).mean(0)
    tang = grad_f - np.sum(grad_f * th, -1, keepdims=True) * th
    th_new = th + s * alpha * sig[:, None] * tang
    th_new /= np.linalg.norm(th_new, axis=-1, keepdims=True)
    w_new = w * np.exp(s * alpha * sig * big_f)
    np.testing.assert_allclose(np.asarray(new.theta), th_new, atol=2e-5)
    np.testing.assert_allclose(np.asarray(new.w), w_new, rtol=2e-5)


def test_wfr_keeps_features_on_sphere_and_the_f1_cap(key):
    energy = ShallowReLU(5, 8, key=key, beta=1.0)
    params, _ = se.kernels.split_energy(energy)
    opt = se.optim.wfr(5.0, radius=1.0)
    state = opt.init(params)
    # Gradients that push every weight up (dH/dw < 0) and move features a lot.
    grads = jax.tree.map(lambda p: -jnp.ones_like(p), params)
    for _ in range(3):
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        np.testing.assert_allclose(_norms(params.theta), 1.0, atol=1e-5)
        assert float(jnp.mean(params.w)) <= 1.0 + 1e-5
        assert bool(jnp.all(params.w > 0))
    # Weights pushed down stay below the cap and are not inflated by it.
    down = jax.tree.map(jnp.ones_like, params)
    updates, state = opt.update(down, state, params)
    assert float(jnp.mean(optax.apply_updates(params, updates).w)) < 0.5
    with pytest.raises(ValueError, match="parameters"):
        opt.update(grads, state, None)
    with pytest.raises(ValueError, match="no trainable field"):
        se.optim.wfr(0.1, features="neurons").init(params)


def _dual_state(teacher5, dual, energy):
    data, _ = teacher5
    return dual.init_state(jax.random.key(7), energy, data.samples, None)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_restart_probability_extremes(teacher5, p):
    """p_R = 1 puts every walker on a data point, p_R = 0 moves none."""
    data, _ = teacher5
    energy = ShallowReLU(5, 6, key=jax.random.key(4), beta=10.0)
    dual = se.Dual(300, step_size=0.02, alpha=1.0, restart_prob=p)
    state = _dual_state(teacher5, dual, energy)
    batch = data.samples[:50]
    new, mg, me = dual.negative_phase(jax.random.key(8), state, energy, batch)
    # The model term is that of the walkers before the restarts.
    np.testing.assert_array_equal(np.asarray(mg.w), np.asarray(state.param_grad.w))
    pos = np.asarray(new.position)
    dist = np.min(np.linalg.norm(pos[:, None] - np.asarray(batch)[None], axis=-1), axis=1)
    if p == 1.0:
        assert int(new.restarts) == 300
        np.testing.assert_array_equal(dist, 0.0)
        # Cached energies and gradients are those of the new positions.
        np.testing.assert_allclose(
            np.asarray(new.energy), np.asarray(jax.vmap(energy)(pos)), rtol=1e-5, atol=1e-6
        )
    else:
        assert int(new.restarts) == 0
        np.testing.assert_array_equal(pos, np.asarray(state.position))
        assert dist.min() > 0


def test_restart_fraction_every_and_schedule(teacher5):
    """A fraction p_R restarts (binomial SE); restart_every and schedules act on the step."""
    energy = ShallowReLU(5, 6, key=jax.random.key(4), beta=10.0)
    data, _ = teacher5
    n = 4000
    dual = se.Dual(n, step_size=0.02, alpha=1.0, restart_prob=0.3)
    state = _dual_state(teacher5, dual, energy)
    new, _, _ = dual.negative_phase(jax.random.key(9), state, energy, data.samples)
    assert abs(int(new.restarts) / n - 0.3) < z_bound(1) * np.sqrt(0.3 * 0.7 / n)
    every = se.Dual(10, step_size=0.02, alpha=1.0, restart_every=3)
    got = [float(every.restart_probability(jnp.asarray(k))) for k in range(7)]
    assert got == [0, 0, 1, 0, 0, 1, 0]
    sched = se.Dual(10, step_size=0.02, alpha=1.0, restart_prob=optax.linear_schedule(1.0, 0.0, 10))
    np.testing.assert_allclose(float(sched.restart_probability(jnp.asarray(5))), 0.5, rtol=1e-6)
    sm = se.Dual(10, step_size=0.02, alpha=20.0, restart_prob="score_matching")
    np.testing.assert_allclose(float(sm.restart_probability(jnp.asarray(0))), 0.4, rtol=1e-6)


def test_restarts_through_fit_are_counted(teacher5):
    data, _ = teacher5
    energy = ShallowReLU(5, 6, key=jax.random.key(4), beta=10.0)
    dual = se.Dual(200, step_size=0.02, alpha=1.0, restart_prob=1.0)
    before = fit_module.TRACE_COUNT["chunk"]
    res = se.fit(
        energy,
        data.samples,
        strategy=dual,
        optimizer=dual.optimizer(energy),
        num_steps=10,
        key=jax.random.key(1),
        progress=False,
        record_every=5,
        chunk_size=5,
    )
    assert fit_module.TRACE_COUNT["chunk"] - before == 1  # two chunks, one compilation
    np.testing.assert_array_equal(res.history["resampled"], [200 * 5, 200 * 5])
    np.testing.assert_allclose(_norms(res.walkers), 1.0, atol=1e-5)


def test_short_dual_run_lowers_the_kl(teacher5):
    """The dual regime (alpha = 20) learns the S^4 teacher within 300 steps.

    The metric is deterministic given the energy (fixed test samples); the initial KL is
    about 0.6 and the learned one a few 1e-2, far apart compared with its fluctuations.
    """
    data, test = teacher5
    energy = ShallowReLU(5, 16, key=jax.random.key(1), beta=10.0)
    dual = se.Dual(1000, step_size=0.02, alpha=20.0)
    res = se.fit(
        energy,
        data.samples,
        strategy=dual,
        optimizer=dual.optimizer(energy),
        num_steps=300,
        key=jax.random.key(2),
        progress=False,
        record_every=50,
        metrics={
            "kl": se.metrics.kl_estimate(test, data.teacher),
            "score": se.metrics.score_error(test, data.teacher),
        },
    )
    kl, score = res.history["kl"], res.history["score"]
    assert kl[-1] < 0.25 * kl[0], kl
    # A 16-neuron student cannot place its kinks on the teacher's two: the score error only
    # halves (12 -> 6 here), while the KL falls by more than 10x.
    assert score[-1] < 0.6 * score[0], score
    np.testing.assert_allclose(_norms(res.energy.theta), 1.0, atol=1e-5)
    assert float(res.energy.f1_norm()) <= 1.0 + 1e-5
    assert np.isnan(res.log_Z)


def test_dual_bad_input():
    with pytest.raises(ValueError, match="restart_prob"):
        se.Dual(10, step_size=0.1, alpha=1.0, restart_prob=1.5)
    with pytest.raises(ValueError, match="restart_prob"):
        se.Dual(10, step_size=0.1, alpha=1.0, restart_prob="often")
    with pytest.raises(ValueError, match="not both"):
        se.Dual(10, step_size=0.1, alpha=1.0, restart_prob=0.1, restart_every=2)
    with pytest.raises(ValueError, match="alpha"):
        se.Dual(10, step_size=0.1, alpha=0.0)
    with pytest.raises(ValueError, match="compact"):
        gmm = se.energies.GaussianMixture.init(jax.random.key(0), 2, 3)
        se.Dual(10, step_size=0.1, alpha=1.0).init_state(
            jax.random.key(0), gmm, jnp.zeros((4, 3)), None
        )
    with pytest.raises(ValueError, match="beta"):
        ShallowReLU(3, 2, key=jax.random.key(0), beta=0.0)
    with pytest.raises(ValueError, match="key"):
        ShallowReLU(3, 2)


def test_projected_langevin_keeps_the_teacher_invariant():
    """Walkers started at exact teacher samples stay distributed as the teacher.

    300 projected moves with h = s/beta = 0.002 (total time 0.6, longer than the relaxation
    time of the free diffusion on S^4, 1/(d-1) = 0.25): E[<x, theta_1>] and E[U] of the moved
    walkers match independent exact samples within z_bound(2) = 3.48 two-sample standard
    errors (two comparisons; the O(h) discretisation bias is far below them at this step). A
    move with the wrong noise scale (e.g. sqrt(h) for sqrt(2h)) shifts E[U] by many standard
    errors.
    """
    t = se.datasets.sphere_teacher(jax.random.key(0), 1, 5, angle=2.87).teacher
    n = 4000
    x0 = t.sample(jax.random.key(1), n)
    ref = np.asarray(t.sample(jax.random.key(2), n), np.float64)
    h = 0.02 / t.beta

    @jax.jit
    def run(x):
        def body(x, k):
            g = jax.vmap(jax.grad(t))(x)
            return SPHERE.langevin(k, x, g, h), None

        return jax.lax.scan(body, x, jax.random.split(jax.random.key(3), 300))[0]

    x = np.asarray(run(x0), np.float64)
    np.testing.assert_allclose(_norms(x), 1.0, atol=1e-5)
    th1 = np.asarray(t.theta[0], np.float64)
    u_x = np.asarray(jax.vmap(t)(jnp.asarray(x, jnp.float32)), np.float64)
    u_r = np.asarray(jax.vmap(t)(jnp.asarray(ref, jnp.float32)), np.float64)
    for a, b in [(x @ th1, ref @ th1), (u_x, u_r)]:
        se_ = np.hypot(a.std(), b.std()) / np.sqrt(n)
        assert abs(a.mean() - b.mean()) < z_bound(2) * se_, (a.mean(), b.mean(), se_)


def test_euclidean_walkers_refuse_a_sphere_energy():
    energy = se.energies.ShallowReLU(5, 8, key=jax.random.key(0))
    data = jnp.eye(5)[:3]
    with pytest.raises(ValueError, match="R\\^d"):
        se.fit(
            energy,
            data,
            strategy=se.PCD(16, 0.01),
            optimizer=optax.sgd(0.1),
            num_steps=1,
            key=jax.random.key(1),
            progress=False,
        )
