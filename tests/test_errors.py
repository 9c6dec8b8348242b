"""Bad input raises ValueError naming the problem; divergence raises TrainingError."""

import dataclasses
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import smc_ebm as se
from smc_ebm.energies import Gaussian, GaussianMixture

DIM = 3


@pytest.fixture(scope="module")
def problem():
    data = se.datasets.two_mode_teacher(jax.random.key(0), n=300, dim=DIM)
    energy = GaussianMixture.init(jax.random.key(1), 2, DIM, scale=0.1)
    return np.asarray(data.samples), energy


def _fit(energy, data, strategy=None, **kw):
    args = {
        "strategy": strategy or se.Jarzynski(32, 0.1),
        "optimizer": optax.sgd(0.05),
        "num_steps": 5,
        "key": jax.random.key(2),
        "progress": False,
    }
    args.update(kw)
    return se.fit(energy, data, **args)


# --------------------------------------------------------------------------- data
def test_data_with_nan(problem):
    data, energy = problem
    bad = data.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf \(1 rows\)"):
        _fit(energy, bad)


def test_data_with_inf(problem):
    data, energy = problem
    bad = data.copy()
    bad[3, 0] = np.inf
    bad[9, 2] = -np.inf
    with pytest.raises(ValueError, match=r"NaN or inf \(2 rows\)"):
        _fit(energy, bad)


@pytest.mark.parametrize("shape", [(300,), (10, 30, DIM)])
def test_data_of_wrong_rank(problem, shape):
    _, energy = problem
    with pytest.raises(ValueError, match=r"data must be a 2-D array .*got shape"):
        _fit(energy, np.zeros(shape, np.float32))


def test_data_dimension_mismatch(problem):
    data, energy = problem
    with pytest.raises(
        ValueError, match=r"data dimension 2 does not match the energy's dimension 3"
    ):
        _fit(energy, data[:, :2])


def test_empty_data(problem):
    _, energy = problem
    with pytest.raises(ValueError, match="data is empty"):
        _fit(energy, np.zeros((0, DIM), np.float32))


def test_energy_not_finite_at_data(problem):
    data, _ = problem
    energy = Gaussian(jnp.zeros(DIM), jnp.zeros(DIM))  # zero scale: U = inf or nan
    with pytest.raises(ValueError, match="not finite at the data"):
        _fit(energy, data)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"num_steps": -1}, "num_steps must be >= 0"),
        ({"record_every": 0}, "record_every must be >= 1"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
    ],
)
def test_bad_fit_arguments(problem, kw, match):
    data, energy = problem
    with pytest.raises(ValueError, match=match):
        _fit(energy, data, **kw)


# --------------------------------------------------------------------------- strategies
WALKER_FACTORIES = [se.Jarzynski, se.PCD, se.Unweighted]


@pytest.mark.parametrize("factory", WALKER_FACTORIES)
@pytest.mark.parametrize("n", [1, 0, -5])
def test_too_few_walkers(factory, n):
    with pytest.raises(ValueError, match=r"num_walkers must be >= 2"):
        factory(n, 0.1)


def test_too_few_cd_walkers():
    with pytest.raises(ValueError, match=r"num_walkers must be >= 2"):
        se.CD(num_walkers=1)
    with pytest.raises(ValueError, match=r"num_steps must be >= 1"):
        se.CD(num_steps=0)


@pytest.mark.parametrize("h", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_step_size(h):
    for factory in WALKER_FACTORIES:
        with pytest.raises(ValueError, match=r"step_size must be a positive finite number"):
            factory(10, h)
    with pytest.raises(ValueError, match=r"step_size must be a positive finite number"):
        se.CD(step_size=h)


@pytest.mark.parametrize("threshold", [0.0, -0.5, 1.01, 2.0, float("nan")])
def test_bad_ess_threshold(threshold):
    with pytest.raises(ValueError, match=r"ESS threshold must be in \(0, 1\]"):
        se.ESSResampling(threshold=threshold)


def test_ess_threshold_bounds_are_accepted():
    assert se.ESSResampling(threshold=1.0).threshold == 1.0
    assert se.ESSResampling(threshold=1e-6).threshold == 1e-6


def test_unknown_resampling_method(key):
    with pytest.raises(ValueError, match=r"unknown resampling method 'sorted'.*systematic"):
        se.ESSResampling(method="sorted")
    with pytest.raises(ValueError, match=r"unknown resampling method 'sorted'"):
        se.IntervalResampling(method="sorted")
    with pytest.raises(ValueError, match=r"unknown resampling method 'sorted'"):
        se.smc.resample_indices(key, jnp.zeros(4), "sorted")


def test_bad_resampling_schedules():
    with pytest.raises(ValueError, match=r"every must be >= 1"):
        se.IntervalResampling(every=0)
    with pytest.raises(ValueError, match=r"start must be >= 0"):
        se.ESSResampling(start=-1)


@pytest.mark.parametrize("kernel", ["hmc", "ULA", ""])
def test_bad_kernel_name(kernel):
    with pytest.raises(ValueError, match=r"kernel must be one of \('ula', 'mala', 'flow'\)"):
        se.Jarzynski(10, 0.1, kernel=kernel)


@pytest.mark.parametrize("batch", [0, -1, 11])
def test_walker_batch_out_of_range(batch):
    with pytest.raises(ValueError, match=r"walker_batch must be in \[1, num_walkers=10\]"):
        se.Jarzynski(10, 0.1, walker_batch=batch)
    with pytest.raises(ValueError, match=r"walker_batch must be in \[1, num_walkers=10\]"):
        se.PCD(10, 0.1, walker_batch=batch)


def test_bad_walker_grad_init_and_anneal():
    with pytest.raises(ValueError, match=r"walker_grad must be 'all' or 'batch'"):
        se.Jarzynski(10, 0.1, walker_batch=5, walker_grad="some")
    with pytest.raises(ValueError, match=r"init must be 'model', 'data' or an array"):
        se.Jarzynski(10, 0.1, init="prior")
    with pytest.raises(ValueError, match=r"num_anneal must be >= 1"):
        se.Jarzynski(10, 0.1, num_anneal=0)


def _narrow_problem():
    """Data whose second coordinate barely varies (sd 0.01, like a digit's border pixel) and
    an energy that cannot sample itself (so the walkers are annealed from a base)."""
    energy = se.energies.MLP(2, 8, 1, key=jax.random.key(0), zero_init=True, confinement=1.0)
    data = jax.random.normal(jax.random.key(1), (200, 2)) * jnp.array([1.0, 0.01])
    return energy, data


def test_default_anneal_base_is_stable_for_narrow_data():
    """The data's fitted Gaussian has scale 0.01 on one coordinate, where a Langevin step of
    h = 0.1 diverges (it needs h < 2 s^2); the default base floors its scales at sqrt(h)."""
    energy, data = _narrow_problem()
    state = se.Jarzynski(256, 0.1, num_anneal=20).init_state(jax.random.key(2), energy, data, None)
    assert np.all(np.isfinite(np.asarray(state.position)))
    assert np.all(np.isfinite(np.asarray(state.log_weights)))


def test_annealing_that_diverges_names_the_problem():
    energy, data = _narrow_problem()
    strategy = se.Jarzynski(256, 0.1, num_anneal=20, anneal_base=Gaussian.fit_to(data))
    with pytest.raises(ValueError, match=r"annealing the initial walkers .* diverged: 256 of 256"):
        strategy.init_state(jax.random.key(2), energy, data, None)
    with pytest.raises(ValueError, match=r"pass a smaller step_size, a wider anneal_base"):
        se.fit(
            energy,
            data,
            strategy=strategy,
            optimizer=optax.sgd(0.1),
            num_steps=2,
            key=jax.random.key(3),
            progress=False,
        )


@pytest.mark.parametrize("shape", [(32, DIM + 1), (31, DIM), (32,)])
def test_init_array_of_wrong_shape(problem, shape):
    data, energy = problem
    strategy = se.Jarzynski(32, 0.1, init=np.zeros(shape, np.float32))
    with pytest.raises(
        ValueError, match=r"init array must have shape \(num_walkers, dim\) = \(32, 3\)"
    ):
        _fit(energy, data, strategy)


def test_init_array_not_finite(problem):
    data, energy = problem
    init = np.zeros((32, DIM), np.float32)
    init[4, 0] = np.nan
    with pytest.raises(ValueError, match=r"init array contains NaN or inf"):
        _fit(energy, data, se.Jarzynski(32, 0.1, init=init))


def test_bad_energy_parameters():
    with pytest.raises(ValueError, match=r"means must have shape \(K, d\)"):
        GaussianMixture(means=jnp.zeros(3), logits=jnp.zeros(3))
    with pytest.raises(ValueError, match=r"logits must have shape \(K,\) = \(2,\)"):
        GaussianMixture(means=jnp.zeros((2, 3)), logits=jnp.zeros(3))
    with pytest.raises(ValueError, match=r"sigma must be positive"):
        GaussianMixture(means=jnp.zeros((2, 3)), logits=jnp.zeros(2), sigma=0.0)
    with pytest.raises(ValueError, match=r"mean and scale must both have shape \(d,\)"):
        Gaussian(jnp.zeros(3), jnp.ones(2))
    with pytest.raises(ValueError, match=r"confinement must be >= 0"):
        se.energies.MLP(2, 4, 1, key=jax.random.key(0), confinement=-1.0)


# --------------------------------------------------------------------------- divergence
def _assert_training_error(err, energy0):
    assert isinstance(err, se.TrainingError) and isinstance(err, RuntimeError)
    assert isinstance(err.step, int) and err.step >= 0
    assert err.quantity in str(err) and f"step {err.step}" in str(err)
    res = err.result
    assert isinstance(res, se.FitResult)
    assert res.steps == err.step
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(res.energy))
    assert bool(jnp.all(jnp.isfinite(res.walkers)))
    # The history stops before the failing step.
    np.testing.assert_array_equal(res.history["step"], np.arange(err.step))
    if err.step == 0:  # nothing was learned: the initial energy is returned
        np.testing.assert_array_equal(np.asarray(res.energy.means), np.asarray(energy0.means))


def test_huge_step_size_raises_training_error(problem):
    data, energy = problem
    with pytest.raises(se.TrainingError) as info:
        _fit(energy, data, se.Jarzynski(32, 1e6), num_steps=30, chunk_size=10)
    err = info.value
    assert err.step >= 1  # the first steps are finite: their state is what comes back
    assert err.quantity in {
        "walker log-weights",
        "walker positions",
        "energy of the walkers",
        "gradient of the walkers' energy",
    }
    _assert_training_error(err, energy)
    # The kept state is exactly the state after the last finite step: the failing chunk is
    # replayed up to it, so it equals a run stopped there (same key, same chunks).
    ok = _fit(energy, data, se.Jarzynski(32, 1e6), num_steps=err.step, chunk_size=10)
    res = err.result
    for got, want in [
        (res.energy.means, ok.energy.means),
        (res.walkers, ok.walkers),
        (res.log_weights, ok.log_weights),
    ]:
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert res.log_Z == ok.log_Z


@jax.custom_jvp
def _flat_with_nan_slope(t):
    """Zero everywhere, with a NaN derivative where ``t > 1.5``."""
    return jnp.zeros_like(t)


@_flat_with_nan_slope.defjvp
def _flat_with_nan_slope_jvp(primals, tangents):
    (t,), (dt,) = primals, tangents
    return jnp.zeros_like(t), jnp.where(t > 1.5, jnp.nan, 0.0) * dt


class _NanSlope(eqx.Module):
    """A unit Gaussian energy whose gradient is NaN where ``x_0 > 1.5`` (its value stays finite)."""

    mean: jax.Array

    def __call__(self, x):
        return 0.5 * jnp.sum((x - self.mean) ** 2) + _flat_with_nan_slope(x[0])


@dataclasses.dataclass(frozen=True)
class _FullCheck(se.Jarzynski):
    """Jarzynski walkers whose positions and gradients are checked in full every step."""

    def step(self, key, state, energy_old, energy_new, step):
        from smc_ebm.strategies import walker_checks

        state, info = super().step(key, state, energy_old, energy_new, step)
        return state, info._replace(finite=walker_checks(state, certified=False))


def test_certified_check_names_and_keeps_what_the_full_check_does():
    """A NaN gradient at a finite energy: Jarzynski's check of the (N,) weights alone stops at
    the same step as the full check of positions and gradients, keeps the same state and names
    the gradient, as PCD's full check does."""
    data = 0.3 * np.asarray(jax.random.normal(jax.random.key(5), (200, 2)), np.float32)
    energy = _NanSlope(jnp.zeros(2, jnp.float32))
    kw = {"num_steps": 400, "chunk_size": 50, "optimizer": optax.sgd(0.01)}
    jar = se.Jarzynski(32, 0.1, init="data", resampling=se.ESSResampling(0.5))
    full = _FullCheck(**{f.name: getattr(jar, f.name) for f in dataclasses.fields(jar)})
    errors = []
    for strategy in (jar, full, se.PCD(32, 0.1, init="data")):
        with pytest.raises(se.TrainingError) as info:
            _fit(energy, data, strategy, **kw)
        assert info.value.quantity == "gradient of the walkers' energy"
        assert info.value.step >= 1
        errors.append(info.value)
    certified, checked = errors[0], errors[1]
    assert certified.step == checked.step
    for got, want in [
        (certified.result.energy.mean, checked.result.energy.mean),
        (certified.result.walkers, checked.result.walkers),
        (certified.result.log_weights, checked.result.log_weights),
    ]:
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_non_finite_entry_is_found_by_the_fused_check():
    """``all_finite`` flags inf, -inf and NaN anywhere, and passes huge finite values."""
    from smc_ebm.strategies import all_finite as _finite

    x = jnp.zeros((7, 5), jnp.float32).at[3, 2].set(3e38)
    assert bool(_finite(x))
    for bad in (jnp.inf, -jnp.inf, jnp.nan):
        assert not bool(_finite(x.at[6, 4].set(bad)))
        assert not bool(_finite(x.at[0, 0].set(bad)))


def test_huge_learning_rate_raises_training_error(problem):
    data, energy = problem
    with pytest.raises(se.TrainingError) as info:
        _fit(energy, data, se.PCD(32, 0.1), optimizer=optax.sgd(1e30), num_steps=30)
    _assert_training_error(info.value, energy)


class _Barrier(eqx.Module):
    """``0.5 (x - m)^2 + sqrt(5 - m)``: finite parameters ``m > 5`` give a NaN energy."""

    m: jax.Array

    def __call__(self, x):
        return 0.5 * jnp.sum((x - self.m) ** 2) + jnp.sqrt(5.0 - self.m)


@pytest.mark.parametrize("chunk_size", [2, 10])
@pytest.mark.parametrize(
    "strategy, lr",
    [(se.CD(None, num_steps=2, step_size=0.1), 1.5), (se.ScoreMatching(), 0.3)],
    ids=["CD", "SM"],
)
def test_parameters_with_a_non_finite_energy_are_not_returned(strategy, lr, chunk_size):
    """The step that found the data's energy NaN started from parameters that the step before
    produced: ``error.result`` holds the state before that step, whose energy is finite, so a
    resume from it works. With exact score matching, SGD(0.3) toward data at 10 takes m to 3
    after step 0 and to 5.1 after step 1, so step 2 finds the NaN and step 1 is reported;
    ``chunk_size=2`` puts step 2 at a chunk's start (the previous chunk is replayed). CD's walk
    is noisy: there only the kept state is checked."""
    data = 10.0 + 0.01 * np.asarray(jax.random.normal(jax.random.key(3), (256, 1)), np.float32)
    energy = _Barrier(jnp.zeros((), jnp.float32))
    kw = {"optimizer": optax.sgd(lr), "num_steps": 8, "chunk_size": chunk_size}
    with pytest.raises(se.TrainingError) as info:
        _fit(energy, data, strategy, **kw)
    err = info.value
    assert err.step >= 1 and "energy of the data" in err.quantity
    res = err.result
    assert res.steps == err.step
    np.testing.assert_array_equal(res.history["step"], np.arange(err.step))
    if isinstance(strategy, se.ScoreMatching):
        assert err.step == 1 and abs(float(res.energy.m) - 3.0) < 0.01  # not 5.1
    assert float(res.energy.m) < 5.0
    assert bool(jnp.all(jnp.isfinite(jax.vmap(res.energy)(data))))
    # A resume with a smaller learning rate goes on from it.
    more = _fit(energy, data, strategy, **{**kw, "optimizer": optax.sgd(0.01)}, resume=res)
    assert more.steps == err.step + 8 and float(res.energy.m) < float(more.energy.m) < 5.0


# --------------------------------------------------------------------------- silent failures
def test_mala_that_never_accepts_warns_and_a_healthy_run_does_not(problem):
    """MALA at h = 100 on unit-scale modes rejects every move: ``fit`` says so."""
    data, energy = problem
    with pytest.warns(RuntimeWarning, match="accepted 0.00% of the time"):
        _fit(energy, data, se.Jarzynski(32, 100.0, kernel="mala"), num_steps=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _fit(energy, data, se.Jarzynski(32, 0.1, kernel="mala"), num_steps=20)


def test_unmoved_fraction_counts_positions_already_held():
    """``_unmoved`` against a plain count: 5 of 8 rows (two of them copies of one row) are
    rows of the reference, in another order; a shift of 1e-6 in one coordinate is a move."""
    from smc_ebm._host import _projection, _unmoved

    ref = np.asarray(jax.random.normal(jax.random.key(0), (8, 3)), np.float32)
    now = np.concatenate([ref[[4, 1, 1, 7]], ref[[2]], ref[:3] + 5.0])
    now[4, 2] = ref[2, 2]  # unchanged row 2
    plain = np.mean([any((row == r).all() for r in ref) for row in now])
    assert plain == 5 / 8
    assert float(_unmoved(_projection(ref), now)) == plain
    now[0, 1] += 1e-6
    assert float(_unmoved(_projection(ref), now)) == 4 / 8


def test_minibatched_walkers_that_never_survive_a_move_warn(problem):
    """With ``walker_batch`` and h = 10, the moved walkers are resampled away and the
    population stops moving (log Z off by tens, every number finite): ``fit`` says so. At
    h = 0.1 it does not."""
    data, _ = problem
    energy = GaussianMixture.init(jax.random.key(1), 2, DIM, scale=1.0)
    kw = {"optimizer": optax.sgd(0.0), "num_steps": 200}
    with pytest.warns(RuntimeWarning, match="positions the population already held"):
        _fit(energy, data, se.Jarzynski(64, 10.0, walker_batch=8), **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _fit(energy, data, se.Jarzynski(64, 0.1, walker_batch=8), **kw)


def test_weights_collapsed_onto_one_walker_warn():
    """The check on a chunk's records: ESS at one walker of 100 at every record warns; one
    record above that does not; NaN ESS (PCD) and acceptance 1 (ULA) never warn."""
    from smc_ebm._host import chunk_warnings

    n = 100
    one = np.full(5, 1.0 / n)
    rec = [one, one * 0, one * 0, one * 0, one * 0, np.ones(5)]
    assert [k for k, _ in chunk_warnings(rec, n)] == ["ess"]
    rec[0] = np.array([1 / n, 1 / n, 3 / n, 1 / n, 1 / n])
    assert chunk_warnings(rec, n) == []
    rec[0] = np.full(5, np.nan)
    assert chunk_warnings(rec, n) == []
