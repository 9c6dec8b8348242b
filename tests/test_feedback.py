"""The feedback correction removes the self-induced drift of the walkers' log Z."""

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _scripts import load_script
from _stats import z_bound

import smc_ebm as se
from smc_ebm.energies import Gaussian


def _final_log_z_error(data, fc, seed):
    energy = se.energies.GaussianMixture.init(jax.random.key(1), 2, data.dim, scale=0.1)
    res = se.fit(
        energy,
        data.samples,
        strategy=se.Jarzynski(2000, 0.1, resampling=se.ESSResampling(0.5), feedback_correction=fc),
        optimizer=se.optim.by_field(logits=optax.sgd(0.125), means=optax.sgd(0.05)),
        num_steps=1500,
        key=jax.random.key(10 + seed),
        progress=False,
        record_every=500,
    )
    return res.log_Z - float(res.energy.log_partition())


def test_feedback_correction_removes_log_z_drift():
    # 20-d two-mode teacher, SGD 0.05 on the means, N = 2000: the self-term of each walker
    # is about lr |x - mu|^2 / N = 0.05 * 20 / 2000 = 5e-4 nats per step, i.e. a drift of
    # order -0.75 over 1500 steps without the correction. The Monte Carlo spread of the
    # final log Z over seeds was measured at about 0.07 (sd), so the mean of 3 seeds has
    # an sd of about 0.04. Uncorrected: mean well below -0.5. Corrected: the residual
    # (the correction is evaluated at the pre-move position, an O(h) relative error,
    # docs/maths.md 2.6) must be under 30% of the uncorrected drift.
    data = se.datasets.two_mode_teacher(jax.random.key(0), n=4000, dim=20)
    raw = np.mean([_final_log_z_error(data, False, s) for s in range(3)])
    corrected = np.mean([_final_log_z_error(data, True, s) for s in range(3)])
    assert raw < -0.5
    assert abs(corrected) < 0.3 * abs(raw)


@pytest.mark.slow  # 15-20 s on 2 cores; the default suite is near its 20-minute budget
def test_feedback_correction_is_skipped_for_adam_on_a_zero_initialised_net():
    """Adam's update is not linear in the gradient (its Jacobian is unbounded where a gradient
    coordinate is zero, as in the hidden layers of a net whose last layer is zero), so the
    default ``"auto"`` correction is skipped instead of producing non-finite weights; SGD is
    detected as linear."""
    # optax.adam mixes a Python float with its int32 step count: standard promotion.
    with jax.numpy_dtype_promotion("standard"):
        import numpyro.distributions as nd

        from smc_ebm.strategies._feedback import update_is_linear as _update_is_linear

        data = se.datasets.two_mode_teacher(jax.random.key(0), n=300, dim=2, a=-2.0, b=2.0)
        net = se.energies.MLP(2, 8, 2, key=jax.random.key(1), zero_init=True)
        energy = se.energies.Tilted(net, nd.Normal(jnp.zeros(2), 1.0).to_event(1))
        res = se.fit(
            energy,
            data.samples,
            strategy=se.Jarzynski(128, 0.05),
            optimizer=optax.adam(1e-2),
            num_steps=20,
            key=jax.random.key(2),
            progress=False,
        )
        assert np.isfinite(res.log_Z) and np.all(np.isfinite(np.asarray(res.log_weights)))
        params = eqx.filter(energy, eqx.is_inexact_array)
        sgd = se.optim.by_field(logits=optax.sgd(0.1), means=optax.sgd(0.02))
        gmm = se.energies.GaussianMixture.init(jax.random.key(3), 2, 2, scale=0.1)
        gp = eqx.filter(gmm, eqx.is_inexact_array)
        assert _update_is_linear(sgd, sgd.init(gp), gp)
        adam = optax.adam(1e-2)
        assert not _update_is_linear(adam, adam.init(params), params)


def test_reseeding_replaces_the_drivers_by_draws_from_the_observers():
    data = se.datasets.two_mode_teacher(jax.random.key(0), n=500, dim=3, a=-2.0, b=2.0)
    energy = se.energies.GaussianMixture.init(jax.random.key(1), 2, 3, scale=0.1)
    strategy = se.Jarzynski(128, 0.1, num_observers=64, observer_kernel="ula", reseed_every=5)
    res = se.fit(
        energy,
        data.samples,
        strategy=strategy,
        optimizer=optax.sgd(0.05),
        num_steps=10,  # reseeded after steps 4 and 9: the final drivers are fresh draws
        key=jax.random.key(2),
        progress=False,
    )
    st = res.state
    obs = np.asarray(st.observers.position)
    drivers = np.asarray(st.position)
    np.testing.assert_array_equal(np.asarray(st.log_weights), 0.0)
    # Every driver is a copy of an observer, and the population draws on several of them.
    match = np.all(drivers[:, None, :] == obs[None, :, :], axis=-1)
    assert np.all(match.any(axis=1))
    assert len({int(np.argmax(m)) for m in match}) > 10
    # The drivers' cached energy is the model's at their positions; log Z is the observers'.
    u = jax.vmap(res.energy)(jnp.asarray(drivers))
    np.testing.assert_allclose(np.asarray(st.energy), np.asarray(u), rtol=1e-5, atol=1e-5)
    a_obs = np.asarray(st.observers.log_weights, np.float64)
    log_z_obs = float(st.observers.log_Z_anchor) + np.log(np.mean(np.exp(a_obs)))
    np.testing.assert_allclose(float(st.log_Z_anchor), log_z_obs, rtol=1e-5)
    np.testing.assert_allclose(res.log_Z, log_z_obs, rtol=1e-5)


def test_local_feedback_correction_applies_to_adam():
    """``feedback_correction="local"`` takes the Jacobian diagonal of Adam's update at the
    current state (first order in each walker's contribution) instead of skipping it: the
    weights change, and stay finite where the Jacobian is not (a zero-initialised last layer
    gives exactly zero hidden-layer gradients at the first step)."""
    import numpyro.distributions as nd

    data = se.datasets.two_mode_teacher(jax.random.key(0), n=300, dim=2, a=-2.0, b=2.0)
    net = se.energies.MLP(2, 8, 2, key=jax.random.key(1), zero_init=True)
    energy = se.energies.Tilted(net, nd.Normal(jnp.zeros(2), 1.0).to_event(1))
    out = {}
    with jax.numpy_dtype_promotion("standard"):
        for fc in ("auto", "local"):
            out[fc] = se.fit(
                energy,
                data.samples,
                strategy=se.Jarzynski(128, 0.05, feedback_correction=fc),
                optimizer=optax.adam(1e-2),
                num_steps=20,
                key=jax.random.key(2),
                progress=False,
            )
    a_auto, a_local = (np.asarray(out[fc].log_weights) for fc in ("auto", "local"))
    assert np.all(np.isfinite(a_local)) and np.isfinite(out["local"].log_Z)
    assert np.max(np.abs(a_local - a_auto)) > 1e-6
    match = "feedback_correction must be True, False, 'auto' or 'local'"
    with pytest.raises(ValueError, match=match):
        se.Jarzynski(128, 0.05, feedback_correction="always")
    with pytest.raises(ValueError, match=match):
        se.FlowJarzynski(128, feedback_correction="always")


@pytest.mark.slow  # 15-20 s on 2 cores; the default suite is near its 20-minute budget
def test_feedback_correction_from_starts_the_correction_at_that_step():
    """``feedback_correction_from=k0``: the first ``k0`` steps run without the correction
    (bit-identical to a correction that never starts), the later ones with it."""
    data = se.datasets.two_mode_teacher(jax.random.key(0), n=300, dim=2, a=-2.0, b=2.0)
    energy = se.energies.GaussianMixture.init(jax.random.key(1), 2, 2, scale=1.0)

    def run(k0, steps):
        strategy = se.Jarzynski(
            64,
            0.1,
            walker_batch=16,
            walker_grad="batch",
            feedback_correction="local",
            feedback_correction_from=k0,
        )
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam needs it
            res = se.fit(
                energy,
                data.samples,
                strategy=strategy,
                optimizer=optax.adam(1e-2),
                num_steps=steps,
                key=jax.random.key(2),
                progress=False,
            )
        return np.asarray(res.log_weights)

    never, late, always = run(10**6, 5), run(5, 5), run(0, 5)
    np.testing.assert_array_equal(late, never)
    assert np.max(np.abs(always - never)) > 1e-6
    assert np.max(np.abs(run(5, 10) - run(10**6, 10))) > 1e-6
    with pytest.raises(ValueError, match="feedback_correction_from must be >= 0"):
        se.Jarzynski(64, 0.1, feedback_correction_from=-1)
    with pytest.raises(ValueError, match="feedback_correction_from"):
        se.Jarzynski(64, 0.1, kernel="flow", feedback_correction_from=3)
    with pytest.raises(ValueError, match="feedback_estimator must be 'probe' or 'exact'"):
        se.Jarzynski(64, 0.1, feedback_estimator="hutchinson")


SGD_LR, SGD_STEPS = 0.1, 40


def _sgd_path_runs(strategy, metrics=None):
    """48 seeds of SGD (rate 0.1, 40 steps) on the mean of a unit Gaussian model, the scale
    held fixed, from mean 0 toward data centred at (1.5, -1); and the data."""
    data = jnp.array([1.5, -1.0]) + jax.random.normal(jax.random.key(0), (512, 2))
    data = np.asarray(data, np.float32)
    energy = Gaussian(jnp.zeros(2), jnp.ones(2))
    optimizer = se.optim.by_field(mean=optax.sgd(SGD_LR), scale=optax.set_to_zero())
    runs = [
        se.fit(
            energy,
            data,
            strategy=strategy,
            optimizer=optimizer,
            num_steps=SGD_STEPS,
            key=jax.random.key(seed),
            progress=False,
            metrics=metrics,
        )
        for seed in range(48)
    ]
    return runs, data


def _z_of_mean(values):
    """Mean over the seeds (axis 0) in units of its standard error."""
    v = np.asarray(values, np.float64)
    return v.mean(0) / (v.std(0, ddof=1) / np.sqrt(len(v)))


def test_training_path_depends_on_the_walkers_and_matches_the_exact_sgd_path():
    """A run whose parameters follow the walkers: SGD on the mean of a unit Gaussian model,
    whose model term is exactly 0, so the exact path is ``m_k = xbar + 0.9^k (m_0 - xbar)``
    (lr 0.1). Each step's model term is the walkers' estimate, so their errors steer the path
    and the path moves the walkers' target. Over 48 seeds, Jarzynski's mean path at steps 5,
    10, 20, 39 equals the exact one within z_bound(8) standard errors (8 comparisons). PCD's
    unweighted walkers lag the moving target and miss it by more than 7 standard errors at
    every checkpoint (measured: 7-88), so the check can fail. (It is blind to small errors
    in the weights: a 10% error of the increment's step term, the ULA noise at 2.1 h and a
    flipped feedback correction all pass it; other tests catch those.)"""
    metrics = {"m0": lambda e: e.mean[0], "m1": lambda e: e.mean[1]}
    checks = [5, 10, 20, 39]

    def z_scores(strategy):
        runs, data = _sgd_path_runs(strategy, metrics)
        xbar = data.astype(np.float64).mean(0)
        exact = xbar + (1 - SGD_LR) ** np.asarray(checks)[:, None] * (0.0 - xbar)
        paths = [np.stack([r.history["m0"], r.history["m1"]], 1)[checks] for r in runs]
        return _z_of_mean(np.asarray(paths, np.float64) - exact)

    z = z_scores(se.Jarzynski(256, 0.3))
    assert np.all(np.abs(z) < z_bound(8)), z
    assert np.all(np.abs(z_scores(se.PCD(256, 0.3))).max(axis=1) > 7)


def test_observers_log_z_is_exact_on_a_path_that_the_drivers_steer():
    """The SGD path of the test above moves the mean of a unit Gaussian, whose log Z stays
    log 2 pi. Over 48 seeds the observers' log Z (walkers that follow the path but never enter
    the gradient; also with their own MALA step, three times the drivers') and the
    feedback-corrected drivers' log Z are within z_bound(3) standard errors of it. The
    uncorrected drivers' log Z drifts low, by the feedback of their own errors through the
    parameter update (measured: -0.037 +- 0.011, 3.2 SE): more than 2 SE below, as the maths
    page says."""

    def z_score(strategy):
        runs, _ = _sgd_path_runs(strategy)
        return _z_of_mean([r.log_Z - np.log(2 * np.pi) for r in runs])

    assert abs(z_score(se.Jarzynski(256, 0.3, num_observers=256))) < z_bound(3)
    wide = se.strategies.with_observers(se.Jarzynski(256, 0.3), 256, step_size=0.9)
    assert abs(z_score(wide)) < z_bound(3)
    assert abs(z_score(se.Jarzynski(256, 0.3))) < z_bound(3)
    assert z_score(se.Jarzynski(256, 0.3, feedback_correction=False)) < -2


def test_observers_step_size_is_checked():
    with pytest.raises(ValueError, match="step_size must be > 0"):
        se.strategies.with_observers(se.Jarzynski(16, 0.1), 8, step_size=0.0)


def _tiny_fit(strategy):
    data = se.datasets.two_mode_teacher(jax.random.key(0), n=200, dim=2, a=-2.0, b=2.0)
    energy = se.energies.GaussianMixture.init(jax.random.key(1), 2, 2, scale=0.1)
    return se.fit(
        energy,
        data.samples,
        strategy=strategy,
        optimizer=optax.sgd(0.05),
        num_steps=4,
        key=jax.random.key(2),
        progress=False,
    )


@pytest.mark.parametrize(
    "drivers",
    [
        se.Jarzynski(32, 0.1, walker_batch=8, feedback_correction=False),
        se.PCD(32, 0.1, walker_batch=8, num_anneal=5),  # observers annealed, walkers at data
        se.Unweighted(32, 0.1, num_anneal=5),
    ],
    ids=["Jarzynski", "PCD", "Unweighted"],
)
def test_observers_leave_the_drivers_path_unchanged(drivers):
    """Observers never enter the gradient nor draw the drivers' random numbers: the trained
    parameters and the drivers are those of the run without them, bit for bit, and the
    observers carry weights (and a log Z) around unweighted walkers too."""
    plain = _tiny_fit(drivers)
    observed = _tiny_fit(se.strategies.with_observers(drivers, 16))
    assert np.isfinite(observed.log_Z) and np.ptp(np.asarray(observed.state.observers.log_weights))
    for a, b in zip(jax.tree.leaves(plain.energy), jax.tree.leaves(observed.energy), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(plain.state.position), observed.state.position)
    np.testing.assert_array_equal(np.asarray(plain.state.log_weights), observed.state.log_weights)


def test_observers_resample_on_their_own_schedule():
    """``with_observers(..., resampling=...)`` resamples the observers on that schedule and
    leaves the drivers on theirs; without it the observers follow the drivers' schedule."""
    drivers = se.Jarzynski(32, 0.1, resampling=se.NoResampling(), feedback_correction=False)

    def final_log_weights(strategy):
        st = _tiny_fit(strategy).state
        return np.asarray(st.log_weights), np.asarray(st.observers.log_weights)

    every_step = se.IntervalResampling(every=1)
    a, a_obs = final_log_weights(se.strategies.with_observers(drivers, 16, resampling=every_step))
    np.testing.assert_array_equal(a_obs, 0.0)  # resampled at the last step
    assert np.ptp(a) > 0  # the drivers never resample
    a, a_obs = final_log_weights(se.strategies.with_observers(drivers, 16))
    assert np.ptp(a) > 0 and np.ptp(a_obs) > 0


@pytest.mark.parametrize("drivers", [se.Jarzynski, se.PCD], ids=["Jarzynski", "PCD"])
def test_observers_sample_the_model_when_the_walkers_start_at_the_data(drivers):
    """Observers are a weighted sample of the model from their first step, also around walkers
    started at the data (``init="data"``). The model is N(0, I_2), which samples itself, and
    the data sit at 5: after one step with a frozen model the 256 observers' weighted mean is
    within 0.5 of 0 (8 standard errors of 1/16 for the plain mean), the walkers' near 5."""
    data = 5.0 + 0.1 * jax.random.normal(jax.random.key(0), (200, 2))
    res = se.fit(
        Gaussian.standard(2),
        data,
        strategy=se.strategies.with_observers(drivers(64, 0.1, init="data"), 256),
        optimizer=optax.sgd(0.0),
        num_steps=1,
        key=jax.random.key(1),
        progress=False,
    )
    obs = res.state.observers
    p = np.asarray(jax.nn.softmax(obs.log_weights))
    assert np.all(np.abs(p @ np.asarray(obs.position)) < 0.5)
    assert np.all(np.asarray(res.state.position).mean(0) > 3.0)  # one step of h=0.1: ~4.5


def test_reseeding_needs_observers():
    with pytest.raises(ValueError, match="observers"):
        se.Jarzynski(128, 0.1, reseed_every=10)
    with pytest.raises(ValueError, match="reseed_every"):
        se.Jarzynski(128, 0.1, num_observers=8, reseed_every=-1)


@pytest.mark.parametrize("probes", [64, 8])  # 64 walkers: all probed, or every 8th
@pytest.mark.parametrize("active", [None, 16])
def test_subsampled_feedback_correction_is_unbiased(monkeypatch, probes, active):
    """With more walkers than probes, every stride-th walker is probed and its term scaled by the
    stride; averaged over keys it equals q_i delta_i^T S (delta_i - m), computed here exactly
    from per-walker parameter gradients. With ``active = 16`` only a moved batch of 16 walkers
    entered the gradient (q = 0 elsewhere): the probes go to those 16 (every 2nd of them with
    8 probes), and the others get no correction."""
    from smc_ebm.kernels._evaluate import split_energy
    from smc_ebm.strategies import _feedback

    monkeypatch.setattr(_feedback, "CORRECTION_PROBES", probes)
    data = se.datasets.two_mode_teacher(jax.random.key(0), n=200, dim=3, a=-2.0, b=2.0)
    energy = se.energies.GaussianMixture.init(jax.random.key(1), 2, 3, scale=0.5)
    strategy = se.Jarzynski(64, 0.1)
    state = strategy.init_state(jax.random.key(2), energy, data.samples, None)
    q = jax.random.dirichlet(jax.random.key(3), jnp.ones(64))
    if active is not None:
        batch = jax.random.choice(jax.random.key(5), 64, (active,), replace=False)
        q = jnp.zeros(64).at[batch].set(jax.nn.softmax(jnp.log(q[batch])))
    # The weights with which the walkers entered the gradient, and that gradient estimate.
    from smc_ebm.kernels._evaluate import evaluate

    state = state._replace(grad_weights=q, param_grad=evaluate(energy, state.position)[2](q))
    params, static = split_energy(energy)
    optimizer = se.optim.by_field(logits=optax.sgd(0.1), means=optax.sgd(0.02))
    opt_state = optimizer.init(params)
    grad = jax.tree.map(jnp.zeros_like, params)

    @jax.jit
    def estimate(key):
        return _feedback.correction(key, optimizer, grad, opt_state, params, static, state, active)[
            2
        ]

    keys = jax.random.split(jax.random.key(4), 20000)
    est = np.asarray(jax.lax.map(estimate, keys, batch_size=1000), np.float64)

    # Exact: per-walker gradients, S = lr per field.
    def u_of(p, x):
        return eqx.combine(p, static)(x)

    per = jax.vmap(jax.grad(u_of), in_axes=(None, 0))(params, state.position)
    flat = np.concatenate(
        [np.asarray(per.logits).reshape(64, -1), np.asarray(per.means).reshape(64, -1)], axis=1
    )
    s = np.concatenate([np.full(params.logits.size, 0.1), np.full(params.means.size, 0.02)])
    m = np.asarray(q) @ flat
    exact = np.asarray(q) * np.einsum("ij,j,ij->i", flat, s, flat - m)
    se_mc = est.std(axis=0) / np.sqrt(len(keys))
    # Every walker in the gradient is probed (none is skipped for good), the others never,
    # and the mean is within z_bound(128) MC sd (64 walkers here and 64 below).
    in_grad = np.asarray(q) > 0
    assert np.all(np.abs(est).max(axis=0)[in_grad] > 0)
    assert np.all(est[:, ~in_grad] == 0)
    np.testing.assert_array_less(np.abs(est.mean(axis=0) - exact), z_bound(128) * se_mc + 1e-9)

    # ``exact=True`` computes the same self-terms from per-walker gradients: equal to
    # ``exact`` for every probed walker (all of them when the stride is 1), otherwise
    # unbiased over the random offset.
    def estimate_exact(key):
        return _feedback.correction(
            key, optimizer, grad, opt_state, params, static, state, active, exact=True
        )[2]

    ex = np.asarray(jax.lax.map(jax.jit(estimate_exact), keys[:2000]), np.float64)
    if (active or 64) <= probes:
        np.testing.assert_allclose(ex, np.broadcast_to(exact, ex.shape), rtol=1e-4, atol=1e-7)
    else:
        assert np.all(ex[:, ~in_grad] == 0)
        se_ex = ex.std(axis=0) / np.sqrt(len(ex))
        np.testing.assert_array_less(np.abs(ex.mean(axis=0) - exact), z_bound(128) * se_ex + 1e-9)


class _OwnParamGrad(se.energies.GaussianMixture):
    """A mixture whose own ``evaluate_batch`` gives a ``param_grad`` JAX cannot transpose."""

    def evaluate_batch(self, x):
        u, g, param_grad = super().evaluate_batch(x)
        return u, g, lambda w: param_grad(jnp.abs(w))


@pytest.mark.parametrize("name", ["closed form", "per walker", "network", "not transposable"])
def test_directional_parameter_derivatives_match_forward_mode(key, name):
    """The correction's ``d_i = dU(x_i)/dtheta . v`` equals forward-mode differentiation of
    the energies, whether it comes from the transpose of the weighted parameter gradient
    (closed form, per walker) or from forward mode itself (network, not transposable)."""
    from test_weights import _GenericMixture

    from smc_ebm.kernels._evaluate import split_energy
    from smc_ebm.strategies._feedback import (
        directional_derivatives as _param_directional_derivatives,
    )

    k1, k2, k3 = jax.random.split(key, 3)
    if name == "network":
        energy = se.energies.MLP(3, 16, 2, key=k1, confinement=1.0)
    else:
        cls = {
            "closed form": se.energies.GaussianMixture,
            "per walker": _GenericMixture,
            "not transposable": _OwnParamGrad,
        }[name]
        base = se.energies.GaussianMixture.init(k1, 3, 3, scale=2.0)
        energy = cls(base.means, jnp.array([0.3, -0.2, 0.5]), sigma=1.3)
    params, static = split_energy(energy)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(k2, len(leaves))
    v = jax.tree.unflatten(
        treedef, [jax.random.normal(k, p.shape) for k, p in zip(keys, leaves, strict=True)]
    )
    x = 2.0 * jax.random.normal(k3, (40, 3))
    d = _param_directional_derivatives(params, static, x, v)
    _, ref = jax.jvp(lambda p: jax.vmap(eqx.combine(p, static))(x), (params,), (v,))
    assert d.shape == (40,)
    np.testing.assert_allclose(d, ref, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(ref))))


def _sgd_problem(strategy, lr=0.1):
    from smc_ebm.kernels import split_energy

    data = se.datasets.two_mode_teacher(jax.random.key(0), n=400, dim=2, a=-2.0, b=2.0)
    energy = se.energies.GaussianMixture.init(jax.random.key(1), 2, 2, scale=1.0)
    state = strategy.init_state(jax.random.key(2), energy, data.samples, energy.log_partition())
    params, static = split_energy(energy)
    opt = optax.sgd(lr)
    st, grad, _, _, _ = strategy.gradient(jax.random.key(3), state, energy, data.samples)
    return energy, params, static, opt, opt.init(params), st, grad


def test_exact_feedback_correction_is_the_self_term_with_its_sign():
    """With SGD of rate lr the update's Jacobian is -lr I, so the correction added to walker
    i's log-weight is q_i lr delta_i . (delta_i - m), delta_i = dU(x_i)/dtheta and
    m = sum_j q_j delta_j: computed here from per-walker ``jax.grad`` in float64 numpy, with no
    code of the correction."""
    from smc_ebm.strategies import _feedback

    lr = 0.1
    strategy = se.Jarzynski(64, 0.1, feedback_estimator="exact")
    energy, params, static, opt, opt_state, st, grad = _sgd_problem(strategy, lr)
    _, _, corr = _feedback.correction(
        jax.random.key(4), opt, grad, opt_state, params, static, st, exact=True
    )
    deltas = jax.vmap(lambda x: jax.grad(lambda p: eqx.combine(p, static)(x))(params))(st.position)
    d = np.concatenate(
        [
            np.asarray(leaf, np.float64).reshape(st.position.shape[0], -1)
            for leaf in jax.tree.leaves(deltas)
        ],
        axis=1,
    )
    q = np.asarray(st.grad_weights, np.float64)
    m = q @ d
    expected = q * lr * np.sum(d * (d - m), axis=1)
    np.testing.assert_allclose(np.asarray(corr, np.float64), expected, rtol=2e-3, atol=1e-8)
    assert np.max(np.abs(expected)) > 1e-4


def test_flow_jarzynski_adds_the_correction_to_its_own_walkers():
    """FlowJarzynski's update rule changes its walkers' log-weights by exactly the correction
    that the rule's estimator gives for the bare walker state (same key), sign included."""
    from smc_ebm.strategies import _feedback

    small = dict(num_proposals=8, num_global=1, num_local=1, flow_layers=2, flow_width=8)
    strategy = se.FlowJarzynski(64, step_size=0.05, feedback_correction=True, **small)
    energy, params, static, opt, opt_state, st, grad = _sgd_problem(strategy)
    rule = strategy.update_rule().prepare(opt, opt_state, params)
    key = jax.random.key(5)
    _, _, new = rule.update(key, opt, grad, opt_state, params, static, st, jnp.asarray(0))
    _, _, corr = _feedback.correction(key, opt, grad, opt_state, params, static, st.walkers)
    got = np.asarray(new.log_weights) - np.asarray(st.log_weights)
    np.testing.assert_allclose(got, np.asarray(corr), rtol=1e-5, atol=1e-7)
    assert np.max(np.abs(np.asarray(corr))) > 0


RESEED_EVERY = 25


def _reseeded_gaussian_errors(strategy, num_steps, seeds=32):
    """Per seed, the errors of the walkers' estimates at the end of an SGD run on the mean and
    scale of a 2-d Gaussian (rate 0.05, from N(0, I) toward data with sd (1.5, 0.7); the
    setting of benchmarks/feedback_cross_step.py), each against the closed form for the run's
    own final parameters (m, s): the reported log Z and the drivers' log Z minus
    sum log(sqrt(2 pi) |s|); the drivers' weighted means of ((x - m) / s)^2 minus 1 and of
    (x - m) / s (two coordinates each); then |s|."""
    bench = load_script(Path(__file__).resolve().parents[1] / "benchmarks/feedback_cross_step.py")
    assert bench.LR == 0.05
    out = []
    for res in bench.gaussian_runs(strategy, num_steps, seeds):
        m = np.asarray(res.energy.mean, np.float64)
        s = np.abs(np.asarray(res.energy.scale, np.float64))
        exact_log_z = np.sum(np.log(np.sqrt(2 * np.pi) * s))
        a = np.asarray(res.state.log_weights, np.float64)
        p = np.exp(a - a.max())
        drivers_log_z = float(res.state.log_Z_anchor) + a.max() + np.log(p.mean())
        p /= p.sum()
        r = (np.asarray(res.state.position, np.float64) - m) / s
        out.append(
            [res.log_Z - exact_log_z, drivers_log_z - exact_log_z, *(p @ r**2 - 1), *(p @ r), *s]
        )
    return np.asarray(out)


def test_reseeding_from_the_observers_removes_the_drivers_feedback_bias():
    """SGD (rate 0.05) on the mean and scale of a Gaussian, N = 64 drivers with the feedback
    correction off (their weights carry the whole self-influence of maths 2.6), 256 MALA
    observers, reseeding every 25 steps. Truths, for each run's own final parameters (m, s):
    log Z = sum log(sqrt(2 pi) |s|), E[((x - m) / s)^2] = 1 and E[(x - m) / s] = 0 (the model
    term of the scale and of the mean, up to the factors 1/s). One step after the 8th reseed,
    over 32 seeds, the mean errors of the observers' log Z (the reported one), of the drivers'
    log Z and of the drivers' four moment estimates are each within z_bound(6) standard errors
    (SE: their sd over the seeds / sqrt(32); 6 comparisons). The drivers' one step since the
    reseed has its self-term, -(lr / N) E|delta - E delta|^2 = -(0.05 / 64) sum_j 3 / s_j^2 to
    first order (delta = dU/d(m, s): variances 1 / s^2 and 2 / s^2 per coordinate), about 0.006
    nats, half an SE: it is added back to the drivers' error before the comparison.

    Without reseeding, the drivers' log Z at the same step is 0.85 nats low (measured -0.85 +-
    0.02 over 32 seeds, sd 0.12): over 8 seeds (enough here) that check fails by about 20 SE,
    more than the 10 asserted. After a reseed the bias regrows: 24 steps after
    one it was measured -0.099 +- 0.013, about a ninth of the unreseeded run's 201 steps. The
    observers pick up a little of the drivers' feedback while copies of them drive the path
    just after each reseed (maths 2.6; measured -0.013 +- 0.008 here, within the bound)."""
    lr, n, steps = 0.05, 64, 8 * RESEED_EVERY + 1

    def z_scores(strategy, seeds=32):
        e = _reseeded_gaussian_errors(strategy, steps, seeds)
        e[:, 1] += lr / n * np.sum(3.0 / e[:, 6:] ** 2, axis=1)  # the one step's self-term
        return _z_of_mean(e[:, :6])

    z = z_scores(
        se.Jarzynski(
            n, 0.3, num_observers=256, reseed_every=RESEED_EVERY, feedback_correction=False
        )
    )
    assert np.all(np.abs(z) < z_bound(6)), z
    z_plain = z_scores(se.Jarzynski(n, 0.3, num_observers=256, feedback_correction=False), 8)
    assert z_plain[1] < -10, z_plain
