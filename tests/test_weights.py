"""The Jarzynski identity: weighted walkers are exact for a moving target, at any step size.

Target: rho_t = N(m(t), diag s(t)^2) along a fixed schedule (tests/_moving.py), K = 60 steps,
h = 0.3. Unless stated otherwise the walkers are never resampled, so they are independent
and the standard error of every self-normalised estimate is the delta-method one computed
from the weighted sample itself (tests/_stats.py). Every comparison allows ``z_bound(15)``
= 3.99 standard errors: a false-alarm budget of 1e-3 per test (tests/_stats.py).
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from _moving import CHECKPOINTS, DIM, STEP_SIZE, exact, schedule, simulate
from _stats import (
    log_mean_exp_and_se,
    promotion_for,
    softmax,
    weighted_mean_and_se,
    z_bound,
)

import smc_ebm as se
from smc_ebm.energies import Gaussian, GaussianMixture, Tilted
from smc_ebm.kernels import ula_log_alpha
from smc_ebm.smc import ais_increment, jarzynski_increment, row_sum

N = 2000
# Standard errors allowed: the largest family here is 15 comparisons (3 checkpoints x 2
# coordinates x 2 moments, and log Z at each), within the per-test false-alarm budget.
Z = z_bound(15)


@functools.cache
def _run(name):
    strategies = {
        "ula": se.Jarzynski(N, STEP_SIZE, resampling=se.NoResampling()),
        "mala": se.Jarzynski(N, STEP_SIZE, kernel="mala", resampling=se.NoResampling()),
        "mala-x3": se.Jarzynski(
            N,
            STEP_SIZE,
            kernel=se.kernels.Repeated(se.kernels.MALA(STEP_SIZE), 3),
            resampling=se.NoResampling(),
        ),
        "unweighted": se.Unweighted(N, STEP_SIZE),
        "batch-all": se.Jarzynski(
            N, STEP_SIZE, walker_batch=N // 4, walker_grad="all", resampling=se.NoResampling()
        ),
        "batch-batch": se.Jarzynski(
            N, STEP_SIZE, walker_batch=N // 4, walker_grad="batch", resampling=se.NoResampling()
        ),
    }
    out = simulate(strategies[name], jax.random.split(jax.random.key(11), 1))
    return jax.tree.map(lambda v: v[0], out)  # one population


def _truth():
    means, scales = schedule()
    return exact(means, scales), np.asarray(means, np.float64), np.asarray(scales, np.float64)


def _assert_within(est, se_, truth, what):
    est, se_, truth = np.atleast_1d(est), np.atleast_1d(se_), np.atleast_1d(truth)
    assert np.all(np.abs(est - truth) < Z * se_), f"{what}: {est} vs {truth} (SE {se_})"


def _check_moments_and_log_Z(out):
    ex, _, _ = _truth()
    for k in CHECKPOINTS:
        x, a = out["x"][k], out["a"][k]
        m1, s1 = weighted_mean_and_se(x, a)
        _assert_within(m1, s1, ex["m1"][k + 1], f"E[x] at step {k + 1}")
        m2, s2 = weighted_mean_and_se(x**2, a)
        _assert_within(m2, s2, ex["m2"][k + 1], f"E[x^2] at step {k + 1}")
        lz, slz = log_mean_exp_and_se(a)
        # log Z_k = log Z_0 + log mean e^{A_k}; the strategy's own estimate must be that one.
        np.testing.assert_allclose(out["log_Z"][k], ex["log_Z"][0] + lz, atol=1e-4)
        _assert_within(out["log_Z"][k], slz, ex["log_Z"][k + 1], f"log Z at step {k + 1}")


def _grad_terms(x, k):
    """Per-walker dU/dmean and dU/dscale of the Gaussian target rho_{k+1}."""
    _, means, scales = _truth()
    m, s = means[k + 1], scales[k + 1]
    x = np.asarray(x, np.float64)
    return -(x - m) / s**2, -((x - m) ** 2) / s**3


# --------------------------------------------------------------------------- increments
def test_jarzynski_increment_is_the_log_ratio_of_backward_and_forward_kernels(key):
    """Delta A = log[e^{-U1(x')} q1(x'->x)] - log[e^{-U0(x)} q0(x->x')], q = ULA kernel."""
    h = 0.37
    k1, k2, k3, k4 = jax.random.split(key, 4)
    e0 = GaussianMixture.init(k1, 3, 2, scale=1.5)
    e1 = GaussianMixture(e0.means + 0.3, e0.logits + jnp.array([0.1, -0.2, 0.4]), sigma=1.0)
    x = jax.random.normal(k2, (20, 2))
    y = x + jax.random.normal(k3, (20, 2))
    u0, g0 = jax.vmap(jax.value_and_grad(e0))(x)
    u1, g1 = jax.vmap(jax.value_and_grad(e1))(y)
    inc = np.asarray(jarzynski_increment(x, u0, g0, y, u1, g1, h))
    # The one-reduction form equals the two alpha terms of DESIGN 1.1, step 3.
    alphas = ula_log_alpha(u0, g0, x, y, h) - ula_log_alpha(u1, g1, y, x, h)
    np.testing.assert_allclose(inc, alphas, rtol=1e-5, atol=1e-5)

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    u0, g0, u1, g1 = (np.asarray(v, np.float64) for v in (u0, g0, u1, g1))
    cov = 2 * h * np.eye(2)
    fwd = [scipy.stats.multivariate_normal.logpdf(y[i], x[i] - h * g0[i], cov) for i in range(20)]
    bwd = [scipy.stats.multivariate_normal.logpdf(x[i], y[i] - h * g1[i], cov) for i in range(20)]
    ref = (-u1 + np.array(bwd)) - (-u0 + np.array(fwd))
    np.testing.assert_allclose(inc, ref, rtol=1e-4, atol=1e-4)
    # With the kernel of an unchanged target, detailed balance fails for ULA: the increment
    # is NOT zero (it is what corrects the ULA bias).
    assert np.max(np.abs(inc)) > 0.1


@pytest.mark.parametrize("shape", [(1000, 50), (7, 3), (4, 6, 5), (9,)])
def test_row_sum_is_the_sum_over_the_last_axis(key, shape):
    """``row_sum`` (a product with ones on CPU, a reduction elsewhere) sums the last axis.

    Float32 sums of ``d`` terms differ from the float64 sum by at most about
    ``d * eps * sum |z|`` whatever their order; the bound below is that with ``eps = 2^-24``.
    """
    z = jax.random.normal(key, shape)
    ref = np.sum(np.asarray(z, np.float64), axis=-1)
    bound = shape[-1] * 2.0**-24 * np.sum(np.abs(np.asarray(z, np.float64)), axis=-1)
    for out in (row_sum(z), jax.jit(row_sum)(z)):
        assert out.shape == shape[:-1] and out.dtype == z.dtype
        assert np.all(np.abs(np.asarray(out, np.float64) - ref) <= bound)


def _evaluate_and_autodiff(energy, x):
    """``kernels.evaluate`` at ``x`` with weights that depend on U and G, and its reference:
    per-sample autodiff of U, G and the weighted sum of the per-sample parameter gradients.

    Returns ``(u, g, param_grad(w), ref_u, ref_g, ref_param_grad)``.
    """
    from smc_ebm.kernels import _evaluate

    u, g, param_grad = _evaluate.evaluate(energy, x)
    w = jax.nn.softmax(-u + 0.1 * jnp.sum(g * g, axis=-1))
    params, static = _evaluate.split_energy(energy)
    ref_u, ref_g = jax.vmap(jax.value_and_grad(energy))(x)
    per_sample = jax.vmap(jax.grad(lambda p, xi: eqx.combine(p, static)(xi)), (None, 0))(params, x)
    ref = jax.tree.map(lambda j: jnp.einsum("n,n...->...", w, j), per_sample)
    return u, g, param_grad(w), ref_u, ref_g, ref


class _GenericMixture(GaussianMixture):
    """A mixture without its closed-form evaluation: ``evaluate`` takes the generic paths."""

    def evaluate_batch(self, x):
        return None


@pytest.mark.parametrize("per_walker", [True, False])
def test_evaluate_paths_give_the_same_weighted_param_grad(key, per_walker, monkeypatch):
    """Per-walker Jacobians (small energies) and the second backward pass (large ones) agree
    with the plain weighted sum of per-sample gradients, for weights that depend on U and G."""
    from smc_ebm.kernels import _evaluate

    monkeypatch.setattr(_evaluate, "PER_WALKER_PARAMS_PER_DIM", 10**9 if per_walker else 0)
    k1, k2 = jax.random.split(key)
    energy = _GenericMixture(**vars(GaussianMixture.init(k1, 3, 4, scale=1.5)))
    assert energy.evaluate_batch(jnp.zeros((2, 4))) is None
    x = jax.random.normal(k2, (50, 4))
    u, g, got, ref_u, ref_g, ref = _evaluate_and_autodiff(energy, x)
    np.testing.assert_allclose(u, ref_u, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(g, ref_g, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _mlp_energies(key):
    ks = jax.random.split(key, 5)
    base = se.energies.Gaussian(jnp.full(3, 0.3), jnp.full(3, 1.2))
    tilted_net = se.energies.MLP(3, 16, 2, key=ks[2], activation=jnp.tanh)
    no_bias = eqx.tree_at(
        lambda m: m.net,
        se.energies.MLP(3, 8, 1, key=ks[3]),
        eqx.nn.MLP(3, "scalar", 8, 1, use_bias=False, use_final_bias=False, key=ks[3]),
    )
    return {
        "mlp": se.energies.MLP(3, 16, 2, key=ks[0], confinement=0.7),
        "mlp_depth0": se.energies.MLP(3, 16, 0, key=ks[1]),
        "mlp_no_bias": no_bias,
        "tilted": Tilted(tilted_net, base),
        "tilted_flow_base": Tilted(
            se.energies.MLP(3, 16, 2, key=ks[4], zero_init=True),
            se.flows.base_distribution(se.flows.make_flow(ks[4], 3, sigma=0.8)),
        ),
    }


def _assert_evaluate_batch_matches_autodiff(energy, x):
    """The energy's ``evaluate_batch`` is taken (not ``None``) and gives per-sample autodiff's
    U, G and weighted parameter gradient, the gradient with the energy's pytree structure (so
    optimizer states fit)."""
    assert energy.evaluate_batch(x) is not None
    u, g, got, ref_u, ref_g, ref = _evaluate_and_autodiff(energy, x)
    assert jax.tree.structure(got) == jax.tree.structure(ref)
    np.testing.assert_allclose(u, ref_u, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g, ref_g, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["mlp", "mlp_depth0", "mlp_no_bias", "tilted", "tilted_flow_base"])
def test_evaluate_batch_of_networks_matches_autodiff(key, name):
    """The shared-backward path of MLP (and Tilted MLP) energies gives the same U, G and
    weighted parameter gradient as per-sample autodiff, for weights that depend on U and G;
    the gradient pytree has the energy's structure (so optimizer states fit)."""
    k1, k2 = jax.random.split(key)
    _assert_evaluate_batch_matches_autodiff(_mlp_energies(k1)[name], jax.random.normal(k2, (40, 3)))


@pytest.mark.parametrize("sigma", [1.0, 0.7])
def test_evaluate_batch_of_mixtures_matches_autodiff(key, sigma):
    """The mixture's closed-form U, G and weighted parameter gradient (responsibilities kept
    from the G pass) equal per-sample autodiff, for weights that depend on U and G."""
    k1, k2, k3 = jax.random.split(key, 3)
    energy = GaussianMixture.init(k1, 3, 5, scale=1.5, sigma=sigma)
    energy = eqx.tree_at(lambda e: e.logits, energy, jax.random.normal(k3, (3,)))
    _assert_evaluate_batch_matches_autodiff(energy, 2.0 * jax.random.normal(k2, (60, 5)))


def test_evaluate_batch_of_mixtures_falls_back_for_subclasses(key):
    class Shifted(GaussianMixture):
        def __call__(self, x):
            return super().__call__(x) + 1.0

    energy = Shifted(**vars(GaussianMixture.init(key, 2, 3)))
    assert energy.evaluate_batch(jnp.zeros((4, 3))) is None


def test_evaluate_batch_falls_back_for_learnt_activations(key):
    energy = se.energies.MLP(3, 8, 1, key=key)
    prelu = eqx.nn.PReLU()
    net = eqx.nn.MLP(3, "scalar", 8, 1, activation=prelu, key=key)
    energy = eqx.tree_at(lambda m: m.net, energy, net)
    assert energy.evaluate_batch(jnp.zeros((5, 3))) is None


def test_evaluate_picks_per_walker_gradients_only_for_small_energies(key):
    from smc_ebm.kernels._evaluate import PER_WALKER_PARAMS_PER_DIM, n_params

    gmm = GaussianMixture.init(key, 2, 50)
    mlp = se.energies.MLP(50, 64, 2, key=key)
    assert n_params(gmm) == 2 * 51 <= PER_WALKER_PARAMS_PER_DIM * 50
    assert n_params(mlp) > PER_WALKER_PARAMS_PER_DIM * 50


def test_ais_increment_is_energy_difference():
    u_old = jnp.array([1.0, 2.5, -3.0])
    u_new = jnp.array([0.5, 2.5, 1.0])
    np.testing.assert_array_equal(np.asarray(ais_increment(u_old, u_new)), [0.5, 0.0, -4.0])


# --------------------------------------------------------------------------- identity
@pytest.mark.parametrize("kernel", ["ula", "mala", "mala-x3"])
def test_weighted_walkers_follow_the_moving_target(kernel):
    out = _run(kernel)
    _check_moments_and_log_Z(out)
    if kernel == "ula":
        np.testing.assert_array_equal(out["acc"], 1.0)
    else:
        # MALA at h = 0.3 on scales 0.6..1.2 rejects some moves, but not most.
        assert np.all((out["acc"] > 0.5) & (out["acc"] < 1.0))
    assert not out["resampled"].any()
    # The weights have degenerated (the test is not trivial) but are still usable.
    assert 0.2 < out["ess"][-1] < 0.95


def test_repeated_mala_moves_keep_more_of_the_weights():
    """Three MALA steps a move follow the moving target more closely than one: the weights
    that carry the difference degenerate less (final ESS 0.91 against 0.78 on this seed)."""
    one, three = _run("mala"), _run("mala-x3")
    assert three["ess"][-1] > one["ess"][-1] + 0.05, (three["ess"][-1], one["ess"][-1])


def test_repeated_kernel_is_its_steps_in_sequence(key):
    """One move of Repeated(MALA, 3) is three MALA transitions in a plain loop; the move's
    energy is the old energy at the final positions (what the AIS increment reads)."""
    energy = Gaussian(jnp.array([0.5, -1.0]), jnp.array([0.7, 1.3]))
    mala = se.kernels.MALA(0.4)
    state = mala.init(jax.random.normal(key, (64, 2)), energy)
    k_move = jax.random.key(3)
    x, info = se.kernels.Repeated(mala, 3).move(k_move, state, energy)
    loop, accs = state, []
    for k in jax.random.split(k_move, 3):
        loop, step_info = mala.step(k, loop, energy)
        accs.append(step_info.acceptance)
    # Equal up to float32 rounding (the scan compiles what the loop runs op by op).
    np.testing.assert_allclose(np.asarray(x), np.asarray(loop.position), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(info.energy), np.asarray(jax.vmap(energy)(x)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(info.acceptance), np.mean(np.stack(accs), 0), rtol=1e-6)
    assert not np.array_equal(np.asarray(x), np.asarray(state.position))
    x1, _ = se.kernels.Repeated(mala, 1).move(k_move, state, energy)
    x0, _ = mala.move(k_move, state, energy)
    np.testing.assert_array_equal(np.asarray(x1), np.asarray(x0))
    assert se.kernels.Repeated(se.kernels.MALA(0.4), 3) == se.kernels.Repeated(mala, 3)
    assert se.kernels.Repeated(mala, 2) != se.kernels.Repeated(mala, 3)


def test_repeated_kernel_rejects_what_it_cannot_weight():
    with pytest.raises(ValueError, match="invariant"):
        se.kernels.Repeated(se.kernels.ULA(0.1), 3)
    with pytest.raises(ValueError, match="num_steps"):
        se.kernels.Repeated(se.kernels.MALA(0.1), 0)
    with pytest.raises(TypeError, match="Kernel"):
        se.kernels.Repeated("mala", 3)


@pytest.mark.parametrize("kernel", ["ula", "mala"])
def test_weighted_param_grad_and_model_energy(kernel):
    """state.param_grad = sum_i p_i dU/dtheta(X_i) -> E_rho[dU/dtheta] = (0, -1/s)."""
    out = _run(kernel)
    ex, _, _ = _truth()
    for k in CHECKPOINTS:
        x, a = out["x"][k], out["a"][k]
        p = softmax(a)
        f_mean, f_scale = _grad_terms(x, k)
        # Exactly the weighted sum over all walkers (float32 round-off).
        np.testing.assert_allclose(out["pg_mean"][k], p @ f_mean, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(out["pg_scale"][k], p @ f_scale, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(out["model_energy"][k], p @ out["energy"][k], rtol=1e-4)
        # ... and, statistically, the exact expectation.
        m, s = weighted_mean_and_se(f_mean, a)
        _assert_within(m, s, ex["dmean"][k + 1], f"E[dU/dmean] at step {k + 1}")
        m, s = weighted_mean_and_se(f_scale, a)
        _assert_within(m, s, ex["dscale"][k + 1], f"E[dU/dscale] at step {k + 1}")
        # E_rho[U] = d / 2 for a Gaussian.
        m, s = weighted_mean_and_se(out["energy"][k], a)
        _assert_within(m, s, DIM / 2, f"E[U] at step {k + 1}")


def test_unweighted_ula_is_visibly_biased_at_this_step_size():
    """The same moves without weights miss the target by more than their own error bars.

    This is what makes the identity tests above meaningful at h = 0.3.
    """
    out = _run("unweighted")
    ex, _, _ = _truth()
    np.testing.assert_array_equal(out["a"], 0.0)
    assert np.all(np.isnan(out["log_Z"]))
    assert np.all(out["ess"] == 1.0)
    k = CHECKPOINTS[-1]
    x, a = out["x"][k], out["a"][k]
    m2, s2 = weighted_mean_and_se(x**2, a)
    # ULA inflates the variance of coordinate 1 (scale 0.6) by ~1/(1 - h/2s^2) ~ 1.7.
    assert abs(m2[1] - ex["m2"][k + 1][1]) > Z * s2[1], (m2, ex["m2"][k + 1], s2)
    # ... in the direction of the ULA bias (too wide).
    assert m2[1] > ex["m2"][k + 1][1]


# --------------------------------------------------------------------------- mini-batches
@pytest.mark.parametrize("walker_grad", ["all", "batch"])
def test_minibatched_walkers_follow_the_moving_target(walker_grad):
    """Algorithm 2: N/4 walkers move per step, the frozen ones get the AIS increment."""
    out = _run(f"batch-{walker_grad}")
    _check_moments_and_log_Z(out)
    ex, _, _ = _truth()
    prev = np.concatenate([out["x0"][None], out["x"][:-1]])
    moved = np.any(out["x"] != prev, axis=-1)  # (K, N); a ULA move changes x a.s.
    np.testing.assert_array_equal(moved.sum(1), N // 4)
    for k in CHECKPOINTS:
        x, a = out["x"][k], out["a"][k]
        f_mean, f_scale = _grad_terms(x, k)
        if walker_grad == "all":
            sel = np.ones(N, bool)
        else:  # self-normalised over the moved batch
            sel = moved[k]
        p = softmax(a[sel])
        np.testing.assert_allclose(out["pg_mean"][k], p @ f_mean[sel], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(out["pg_scale"][k], p @ f_scale[sel], rtol=1e-4, atol=1e-4)
        m, s = weighted_mean_and_se(f_scale[sel], a[sel])
        _assert_within(m, s, ex["dscale"][k + 1], f"E[dU/dscale] at step {k + 1}")
        m, s = weighted_mean_and_se(f_mean[sel], a[sel])
        _assert_within(m, s, ex["dmean"][k + 1], f"E[dU/dmean] at step {k + 1}")


# --------------------------------------------------------------------------- resampling
R = 16  # independent populations
N_R = 500


@pytest.mark.parametrize("method", sorted(se.smc.RESAMPLERS))
def test_resampled_walkers_follow_the_moving_target(method):
    """With ESS resampling (threshold 0.9: many resamplings) the estimates stay exact.

    Resampling makes the walkers of one population dependent, so the standard error is taken
    from R = 16 independent populations: SE = std over populations / sqrt(R). The per-
    population bias of the self-normalised estimates is O(1/N) ~ 1e-3, a fraction of the SE.
    """
    strategy = se.Jarzynski(
        N_R, STEP_SIZE, resampling=se.ESSResampling(threshold=0.9, method=method)
    )
    with promotion_for(method):
        out = simulate(strategy, jax.random.split(jax.random.key(5), R))
    ex, _, _ = _truth()
    n_res = out["resampled"].sum(1)
    assert np.all(n_res >= 5), n_res  # resampling really happened, in every population
    # Right after a resampling the weights are uniform.
    assert np.all(out["a"][out["resampled"]] == 0.0)
    np.testing.assert_allclose(out["ess"][out["resampled"]], 1.0, rtol=1e-6)
    for k in CHECKPOINTS:
        p = np.stack([softmax(a) for a in out["a"][:, k]])  # (R, N)
        x = out["x"][:, k].astype(np.float64)  # (R, N, d)
        for name, est, truth in [
            ("E[x]", np.einsum("rn,rnd->rd", p, x), ex["m1"][k + 1]),
            ("E[x^2]", np.einsum("rn,rnd->rd", p, x**2), ex["m2"][k + 1]),
            ("log Z", out["log_Z"][:, k].astype(np.float64), ex["log_Z"][k + 1]),
        ]:
            se_ = est.std(0, ddof=1) / np.sqrt(R)
            _assert_within(est.mean(0), se_, truth, f"{name} at step {k + 1} ({method})")


@pytest.mark.parametrize("method", sorted(se.smc.RESAMPLERS))
def test_log_Z_is_continuous_across_a_resampling(method):
    """Resampling re-anchors log Z: the estimate just after equals the one just before.

    From the same state and key, one strategy resamples and the other does not; the move and
    the weights are the same, so the non-resampling one gives the estimate "just before".
    """
    h, n, num_steps = STEP_SIZE, 512, 40
    s_res = se.Jarzynski(n, h, resampling=se.ESSResampling(threshold=0.9, method=method))
    s_no = se.Jarzynski(n, h, resampling=se.NoResampling())
    means, scales = schedule(num_steps)

    def energy(k):
        return se.energies.Gaussian(means[k], scales[k])

    e0 = energy(0)
    state = s_res.init_state(jax.random.key(3), e0, jnp.zeros((1, DIM)), e0.log_partition())

    @jax.jit
    def run(state, keys):
        def body(state, inp):
            k, kk = inp
            st_r, did, _ = s_res.advance(kk, state, energy(k), energy(k + 1), k)
            st_n, _, _ = s_no.advance(kk, state, energy(k), energy(k + 1), k)
            rec = (
                did,
                s_res.ess_and_log_Z(st_r)[1],
                s_no.ess_and_log_Z(st_n)[1],
                st_r.position,
                st_n.position,
                st_r.log_weights,
                st_n.log_weights,
            )
            return st_r, rec

        return jax.lax.scan(body, state, (jnp.arange(num_steps), keys))[1]

    with promotion_for(method):
        recs = run(state, jax.random.split(jax.random.key(4), num_steps))
    did, lz_r, lz_n, x_r, x_n, a_r, a_n = jax.tree.map(np.asarray, recs)
    assert did.sum() >= 3, did
    # Equal up to float32 round-off: |log Z| < 3 and log-sum-exp of n terms in float32
    # loses a few ulps (~1e-7 each); 1e-5 is well above that and far below the MC error
    # (~0.03) that a missing or wrong re-anchoring would leave.
    np.testing.assert_allclose(lz_r, lz_n, rtol=0, atol=1e-5)
    for k in np.flatnonzero(did):
        assert np.all(a_r[k] == 0.0)
        # Every resampled walker is one of the moved walkers (an ancestor).
        d2 = ((x_r[k][:, None, :] - x_n[k][None, :, :]) ** 2).sum(-1)
        assert np.all(d2.min(1) < 1e-8)
        # Not a no-op: some walkers were duplicated.
        assert len(np.unique(x_r[k], axis=0)) < n
    # Without resampling the two strategies took the same move (XLA may fuse the two copies
    # differently, hence float round-off rather than bitwise equality).
    for k in np.flatnonzero(~did):
        np.testing.assert_allclose(x_r[k], x_n[k], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(a_r[k], a_n[k], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- slow, tighter
@pytest.mark.slow
@pytest.mark.parametrize("name", ["ula", "mala", "batch-all"])
def test_identity_has_no_bias_over_many_populations(name):
    """32 independent populations of 2000 walkers: the average estimate is 5.7x tighter.

    SE = std over populations / sqrt(32). The O(1/(N ESS)) bias of the self-normalised
    estimates is ~0.2 of that SE, so a systematic error of the weights as small as ~1 SE of a
    single population is caught here.
    """
    strategies = {
        "ula": se.Jarzynski(N, STEP_SIZE, resampling=se.NoResampling()),
        "mala": se.Jarzynski(N, STEP_SIZE, kernel="mala", resampling=se.NoResampling()),
        "batch-all": se.Jarzynski(N, STEP_SIZE, walker_batch=N // 4, resampling=se.NoResampling()),
    }
    reps = 32
    out = simulate(strategies[name], jax.random.split(jax.random.key(21), reps))
    ex, _, _ = _truth()
    for k in CHECKPOINTS:
        p = np.stack([softmax(a) for a in out["a"][:, k]])
        x = out["x"][:, k].astype(np.float64)
        for what, est, truth in [
            ("E[x]", np.einsum("rn,rnd->rd", p, x), ex["m1"][k + 1]),
            ("E[x^2]", np.einsum("rn,rnd->rd", p, x**2), ex["m2"][k + 1]),
            ("log Z", out["log_Z"][:, k].astype(np.float64), ex["log_Z"][k + 1]),
        ]:
            se_ = est.std(0, ddof=1) / np.sqrt(reps)
            _assert_within(est.mean(0), se_, truth, f"{what} at step {k + 1} ({name})")


@pytest.mark.parametrize("channels", [(3, 4, 5), (2,)])
def test_evaluate_batch_of_conv_energies_matches_autodiff(key, channels):
    """The conv energy's shared-backward path (adjoints of the pre-activations kept from the
    G pass) gives per-sample autodiff's U, G and weighted parameter gradient."""
    k1, k2 = jax.random.split(key)
    energy = se.energies.ConvEnergy(6, key=k1, channels=channels, confinement=0.5)
    _assert_evaluate_batch_matches_autodiff(energy, jax.random.normal(k2, (12, 36)))


def test_evaluate_batch_of_conv_energies_falls_back_for_subclasses(key):
    class Shifted(se.energies.ConvEnergy):
        def __call__(self, x):
            return super().__call__(x) + 1.0

    assert Shifted(4, key=key, channels=(2,)).evaluate_batch(jnp.zeros((3, 16))) is None
