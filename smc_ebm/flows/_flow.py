"""Companion flows: coupling flows built at the identity, and a jittable maximum-likelihood step.

The flow is a flowjax ``Transformed`` distribution ``q = T_# N(0, sigma^2 I)``. Built with the
last layer of every conditioner at zero, each coupling layer is the identity (the flow as a
whole is then a fixed permutation of the coordinates, which leaves the isotropic base
unchanged), so at initialisation ``q`` *is* its base (DESIGN 1.3): with a
:class:`~smc_ebm.energies.Tilted` energy over the same base
and a zero net, model, flow and base coincide.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import paramax
from flowjax.bijections import RationalQuadraticSpline
from flowjax.distributions import Normal, Transformed
from flowjax.flows import coupling_flow
from jaxtyping import Array, Float, PRNGKeyArray

from smc_ebm._naming import renamed

FLOW_KINDS = ("affine", "spline")
"""The kinds of :func:`make_flow`: affine or rational-quadratic spline coupling layers."""


def _zero_last_layers(flow: Any) -> Any:
    """Zero the last linear layer of every conditioner MLP (stacked layers included)."""

    def zero(node):
        if isinstance(node, eqx.nn.MLP):
            last = node.layers[-1]
            return eqx.tree_at(
                lambda n: (n.layers[-1].weight, n.layers[-1].bias),
                node,
                (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)),
            )
        return node

    return jax.tree.map(zero, flow, is_leaf=lambda n: isinstance(n, eqx.nn.MLP))


@renamed()
def make_flow(
    key: PRNGKeyArray,
    dim: int,
    *,
    sigma: float = 1.0,
    kind: str = "affine",
    num_layers: int = 8,
    width: int = 64,
    depth: int = 2,
    knots: int = 8,
    interval: float = 4.0,
    activation: Callable = jax.nn.relu,
) -> Transformed:
    r"""A coupling flow over the base :math:`\mathcal N(0, \sigma^2 I_d)`, at the identity.

    Args:
        key: PRNG key of the conditioners' hidden layers.
        dim: sample dimension ``d >= 2`` (a coupling layer splits the coordinates).
        sigma: standard deviation of the base (held fixed: not trained by :func:`mle_step`).
        kind: ``"affine"`` (RealNVP-style affine couplings, the default) or ``"spline"``
            (rational-quadratic splines on ``[-interval, interval]``, identity outside).
        num_layers: coupling layers (each followed by a permutation).
        width: hidden width of each conditioner MLP.
        depth: hidden layers of each conditioner MLP.
        knots: spline knots (``kind="spline"``).
        interval: the spline acts on ``[-interval * sigma, interval * sigma]``.
        activation: conditioner activation.

    Returns:
        A flowjax ``Transformed`` distribution with ``log_prob``, ``sample`` and
        ``sample_and_log_prob``; ``flow.log_prob(x) == base.log_prob(x)`` at construction.

    Example:
        >>> import jax, smc_ebm as se
        >>> flow = se.flows.make_flow(jax.random.key(0), dim=2, sigma=1.5)
        >>> x = flow.sample(jax.random.key(1), (4,))
        >>> bool(jax.numpy.allclose(flow.log_prob(x), flow.base_dist.log_prob(x)))
        True
    """
    if int(dim) < 2:
        raise ValueError(f"make_flow: a coupling flow needs dim >= 2; got {dim}.")
    if not float(sigma) > 0:
        raise ValueError(f"make_flow: sigma must be positive; got {sigma}.")
    if kind not in FLOW_KINDS:
        raise ValueError(f"make_flow: kind must be one of {FLOW_KINDS}; got {kind!r}.")
    if num_layers < 1 or width < 1 or depth < 0:
        raise ValueError(
            f"make_flow: need num_layers >= 1, width >= 1, depth >= 0; got {num_layers}, {width}, "
            f"{depth}."
        )
    base = paramax.non_trainable(Normal(jnp.zeros(dim), jnp.full((dim,), float(sigma))))
    transformer = None
    if kind == "spline":
        transformer = RationalQuadraticSpline(knots=knots, interval=float(interval) * sigma)
    flow = coupling_flow(
        key,
        base_dist=base,
        transformer=transformer,
        flow_layers=num_layers,
        nn_width=width,
        nn_depth=depth,
        nn_activation=activation,
    )
    return _zero_last_layers(flow)


def base_distribution(flow: Transformed) -> Any:
    """The flow's base distribution (unwrapped), for ``Tilted(net, base)``."""
    return paramax.unwrap(flow.base_dist)


def trainable(flow: Any) -> tuple[Any, Any]:
    """Split a flow into its trainable arrays and the rest (base and ``NonTrainable`` parts)."""
    return eqx.partition(
        flow, eqx.is_inexact_array, is_leaf=lambda n: isinstance(n, paramax.NonTrainable)
    )


def flow_log_prob(flow: Any, x: Float[Array, "n d"]) -> Float[Array, " n"]:
    """``log q(x)`` of a batch ``(n, d) -> (n,)``."""
    return flow.log_prob(x)


def init_flow_optimizer(flow: Any, optimizer: optax.GradientTransformation) -> Any:
    """The optimizer state for the trainable arrays of ``flow``."""
    return optimizer.init(trainable(flow)[0])


def mle_step(
    flow: Any,
    opt_state: Any,
    x: Float[Array, "n d"],
    optimizer: optax.GradientTransformation,
    weights: Float[Array, " n"] | None = None,
) -> tuple[Any, Any, Float[Array, ""]]:
    r"""One maximum-likelihood step of the flow on a (weighted) batch, jittable.

    Minimises :math:`L(\phi) = -\sum_i w_i \log q_\phi(x_i)` (uniform ``w = 1/n`` by
    default) with one ``optimizer`` update; unlike ``flowjax.train.fit_to_data`` there is no
    Python loop and no host synchronisation, so it runs inside a compiled training loop.

    Args:
        flow: the flow (a flowjax distribution).
        opt_state: from :func:`init_flow_optimizer`.
        x: ``(n, d)`` samples.
        optimizer: an optax transformation.
        weights: optional ``(n,)`` non-negative weights summing to one.

    Returns:
        ``(flow, opt_state, nll)`` with ``nll`` the loss *before* the update.
    """
    params, static = trainable(flow)
    n = x.shape[0]
    w = jnp.full((n,), 1.0 / n, x.dtype) if weights is None else weights

    def loss(p):
        lp = eqx.combine(p, static).log_prob(x)
        # Samples the flow cannot reach (log q = -inf at init is impossible for a Gaussian
        # base, but a trained flow may underflow) would make the loss infinite.
        lp = jnp.where(jnp.isfinite(lp), lp, jnp.asarray(-1e4, lp.dtype))
        return -jnp.sum(w * lp)

    nll, grads = jax.value_and_grad(loss)(params)
    # optax's Adam raises a Python float to an int32 step count, which strict dtype
    # promotion rejects; the optimizer's arithmetic is left to the standard rules.
    with jax.numpy_dtype_promotion("standard"):
        updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return eqx.combine(params, static), opt_state, nll


# ---------------------------------------------------------------------------------------
# Replay buffer


class ReplayBuffer(eqx.Module):
    """A ring buffer of past negative samples, a pytree (it can be a ``scan`` carry).

    Attributes:
        samples: ``(capacity, d)`` storage.
        count: ``()`` number of samples ever pushed (the valid rows are the first
            ``min(count, capacity)``).
    """

    samples: Float[Array, "B d"]
    count: Array

    @classmethod
    def empty(cls, capacity: int, dim: int, dtype: Any = jnp.float32) -> ReplayBuffer:
        if capacity < 1:
            raise ValueError(f"ReplayBuffer: capacity must be >= 1; got {capacity}.")
        return cls(jnp.zeros((capacity, dim), dtype), jnp.zeros((), jnp.int32))

    @property
    def capacity(self) -> int:
        return int(self.samples.shape[0])

    def push(self, x: Float[Array, "n d"]) -> ReplayBuffer:
        """Insert ``x`` (``n <= capacity``), overwriting the oldest rows."""
        n = x.shape[0]
        idx = (self.count + jnp.arange(n)) % self.capacity
        return ReplayBuffer(self.samples.at[idx].set(x), self.count + n)

    def draw(self, key: PRNGKeyArray, n: int) -> Float[Array, "n d"]:
        """``n`` rows drawn uniformly with replacement among the valid ones."""
        valid = jnp.maximum(jnp.minimum(self.count, self.capacity), 1)
        idx = jax.random.randint(key, (n,), 0, valid)
        return self.samples[idx]
