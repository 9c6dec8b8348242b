"""Where persistent walkers start: exact samples, data, or annealed from a base to the model."""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from smc_ebm.energies import Gaussian, as_base
from smc_ebm.kernels import Kernel, evaluate, evaluate_uniform
from smc_ebm.smc import ESSResampling, anneal, log_mean_exp, resample_indices
from smc_ebm.strategies._base import WalkerState, check_init_array, exact_start

KERNEL_NAMES = ("ula", "mala")

#: Traces of :func:`anneal_jit` (a test checks that a second ``fit`` adds none).
TRACE_COUNT = {"anneal": 0}


def default_base(data: Array, step_size: float, anneal_base: Any = None) -> Any:
    """``anneal_base``, or the data's diagonal Gaussian with scales >= sqrt(step_size).

    A Langevin step on a Gaussian of scale ``s`` is stable only for ``h < 2 s^2``, and a
    coordinate that barely varies in the data (the border pixels of digit images) would
    otherwise make the first moves diverge.
    """
    if anneal_base is not None:
        return as_base(anneal_base)  # NumPyro and flowjax distributions too
    return Gaussian.fit_to(data, min_scale=math.sqrt(float(step_size)))


@eqx.filter_jit
def anneal_jit(key, base, energy, x, num_steps: int, step_size: float, kernel: str):
    """:func:`~smc_ebm.smc.anneal` at the start of a run, compiled once per structure.

    ``base`` and ``energy`` are traced (their arrays are arguments), so a second ``fit`` with
    an energy of the same structure, e.g. the next seed of an experiment, reuses the program.
    Returns ``(x, log_weights, log_ratio)``.
    """
    TRACE_COUNT["anneal"] += 1
    return anneal(
        key,
        base,
        energy,
        x,
        num_steps=num_steps,
        step_size=step_size,
        kernel=kernel,
        resampling=ESSResampling(0.5, "systematic"),
    )[:3]


def annealed_start(key, energy, data, n, base, num_anneal: int, step_size: float, kernel: str):
    """``n`` walkers annealed from ``base`` to ``energy``: ``(x, log_weights, log Z_0)``."""
    k0, key = jax.random.split(key)
    x = base.sample(k0, n).astype(data.dtype)
    x, a, log_ratio = anneal_jit(key, base, energy, x, int(num_anneal), float(step_size), kernel)
    bad = ~(np.isfinite(np.asarray(a)) & np.all(np.isfinite(np.asarray(x)), axis=-1))
    if bad.any():
        raise ValueError(
            f"annealing the initial walkers from the base to the model diverged: {bad.sum()} "
            f"of {n} walkers have a non-finite position or weight after {num_anneal} "
            f"steps of step_size={step_size}. Langevin steps need h < 2 s^2 on the "
            f"narrowest scale s of the base and of the model; pass a smaller step_size, a "
            f"wider anneal_base, or init='data'."
        )
    return x, a, base.log_partition() + log_ratio


def initial_positions(
    key: PRNGKeyArray, energy: Any, data: Array, init: Any, n: int, anneal_start: Any
) -> tuple[Array, Array, Array | None]:
    """``n`` positions, log-weights and (for annealed starts) a log Z_0 estimate.

    ``anneal_start(key, n)`` anneals when no exact start applies (:func:`exact_start`).
    """
    x = exact_start(key, energy, data, init, n)
    if x is not None:
        return x, jnp.zeros(n, data.dtype), None
    return anneal_start(key, n)


def walker_start(strategy, key, energy, data, n, init=None):
    """``n`` walkers of a persistent-walker ``strategy`` from ``init`` (default its own).

    Returns ``(x, log_weights, log Z_0 estimate or None)``, annealed from the strategy's base
    where no exact start applies; Jarzynski's and PCD's ``start``.
    """
    s = strategy

    def anneal_start(k, m):
        base = default_base(data, s.step_size, s.anneal_base)
        return annealed_start(k, energy, data, m, base, s.num_anneal, s.step_size, s.kernel)

    init = s.init if init is None else init
    return initial_positions(key, energy, data, init, n, anneal_start)


def check_euclidean(energy: Any) -> None:
    """Raise ``ValueError`` for an energy that lives on a manifold other than R^d."""
    from smc_ebm.manifolds import Euclidean, manifold_of

    if not isinstance(manifold_of(energy), Euclidean):
        raise ValueError(
            f"{type(energy).__name__} lives on a {type(manifold_of(energy)).__name__}; "
            "Jarzynski, PCD and Unweighted walkers move in R^d (use se.Dual)."
        )


def evaluate_state(energy, x, a, anchor, weighted) -> WalkerState:
    """Walkers ``(x, a, anchor)`` evaluated at ``energy``, with their model term."""
    if weighted:
        u, g, pgrad_fn = evaluate(energy, x)
        p = jax.nn.softmax(a)
        return WalkerState(x, u, g, a, anchor, pgrad_fn(p), jnp.sum(p * u), p)
    u, g, pgrad = evaluate_uniform(energy, x)
    return WalkerState(x, u, g, a, anchor, pgrad, jnp.mean(u))


evaluate_state_jit = eqx.filter_jit(
    evaluate_state,
)


@jax.jit
def resample_once(key, x, a):
    """Walkers drawn (systematic) from the population ``(x, softmax(a))``: ``(n, d)``."""
    return x[resample_indices(key, a, "systematic")]


def anchor_of(log_Z0: Array, a: Array) -> Array:
    """The anchor that makes ``anchor + log mean e^a`` equal to ``log_Z0``."""
    return log_Z0 - log_mean_exp(a)


def check_kernel(kernel: Any, names: tuple[str, ...] = KERNEL_NAMES) -> None:
    """``ValueError`` unless ``kernel`` is one of ``names`` or a :class:`Kernel` object."""
    if not isinstance(kernel, Kernel) and kernel not in names:
        raise ValueError(f"kernel must be one of {names} or a Kernel; got {kernel!r}.")


def check_walkers(s: Any) -> None:
    """The checks shared by the persistent-walker strategies."""
    if int(s.num_walkers) < 2:
        raise ValueError(f"num_walkers must be >= 2; got {s.num_walkers}.")
    if not float(s.step_size) > 0 or not math.isfinite(float(s.step_size)):
        raise ValueError(f"step_size must be a positive finite number; got {s.step_size}.")
    check_kernel(s.kernel)
    if s.walker_batch is not None and not 1 <= int(s.walker_batch) <= s.num_walkers:
        raise ValueError(
            f"walker_batch must be in [1, num_walkers={s.num_walkers}]; got {s.walker_batch}."
        )
    if s.walker_grad not in ("all", "batch"):
        raise ValueError(f"walker_grad must be 'all' or 'batch'; got {s.walker_grad!r}.")
    if isinstance(s.init, str) and s.init not in ("model", "data"):
        raise ValueError(f"init must be 'model', 'data' or an array; got {s.init!r}.")
    if s.num_anneal < 1:
        raise ValueError(f"num_anneal must be >= 1; got {s.num_anneal}.")


def validate_init(init: Any, num_walkers: int, dim: int) -> None:
    """Raise ``ValueError`` for an explicit ``init`` array of the wrong shape or not finite."""
    check_init_array(init, num_walkers, dim)
    if not isinstance(init, str) and not np.all(np.isfinite(np.asarray(init))):
        raise ValueError("init array contains NaN or inf.")
