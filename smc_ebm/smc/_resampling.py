"""Resamplers (from blackjax), ESS and resampling schedules."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import blackjax.smc.resampling as bjr
import jax
import jax.numpy as jnp
from blackjax.smc.ess import log_ess
from jax.sharding import PartitionSpec
from jaxtyping import Array, Float, Int, PRNGKeyArray


def _systematic_or_stratified(
    key: PRNGKeyArray, weights: Float[Array, " n"], num_samples: int, systematic: bool
) -> Int[Array, " m"]:
    """The systematic and stratified resamplers of blackjax, with the binary search unrolled.

    The same arithmetic as ``blackjax.smc.resampling._systematic_or_stratified`` (so the same
    ancestors, bit for bit; tests/test_resampling.py compares them), except the search:
    ``jnp.searchsorted``'s default ``method="scan"`` is a loop of log2(n) small steps, each a
    few kernel launches on a GPU. On one H200, inside a compiled scan at 10^4 walkers
    resampled one step in three, blackjax's resampler cost 0.144 ms per step and this one
    0.035; on the 2-core CPU the two are within noise (``benchmarks/resampling_cost.py``,
    ``benchmarks/results/resampling_cost_h200.txt``).
    """
    n = weights.shape[0]
    u = jax.random.uniform(key, () if systematic else (num_samples,))
    cumsum = jnp.cumsum(weights)
    linspace = (jnp.arange(num_samples, dtype=weights.dtype) + u) / num_samples
    idx = jnp.searchsorted(cumsum, linspace, method="scan_unrolled")
    return jnp.clip(idx, 0, n - 1)


def systematic(key: PRNGKeyArray, weights: Float[Array, " n"], num_samples: int) -> Array:
    """Systematic resampling (blackjax's, with an unrolled search; see above)."""
    return _systematic_or_stratified(key, weights, num_samples, True)


def stratified(key: PRNGKeyArray, weights: Float[Array, " n"], num_samples: int) -> Array:
    """Stratified resampling (blackjax's, with an unrolled search; see above)."""
    return _systematic_or_stratified(key, weights, num_samples, False)


RESAMPLERS: dict[str, Callable] = {
    "systematic": systematic,
    "stratified": stratified,
    "multinomial": bjr.multinomial,
    "residual": bjr.residual,
}
"""Resampling schemes by name (blackjax's; systematic and stratified with an unrolled search),
the ``method`` of the resampling schedules."""


def _check_method(method: str) -> None:
    if method not in RESAMPLERS:
        raise ValueError(f"unknown resampling method {method!r}; choose from {sorted(RESAMPLERS)}.")


def ess_fraction(log_weights: Float[Array, " n"]) -> Float[Array, ""]:
    r"""Normalised effective sample size :math:`(\overline{e^A})^2/\overline{e^{2A}} \in (0, 1]`."""
    if _split_blocks(log_weights) > 1:
        lse1, lse2 = _split_logsumexp(log_weights)
        return jnp.exp(2 * lse1 - lse2 - math.log(log_weights.shape[0]))
    return jnp.exp(log_ess(log_weights) - math.log(log_weights.shape[0]))


def log_mean_exp(a: Float[Array, " n"]) -> Float[Array, ""]:
    r""":math:`\log \frac1n \sum_i e^{a_i}`, stably."""
    if _split_blocks(a) > 1:
        return _split_logsumexp(a)[0] - math.log(a.shape[0])
    return jax.nn.logsumexp(a) - math.log(a.shape[0])


def normalized_weights(log_weights: Float[Array, " n"]) -> Float[Array, " n"]:
    """The normalised weights ``softmax(log_weights)``."""
    if _split_blocks(log_weights) > 1:
        return jnp.exp(log_weights - _split_logsumexp(log_weights)[0])
    return jax.nn.softmax(log_weights)


def _split_blocks(a: Array) -> int:
    """The devices that split the walker axis when ``a`` is a vector that they can split."""
    blocks = walker_blocks()
    return blocks if a.ndim == 1 and a.shape[0] % blocks == 0 else 1


def _split_logsumexp(a: Float[Array, " n"]) -> tuple[Array, Array]:
    r"""``(logsumexp(a), logsumexp(2 a))`` for log-weights split over the devices of a mesh.

    Each device shifts its own block by the block's maximum and sums; the blocks' maxima and
    sums then cross the devices once, as one all-reduce of ``B x 3`` numbers.
    ``jax.nn.logsumexp`` crosses twice (the maximum, then the sum), and every crossing holds
    each device until all have arrived: on few walkers per device the crossings, not the
    work, set the time of a step (``benchmarks/scaling.py`` times the split step).
    """
    blocks = _split_blocks(a)
    ab = split_walkers(a.reshape(blocks, -1))
    m = jax.lax.stop_gradient(jnp.max(ab, axis=1))
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    d = ab - m[:, None]
    stats = jnp.stack([m, jnp.sum(jnp.exp(d), axis=1), jnp.sum(jnp.exp(2 * d), axis=1)], 1)
    # each device fills its own row; the sum over the split axis is the all-reduce
    stats = jnp.sum(jnp.eye(blocks, dtype=a.dtype)[:, :, None] * stats[:, None, :], axis=0)
    m, s1, s2 = stats[:, 0], stats[:, 1], stats[:, 2]
    top = jnp.max(m)
    lse1 = top + jnp.log(jnp.sum(s1 * jnp.exp(m - top)))
    lse2 = 2 * top + jnp.log(jnp.sum(s2 * jnp.exp(2 * (m - top))))
    return lse1, lse2


def resample_indices(
    key: PRNGKeyArray,
    log_weights: Float[Array, " n"],
    method: str = "systematic",
    num_samples: int | None = None,
) -> Int[Array, " m"]:
    """``m`` ancestor indices drawn with a blackjax resampler; ``E[count_i] = m p_i``.

    ``num_samples`` is ``m`` (default: ``n``, the population's own size).
    """
    _check_method(method)
    weights = jax.nn.softmax(_whole(log_weights))
    m = log_weights.shape[0] if num_samples is None else num_samples
    return split_walkers(RESAMPLERS[method](key, weights, m))


WALKER_AXIS = "walkers"
"""The name of the mesh axis that splits the walkers (``fit(..., devices=...)``)."""


def _mesh():
    get = getattr(jax.sharding, "get_abstract_mesh", None)  # jax >= 0.7 (``jax.set_mesh``)
    mesh = get() if get is not None else None
    return None if mesh is None or mesh.empty or WALKER_AXIS not in mesh.axis_names else mesh


def walkers_split() -> bool:
    """Whether a mesh with a walker axis is set (``jax.set_mesh``): a run split over devices."""
    return _mesh() is not None


def walker_blocks() -> int:
    """How many devices split the walker axis (1 when no mesh with a walker axis is set)."""
    mesh = _mesh()
    return 1 if mesh is None else int(mesh.shape[WALKER_AXIS])


def _whole(x: Array) -> Array:
    """``x`` whole on every device when a mesh with a walker axis is set, else ``x`` itself.

    XLA splits a cumulative sum over a split axis at a cost that grows like the square of its
    length (with :math:`10^6` walkers over 4 CPU devices it made a resampling step many times
    slower than on one device). The weights are ``n`` numbers, so gathering them to every
    device first costs little.
    """
    if _mesh() is None:
        return x
    return jax.lax.with_sharding_constraint(x, PartitionSpec())


def split_walkers(x: Array) -> Array:
    """``x`` split along its first axis over the walker axis of the mesh set, else ``x``.

    The ancestors are then searched for where their walkers live, each device its own share.
    """
    mesh = _mesh()
    if mesh is None or x.shape[0] % mesh.shape[WALKER_AXIS]:
        return x
    return jax.lax.with_sharding_constraint(x, PartitionSpec(WALKER_AXIS))


def maybe_resample_indices(
    do: Array,
    key: PRNGKeyArray,
    log_weights: Float[Array, " n"],
    log_Z_anchor: Float[Array, ""],
    method: str = "systematic",
) -> tuple[Int[Array, " n"], Float[Array, " n"], Float[Array, ""]]:
    r"""Ancestors, log-weights and log Z anchor after resampling when ``do`` is true.

    Returns ``(idx, a, anchor)``: when ``do``, ancestors drawn by :func:`resample_indices`,
    zero log-weights and ``anchor + log_mean_exp(a)`` (log Z is continuous across the
    resampling); otherwise the identity, ``a`` and ``anchor`` unchanged. The caller gathers its
    walker arrays with ``idx`` after the conditional, at every step: a conditional that returned
    the walkers themselves made XLA copy them in one branch or the other (the walkers move in
    the loop's carry while the Jarzynski increment still reads the old ones), and in a
    resampling step twice. The gather reads and writes each array once; with the identity it
    is exact.
    """
    n = log_weights.shape[0]
    # blackjax's resamplers return int32 ancestors whatever ``jax_enable_x64`` says, while
    # ``arange`` follows the default integer type: both branches use int32.
    return jax.lax.cond(
        do,
        lambda: (
            resample_indices(key, log_weights, method).astype(jnp.int32),
            jnp.zeros_like(log_weights),
            log_Z_anchor + log_mean_exp(log_weights),
        ),
        lambda: (jnp.arange(n, dtype=jnp.int32), log_weights, log_Z_anchor),
    )


Threshold = float | Callable[[Array], Array]


@dataclasses.dataclass(frozen=True)
class ESSResampling:
    """Resample when the normalised ESS falls below ``threshold``.

    Args:
        threshold: a constant in ``(0, 1]``, or a function of the step (a traced integer)
            returning the threshold, e.g. ``lambda k: jnp.where(k < 1000, 0.0, 0.5)``.
        method: ``"systematic"`` (default), ``"stratified"``, ``"multinomial"``,
            ``"residual"``.
        start: no resampling before this step (the papers' rule of thumb for image EBMs).
    """

    threshold: Threshold = 0.5
    method: str = "systematic"
    start: int = 0

    def __post_init__(self) -> None:
        _check_method(self.method)
        if not callable(self.threshold) and not 0.0 < float(self.threshold) <= 1.0:
            raise ValueError(f"ESS threshold must be in (0, 1]; got {self.threshold}.")
        if self.start < 0:
            raise ValueError(f"start must be >= 0; got {self.start}.")

    def should_resample(self, step: Array, ess: Array) -> Array:
        c = self.threshold(step) if callable(self.threshold) else self.threshold
        return (ess < c) & (step >= self.start)


@dataclasses.dataclass(frozen=True)
class IntervalResampling:
    """Resample every ``every`` steps (from ``start``), whatever the ESS."""

    every: int = 10
    method: str = "systematic"
    start: int = 0

    def __post_init__(self) -> None:
        _check_method(self.method)
        if self.every < 1:
            raise ValueError(f"every must be >= 1; got {self.every}.")

    def should_resample(self, step: Array, ess: Array) -> Array:
        return (step >= self.start) & (jnp.mod(step - self.start, self.every) == 0)


@dataclasses.dataclass(frozen=True)
class NoResampling:
    """Never resample (pure annealed-importance weights)."""

    method: str = "systematic"

    def should_resample(self, step: Array, ess: Array) -> Array:
        return jnp.asarray(False)


def off_until(step0: int, threshold: float, before: float = 0.0) -> Callable[[Array], Array]:
    """Threshold schedule: ``threshold`` from ``step0`` on, ``before`` until then.

    ``before=0`` (default) switches resampling off until ``step0`` (the rule of thumb of
    Carbone et al., 2023); a small ``before`` resamples only when the ESS collapses there.
    """
    return lambda k: jnp.where(k < step0, before, threshold)
