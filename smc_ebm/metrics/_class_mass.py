r"""A trained model's own class proportions, by annealed importance sampling per class.

Walkers measure what they visit. The mass of a class under the model,
:math:`M_c = \int \mathbf 1[\mathrm{clf}(x) = c]\, e^{-U(x)}\,dx`, can be estimated without
them: anneal fresh walkers from a base placed on that class's data to the model
(:func:`smc_ebm.sample`), and weight the ones that end in the class. Each annealing run is an
unbiased estimate of :math:`Z\,\mathbb E_\rho[f]` for any :math:`f`, whatever the mixing of its
moves, so :math:`\hat M_c` is unbiased for the mass that the runs from class ``c``'s base
can reach; the proportions are :math:`\hat p_c = \hat M_c / \sum_{c'} \hat M_{c'}`.
With ``within=True`` the runs anneal inside the class's region instead
(:mod:`smc_ebm.metrics._class_region`), so that no walker is lost to another class.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from smc_ebm._naming import translate
from smc_ebm.energies import energy_batch
from smc_ebm.metrics._class_region import InClass, in_class_base, in_region

# Compiled once per energy structure (a fresh jit per call would trace again).
_ENERGIES = eqx.filter_jit(energy_batch)


@dataclasses.dataclass(frozen=True)
class ClassMasses:
    r"""What :func:`class_masses` returns (numpy arrays; ``K`` classes).

    Attributes:
        classes: the ``K`` classes, in the order of the arrays.
        proportions: ``(K,)`` :math:`\hat p_c = \hat M_c / \sum_{c'} \hat M_{c'}`.
        standard_errors: ``(K,)`` their standard errors (delta method on the spread of the
            independent runs).
        log_masses: ``(K,)`` :math:`\log \hat M_c`.
        log_Z: ``(K,)`` each class's runs' estimate of the whole :math:`\log Z` (all the
            mass those runs reached). They agree when the runs from every base reach the
            same mass; a spread of several nats says that some class's runs miss mass that
            another's find, so read the proportions as the masses each base reaches.
        arrival: ``(K, K)``; row ``c``: the weighted class proportions of the walkers
            annealed from class ``c``'s base (the diagonal is the fraction that stayed).
        ess: ``(K,)`` normalised weight ESS of each class's pooled walkers.
        acceptance: ``(K,)`` mean acceptance of the moves (1 for ULA).
        mean_energy: ``(K,)`` weighted mean energy of the walkers of class ``c`` annealed
            from class ``c``'s base (compare with the data's energies: a mass far below
            them lies where the data are not).
    """

    classes: tuple[Any, ...]
    proportions: np.ndarray
    standard_errors: np.ndarray
    log_masses: np.ndarray
    log_Z: np.ndarray
    arrival: np.ndarray
    ess: np.ndarray
    acceptance: np.ndarray
    mean_energy: np.ndarray


def _key_was_second(f: Any) -> Any:
    """The old order ``(energy, key, data, labels, classifier)``, with a warning."""

    @functools.wraps(f)
    def call(*args: Any, **kwargs: Any) -> ClassMasses:
        if len(args) == 5 and "key" not in kwargs:
            warnings.warn(
                "smc_ebm: class_masses(): passing `key` by position is deprecated; use "
                "class_masses(energy, data, labels, classifier, key=...).",
                DeprecationWarning,
                stacklevel=2,
            )
            energy, key, *rest = args
            args, kwargs = (energy, *rest), {**kwargs, "key": key}
        return f(*args, **translate("class_masses()", kwargs, {"n": "num_walkers"}))

    return call


@_key_was_second
def class_masses(
    energy: Any,
    data: Any,
    labels: Any,
    classifier: Any,
    *,
    key: PRNGKeyArray,
    num_walkers: int = 1024,
    num_steps: int = 500,
    step_size: float = 0.01,
    kernel: str = "mala",
    num_runs: int = 8,
    min_scale: float | None = None,
    within: bool = False,
    region_draws: int = 2**16,
    progress: bool = True,
) -> ClassMasses:
    r"""Class proportions of the model itself, by annealed importance sampling per class.

    For each class ``c`` of ``classifier.classes``: ``num_walkers`` walkers, in ``num_runs``
    independent runs, start from the moment-matched diagonal Gaussian of the data of class ``c``
    (scales floored at ``min_scale``, default :math:`\sqrt{h}`, which keeps the first
    Langevin steps stable) and are annealed to ``energy`` in ``num_steps`` steps
    (:func:`smc_ebm.sample`). Run ``r`` gives :math:`Z_r` and normalised weights
    :math:`p_{ri}`, and :math:`Z_r \sum_i p_{ri} f(X_{ri})` is unbiased for
    :math:`Z\,\mathbb E_\rho[f]`. With :math:`f = \mathbf 1[\mathrm{clf}(x) = c]`:

    .. math::
        \hat M_c = \frac{1}{R} \sum_r Z_r \sum_i p_{ri}\,\mathbf 1[\mathrm{clf}(X_{ri}) = c],
        \qquad \hat p_c = \hat M_c \Big/ \sum_{c'} \hat M_{c'}.

    Each :math:`\hat M_c` is unbiased whatever the moves' mixing, for the mass that the
    runs from class ``c``'s base can reach: mass they never reach is missed (see
    :attr:`ClassMasses.log_Z`). The walkers' proportions estimate what the walkers visit;
    these estimate the model's masses, including regions that training never visited.

    Annealing too briefly misses mass, and then the standard errors (from the spread of
    ``num_runs`` runs, whose weights are heavy-tailed) understate the error: check that the
    proportions and the bases' ``log_Z`` do not move when ``num_steps`` is doubled. On the 8x8
    digits models of ``examples/digits_proportions.py``, 200 steps and 800 steps gave
    proportions that differ by far more than the reported errors.

    Args:
        energy: the energy (a module mapping one sample ``(d,)`` to a scalar).
        key: PRNG key.
        data: ``(N, d)`` samples with labels ``labels``.
        labels: ``(N,)`` their classes.
        classifier: an object with ``classes`` and ``predict((n, d)) -> (n,)`` labels (e.g.
            :func:`digit_classifier`).
        num_walkers: walkers per class (a multiple of ``num_runs``, at least ``2 num_runs``).
        num_steps: annealing steps.
        step_size: Langevin step :math:`h`.
        kernel: ``"mala"`` (default) or ``"ula"`` (Jarzynski increments).
        num_runs: independent runs per class (at least 2: their spread gives the errors).
        min_scale: floor of the bases' scales (default :math:`\sqrt{h}`).
        within: anneal inside each class's region (:mod:`smc_ebm.metrics._class_region`):
            the base is the Gaussian restricted to the region where the classifier says
            ``c``, its mass there estimated from ``region_draws`` draws, and MALA rejects
            every move out of it, so each run estimates :math:`M_c` itself and no walker
            is lost to another class. Needs ``classifier.class_index``, the index in
            ``classes`` of one sample ``(d,)``, traceable by JAX (``DigitClassifier`` has
            it), and ``kernel="mala"``. ``arrival`` is then the identity and ``log_Z`` holds
            :math:`\log \hat M_c`.
        region_draws: Gaussian draws that estimate its mass in the region (``within``);
            the error of that estimate enters the standard errors.
        progress: show a progress bar per class (:func:`smc_ebm.sample`'s).

    Returns:
        A :class:`ClassMasses`.

    Raises:
        ValueError: shapes disagree, a class has fewer than 2 data points, or ``num_walkers`` is not
            a multiple of ``num_runs >= 2`` with at least 2 walkers per run.
    """
    from smc_ebm import sample  # the public function (not a module import: no cycle)
    from smc_ebm.energies._gaussian import Gaussian
    from smc_ebm.metrics._images import class_proportions

    x = np.asarray(data)
    y = np.asarray(labels).reshape(-1)
    if x.ndim != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"data must be (N, d) with N labels; got {x.shape} and {y.shape}.")
    n, num_runs = int(num_walkers), int(num_runs)
    if num_runs < 2 or n < 2 * num_runs or n % num_runs:
        raise ValueError(
            f"num_walkers must be a multiple of num_runs >= 2, with at least 2 walkers per run; "
            f"got num_walkers={n}, num_runs={num_runs}."
        )
    if within and kernel != "mala":
        raise ValueError(f"within=True needs kernel='mala' (moves out are rejected): {kernel!r}")
    index = getattr(classifier, "class_index", None) if within else None
    if within and index is None:
        raise ValueError(
            f"within=True needs classifier.class_index(x) -> index in classes, traceable by "
            f"JAX; {type(classifier).__name__} has none."
        )
    classes = tuple(classifier.classes)
    floor = math.sqrt(float(step_size)) if min_scale is None else float(min_scale)
    m = n // num_runs
    k = len(classes)
    log_terms = np.empty((k, num_runs))  # log of run r's estimate of M_c
    log_z, arrival = np.empty(k), np.empty((k, k))
    ess, acc, mean_u = np.empty(k), np.empty(k), np.empty(k)
    var_log_inside = np.zeros(k)  # within: the variance of log P_N(R_c), shared by c's runs
    for j, (c, kc) in enumerate(zip(classes, jax.random.split(key, k), strict=True)):
        xc = x[y == c]
        if xc.shape[0] < 2:
            raise ValueError(f"class {c!r} has {xc.shape[0]} data points; at least 2 are needed.")
        base, target = Gaussian.fit_to(jnp.asarray(xc), min_scale=floor), energy
        if within:
            kc, k_region = jax.random.split(kc)
            base, var_log_inside[j] = in_class_base(base, index, j, k_region, region_draws)
            target = InClass(energy, index, j)
        res = sample(
            target,
            key=kc,
            num_walkers=n,
            init=base,
            num_steps=num_steps,
            step_size=step_size,
            kernel=kernel,
            num_runs=num_runs,
            progress=progress,
        )
        if within:  # every walker is in the class by construction (moves out are rejected)
            stayed = in_region(index, j, res.samples)
            if not stayed.all():
                raise RuntimeError(f"class {c!r}: {int((~stayed).sum())} walkers left it.")
            pred = np.full(stayed.shape, c)
        else:
            pred = np.asarray(classifier.predict(res.samples))
        # Pooled log-weights are log Z_r + log p_ri, run by run (see ``sample``).
        lw = np.asarray(res.log_weights, np.float64).reshape(num_runs, m)
        inside = (pred == c).reshape(num_runs, m)
        with np.errstate(divide="ignore"):
            log_terms[j] = np.log(np.sum(np.exp(lw - lw.max()) * inside, axis=1)) + lw.max()
        arrival[j] = class_proportions(pred, classes, res.log_weights)
        w = res.weights
        u = np.asarray(_ENERGIES(energy, jnp.asarray(res.samples)), np.float64)
        wc = w * (pred == c)
        mean_u[j] = float(np.sum(wc * u) / np.sum(wc)) if np.sum(wc) > 0 else np.nan
        log_z[j], ess[j], acc[j] = res.log_Z, res.ess, res.acceptance
    top = np.max(log_terms)
    z = np.exp(log_terms - top)  # (K, R), on a common scale
    masses = z.mean(axis=1)
    var = z.var(axis=1, ddof=1) / num_runs + masses**2 * var_log_inside
    total = masses.sum()
    p = masses / total
    # Delta method, the classes' runs independent: dp_c/dM_c = (1 - p_c) / T,
    # dp_c/dM_c' = -p_c / T.
    se = np.sqrt((1.0 - p) ** 2 * var + p**2 * (var.sum() - var)) / total
    with np.errstate(divide="ignore"):
        log_m = np.log(masses) + top
    return ClassMasses(
        classes=classes,
        proportions=p,
        standard_errors=se,
        log_masses=log_m,
        log_Z=log_z,
        arrival=arrival,
        ess=ess,
        acceptance=acc,
        mean_energy=mean_u,
    )
