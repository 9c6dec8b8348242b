"""Image EBMs: the digit loaders, the conv energy, the proportion estimator, a short fit."""

import gzip
import struct

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import smc_ebm as se


# ---------------------------------------------------------------------------------------
# loaders
def test_digits_shapes_scaling_and_proportions(key):
    data = se.datasets.digits(key)
    x, y = np.asarray(data.samples), data.info["labels"]
    # 177 twos limit the subsample at 4/7: floor(177 * 7 / 4) = 309 images.
    assert x.shape == (309, 64) and y.shape == (309,)
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert set(np.unique(y)) == {2, 3, 6}
    counts = np.array([np.sum(y == c) for c in (2, 3, 6)])
    # largest-remainder rounding: each count within one image of n * p
    np.testing.assert_allclose(counts, 309 * np.array([4, 2, 1]) / 7, atol=1.0)
    assert data.info["shape"] == (8, 8)


def test_digits_dequantisation_stays_in_the_grey_level_bin(key):
    from sklearn.datasets import load_digits

    raw = load_digits()
    # the same key draws the same subsample with and without the noise
    centred = se.datasets.digits(key, labels=None, weights=None, dequantise=False)
    noisy = se.datasets.digits(key, labels=None, weights=None)
    y = centred.info["labels"]
    np.testing.assert_array_equal(y, noisy.info["labels"])
    # without noise each pixel is the centre 2 (v + 1/2) / 17 - 1 of its grey level v
    v = (np.asarray(centred.samples) + 1.0) * 17 / 2 - 0.5
    np.testing.assert_allclose(v, np.round(v), atol=1e-4)
    v = np.round(v)
    for c in range(10):  # rows are a permutation of the full set: compare sorted pixel sums
        want = np.sort(raw.images[raw.target == c].reshape(-1, 64).sum(1))
        np.testing.assert_array_equal(np.sort(v[y == c].sum(1)), want)
    # with noise: 2 (v + u) / 17 - 1, u ~ U(0, 1), i.e. u - 1/2 = (noisy - centred) * 17 / 2
    u = (np.asarray(noisy.samples) - np.asarray(centred.samples)) * 17 / 2 + 0.5
    assert u.min() >= -1e-5 and u.max() <= 1 + 1e-5
    # mean 1/2 and sd sqrt(1/12) of a uniform; 1797 * 64 draws: se 8.5e-4 (mean), 5e-4 (sd)
    assert abs(u.mean() - 0.5) < 4e-3 and abs(u.std() - np.sqrt(1 / 12)) < 3e-3


def test_digits_bad_requests(key):
    with pytest.raises(ValueError, match="no images with labels"):
        se.datasets.digits(key, labels=(2, 11), weights=(1, 1))
    with pytest.raises(ValueError, match="weights must be 3 positive"):
        se.datasets.digits(key, weights=(1, 2))
    with pytest.raises(ValueError, match="at most 309"):
        se.datasets.digits(key, n=400)


def _write_idx(path, array, gz):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx_files(tmp_path, key, gz):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10, dtype=np.uint8), 7)  # 7 images per digit
    images = rng.integers(0, 256, (labels.size, 28, 28), dtype=np.uint8)
    sfx = ".gz" if gz else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{sfx}", images, gz)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{sfx}", labels, gz)
    np.testing.assert_array_equal(
        se.datasets.read_idx(tmp_path / f"train-images-idx3-ubyte{sfx}"), images
    )
    data = se.datasets.mnist(tmp_path, key=key)  # 2, 3, 6 at 4/2/1: 7 twos -> n = 12
    x, y = np.asarray(data.samples), data.info["labels"]
    assert x.shape == (12, 784) and data.info["shape"] == (28, 28)
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert [int(np.sum(y == c)) for c in (2, 3, 6)] == [7, 3, 2]
    # without noise the pixels are the centres 2 (v + 1/2) / 256 - 1 of the written levels
    centred = se.datasets.mnist(tmp_path, key=key, dequantise=False)
    np.testing.assert_array_equal(centred.info["labels"], y)
    v = np.round((np.asarray(centred.samples) + 1.0) * 128 - 0.5)
    assert np.all(np.abs(x - np.asarray(centred.samples)) <= 1 / 256 + 1e-6)
    for row, lab in zip(v, y, strict=True):
        assert np.any(np.all(images[labels == lab].reshape(-1, 784) == row, axis=1))


def test_mnist_reads_npz(tmp_path, key):
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(10, dtype=np.uint8), 4)
    x = rng.integers(0, 256, (y.size, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
    data = se.datasets.mnist(tmp_path / "mnist.npz", key=key, labels=(0, 1), weights=(1, 1))
    assert data.samples.shape == (8, 784)


def test_mnist_missing_files_error(tmp_path, key):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        se.datasets.mnist(tmp_path, key=key)
    with pytest.raises(FileNotFoundError, match="MNIST not found"):
        se.datasets.mnist(tmp_path / "nowhere", key=key)
    with pytest.raises(ValueError, match="split"):
        se.datasets.mnist(tmp_path, key=key, split="valid")


def test_read_idx_rejects_garbage(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        se.datasets.read_idx(tmp_path / "bad")


# ---------------------------------------------------------------------------------------
# conv energy
@pytest.mark.parametrize("side", [8, 28])
def test_conv_energy_shapes_and_gradients(key, side):
    energy = se.energies.ConvEnergy(side, key=key, channels=(4, 8), confinement=0.5)
    assert energy.dim == side * side
    x = jax.random.normal(jax.random.key(1), (3, side * side))
    u = jax.vmap(energy)(x)
    assert u.shape == (3,) and bool(jnp.all(jnp.isfinite(u)))
    # x-gradient against a central finite difference along a random direction
    v = jax.random.normal(jax.random.key(2), (side * side,))
    g = jax.grad(energy)(x[0])
    eps = 1e-2
    fd = (energy(x[0] + eps * v) - energy(x[0] - eps * v)) / (2 * eps)
    # float32: the difference of two O(10) energies carries ~1e-5 / eps rounding error
    np.testing.assert_allclose(float(g @ v), float(fd), rtol=2e-3, atol=2e-3)
    # parameter gradient: finite and of the parameters' structure
    pg = eqx.filter_grad(lambda e: jnp.sum(jax.vmap(e)(x)))(energy)
    leaves = jax.tree.leaves(eqx.filter(pg, eqx.is_inexact_array))
    assert leaves and all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in leaves)
    assert any(float(jnp.abs(leaf).sum()) > 0 for leaf in leaves)


def test_conv_energy_confinement_and_errors(key):
    e0 = se.energies.ConvEnergy(8, key=key, confinement=0.0)
    e1 = se.energies.ConvEnergy(8, key=key, confinement=2.0)
    x = jnp.full((64,), 0.5)
    np.testing.assert_allclose(float(e1(x) - e0(x)), 0.5 * 2.0 * 64 * 0.25, rtol=1e-5)
    with pytest.raises(ValueError, match="confinement"):
        se.energies.ConvEnergy(8, key=key, confinement=-1.0)
    with pytest.raises(ValueError, match="l2_penalty"):
        se.energies.ConvEnergy(8, key=key, l2_penalty=-1.0)
    with pytest.raises(ValueError, match="channels"):
        se.energies.ConvEnergy(8, key=key, channels=())


def test_energy_l2_grad_matches_autodiff(key):
    energy = se.energies.ConvEnergy(8, key=key, channels=(4,), l2_penalty=0.1)
    xb = jax.random.normal(jax.random.key(1), (5, 64))
    xw = jax.random.normal(jax.random.key(2), (6, 64))
    w = jax.nn.softmax(jax.random.normal(jax.random.key(3), (6,)))
    grad, value = se.energies.energy_l2_grad(energy, xb, xw, w)

    def direct(e):
        ub, uw = jax.vmap(e)(xb), jax.vmap(e)(xw)
        return 0.1 * (jnp.mean(ub**2) + jnp.sum(w * uw**2))

    want_v, want_g = eqx.filter_value_and_grad(direct)(energy)
    np.testing.assert_allclose(float(value), float(want_v), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(want_g), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------
# proportion estimator
def test_class_proportions_weighted_and_unweighted():
    y = np.array([2, 2, 3, 6, 6, 6])
    np.testing.assert_allclose(
        se.metrics.class_proportions(y, (2, 3, 6)), [2 / 6, 1 / 6, 3 / 6], rtol=1e-12
    )
    a = np.log(np.array([1.0, 1.0, 2.0, 0.0 + 1e-300, 1e-300, 1e-300]))
    np.testing.assert_allclose(
        se.metrics.class_proportions(y, (2, 3, 6), a), [0.5, 0.5, 0.0], atol=1e-12
    )
    with pytest.raises(ValueError, match="shape"):
        se.metrics.class_proportions(y, (2, 3, 6), np.zeros(3))
    assert se.metrics.effective_sample_size(np.zeros(10)) == pytest.approx(10.0)


def test_proportion_estimator_on_labelled_digits(key):
    clf = se.metrics.digit_classifier(key)
    assert clf.test_accuracy > 0.95  # logistic regression on 2/3/6 (measured 0.994)
    data = se.datasets.digits(jax.random.key(7))
    truth = np.array([data.info["proportions"][c] for c in (2, 3, 6)])
    p = clf.proportions(data.samples)
    # misclassification rate <= ~1-2%: proportions within 0.03 of the labels' proportions
    np.testing.assert_allclose(p, truth, atol=0.03)
    # weights that keep only the threes give all the mass to 3 (up to misclassification)
    y = data.info["labels"]
    a = np.where(y == 3, 0.0, -np.inf)
    a = np.where(np.isfinite(a), a, -1e4)
    assert clf.proportions(data.samples, a)[1] > 0.95


class _NearestMean:
    """A classifier by the nearest mode centre, for mixtures with known weights."""

    def __init__(self, means):
        self.means = np.asarray(means)
        self.classes = tuple(range(len(self.means)))

    def predict(self, x):
        d = np.sum((np.asarray(x)[:, None, :] - self.means[None]) ** 2, axis=-1)
        return np.argmin(d, axis=1)


def test_class_masses_recover_the_weights_of_a_mixture():
    """Three unit modes 8.5 or more apart, weights 0.5, 0.3, 0.2: per-class annealing gives them.

    The nearest-centre regions hold each mode's mass up to Phi(-4.2) ~ 1e-5, so the only
    error is Monte Carlo: within 4 of the reported standard errors. The runs from a mode's
    base stay in it, so each base's log Z is that of its own mode, log Z + log w_c.
    """
    means = jnp.array([[-6.0, 0.0], [0.0, 6.0], [6.0, 0.0]])
    w = np.array([0.5, 0.3, 0.2])
    gmm = se.energies.GaussianMixture(means, jnp.log(jnp.asarray(w)))
    k_y, k_x, k_run = jax.random.split(jax.random.key(3), 3)
    y = np.asarray(jax.random.choice(k_y, 3, (300,), p=jnp.asarray(w)))
    x = np.asarray(means)[y] + np.asarray(jax.random.normal(k_x, (300, 2)))
    res = se.metrics.class_masses(
        gmm,
        x,
        y,
        _NearestMean(means),
        key=k_run,
        num_walkers=512,
        num_steps=20,
        step_size=0.2,
        num_runs=8,
        progress=False,
    )
    assert np.all(res.standard_errors > 0) and np.all(res.standard_errors < 0.02)
    np.testing.assert_array_less(np.abs(res.proportions - w), 4 * res.standard_errors)
    np.testing.assert_allclose(res.proportions.sum(), 1.0, rtol=1e-12)
    log_z = float(gmm.log_partition())
    np.testing.assert_allclose(res.log_Z, log_z + np.log(w), atol=0.05)
    np.testing.assert_allclose(res.log_masses, log_z + np.log(w), atol=0.05)
    assert np.all(np.diag(res.arrival) > 0.999)
    # In mode c, U = -log w_c + |x - mu_c|^2 / 2, whose mean is -log w_c + 1 and sd 1:
    # within 4 standard errors with n * ESS walkers.
    assert np.all(res.ess > 0.5)
    np.testing.assert_allclose(res.mean_energy, 1.0 - np.log(w), atol=4 / np.sqrt(0.5 * 512))
    with pytest.raises(ValueError, match="multiple of num_runs"):
        se.metrics.class_masses(
            gmm, x, y, _NearestMean(means), key=k_run, num_walkers=100, num_runs=8
        )
    with pytest.raises(ValueError, match="labels"):
        se.metrics.class_masses(gmm, x, y[:10], _NearestMean(means), key=k_run)
    with pytest.raises(ValueError, match="class 2"):
        se.metrics.class_masses(gmm, x[y < 2], y[y < 2], _NearestMean(means), key=k_run)


class _Slabs:
    """Classes by the first coordinate: below -1.5, between -1.5 and 2.5, above 2.5."""

    classes = (0, 1, 2)

    def class_index(self, x):
        return jnp.sum(x[0] > jnp.array([-1.5, 2.5]))

    def predict(self, x):
        return np.sum(np.asarray(x)[:, :1] > np.array([-1.5, 2.5]), axis=1)


@pytest.mark.parametrize("within", [False, True])
def test_class_masses_of_a_mixture_cut_by_the_classes_match_the_normal_cdf(within):
    """Unit modes at -4, 0, 4 on the first axis (weights 0.5, 0.3, 0.2), classes cut across
    them at -1.5 and 2.5, so every class holds the tails of its neighbours: the truth is a
    sum of normal CDF differences (scipy), shared with nothing in the estimator. Within 4 of
    the reported standard errors (false alarm < 1e-4 a class, six classes over the two
    estimators). Inside each class (``within=True``), dropping the base's mass in the region
    (log P_N(R_c), here -0.01 to -0.05 nats) would move the proportions by 0.004-0.008, 3 to
    7.5 of their standard errors (about 0.001): the test sees it."""
    from scipy.stats import norm

    mu = np.array([-4.0, 0.0, 4.0])
    w = np.array([0.5, 0.3, 0.2])
    edges = np.array([-np.inf, -1.5, 2.5, np.inf])
    mass = [np.sum(w * (norm.cdf(edges[c + 1] - mu) - norm.cdf(edges[c] - mu))) for c in range(3)]
    truth = np.array(mass) / np.sum(mass)
    means = jnp.stack([jnp.asarray(mu), jnp.zeros(3)], axis=1)
    gmm = se.energies.GaussianMixture(means, jnp.log(jnp.asarray(w)))
    k_x, k_run = jax.random.split(jax.random.key(5))
    x = np.asarray(gmm.sample(k_x, 600))
    clf = _Slabs()
    res = se.metrics.class_masses(
        gmm,
        x,
        clf.predict(x),
        clf,
        key=k_run,
        num_walkers=512,
        num_steps=40,
        step_size=0.2,
        num_runs=8,
        within=within,
        progress=False,
    )
    assert np.all(res.standard_errors > 0) and np.all(res.standard_errors < 0.02)
    np.testing.assert_array_less(np.abs(res.proportions - truth), 4 * res.standard_errors)
    if within:
        np.testing.assert_allclose(res.arrival, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(res.log_Z, res.log_masses, rtol=1e-6)  # float32 sums
        np.testing.assert_allclose(
            res.log_masses, float(gmm.log_partition()) + np.log(truth), atol=0.05
        )
    else:
        assert res.arrival[1, 0] > 0.001  # walkers from the middle class reach the first


def test_class_masses_within_a_class_need_a_traceable_classifier_and_mala():
    gmm = se.energies.GaussianMixture(jnp.zeros((1, 2)), jnp.zeros(1))
    x = np.asarray(jax.random.normal(jax.random.key(0), (20, 2)))
    y = np.arange(20) % 2
    means = np.array([[-1.0, 0.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="class_index"):
        se.metrics.class_masses(gmm, x, y, _NearestMean(means), key=jax.random.key(1), within=True)
    with pytest.raises(ValueError, match="mala"):
        se.metrics.class_masses(
            gmm, x, y, _Slabs(), key=jax.random.key(1), within=True, kernel="ula"
        )


def test_digit_classifier_class_index_is_its_predict():
    """The traceable decision equals scikit-learn's ``predict`` on data and on noise."""
    clf = se.metrics.digit_classifier(jax.random.key(0), (3, 2, 0))
    data = se.datasets.digits(jax.random.key(1), (3, 2, 0), (0.5, 0.3, 0.2))
    noise = 1.5 * jax.random.normal(jax.random.key(2), (5000, 64))
    for x in (data.samples, noise):
        index = np.asarray(jax.vmap(clf.class_index)(x))
        assert np.array_equal(np.asarray(clf.classes)[index], clf.predict(x))


# ---------------------------------------------------------------------------------------
# training end to end
def test_short_fit_on_digits_runs(key):
    data = se.datasets.digits(key)
    energy = se.energies.ConvEnergy(8, key=jax.random.key(1), channels=(4, 8), l2_penalty=1e-3)
    strategy = se.Jarzynski(
        64,
        1e-3,
        walker_batch=16,
        resampling=se.ESSResampling(se.off_until(5, 0.5)),
        num_anneal=5,
        anneal_base=se.energies.Gaussian.standard(64),
        feedback_correction=False,  # through Adam its JVP gives NaN at step 0 (1/sqrt(nu=0))
    )
    opt = optax.adam(optax.cosine_decay_schedule(1e-3, 10))
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam: float ** int32 step count
        res = se.fit(
            energy,
            data.samples,
            strategy=strategy,
            optimizer=opt,
            num_steps=10,
            key=jax.random.key(2),
            batch_size=32,
            progress=False,
        )
    assert res.steps == 10 and res.walkers.shape == (64, 64)
    assert np.all(np.isfinite(res.history["ess"]))
    clf = se.metrics.digit_classifier(key)
    p = clf.proportions(res.walkers, res.log_weights)
    assert p.shape == (3,) and p.sum() == pytest.approx(1.0)
