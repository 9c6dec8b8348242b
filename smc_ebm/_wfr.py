r"""The Wasserstein-Fisher-Rao step of a shallow network's neurons, as an optax transformation.

A shallow energy :math:`f = \frac1m\sum_j \sigma_j w_j \phi(\cdot, \theta_j)` is a function of
the measure :math:`\mu = \frac1m\sum_j w_j \delta_{\theta_j}` over neurons. For a loss ``H``
with first variation :math:`V = \delta H / \delta\mu`, the Wasserstein-Fisher-Rao gradient
flow moves the features along :math:`-\nabla V` (Wasserstein part, on the sphere: the
Riemannian gradient) and rescales the masses by :math:`e^{-V}` (Fisher-Rao part). From the
Euclidean gradients ``fit`` hands over, :math:`\partial H/\partial w_j = V(\theta_j)/m` and
:math:`\partial H/\partial\theta_j = w_j \nabla V(\theta_j)/m`, so one step of size
:math:`\gamma` is

.. math::
    \theta_j \leftarrow \mathrm{proj}\Big(\theta_j - \gamma\,\frac{m}{w_j}
        P_{\theta_j}\frac{\partial H}{\partial\theta_j}\Big),\qquad
    w_j \leftarrow w_j \exp\Big(-\gamma\,m \frac{\partial H}{\partial w_j}\Big),\qquad
    w \leftarrow \frac{w}{\max(1, \bar w / r)},

the last step keeping the F1 norm :math:`\bar w = \frac1m\sum_j w_j` in the ball of radius
``r``. For :class:`~smc_ebm.energies.ShallowReLU` (``U = beta f``) and the maximum-likelihood
gradient this is the neuron update of Domingo-Enrich et al. with
:math:`\gamma = s\alpha/\beta`:
:math:`\theta_j \mathrel{+}= s\alpha\sigma_j\nabla F(\theta_j)`,
:math:`w_j \mathrel{*}= e^{s\alpha\sigma_j F(\theta_j)}`,
:math:`F(\theta) = \overline{\phi(X,\theta)}^{\,\mathrm{walkers}}
- \overline{\phi(x,\theta)}^{\,\mathrm{data}}`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from smc_ebm.manifolds import SPHERE, Euclidean, Sphere


class WFRState(NamedTuple):
    """Step counter (for learning-rate schedules)."""

    count: jax.Array


def wfr(
    learning_rate: optax.ScalarOrSchedule,
    *,
    radius: float | None = 1.0,
    features: str = "theta",
    weights: str = "w",
    manifold: Euclidean | Sphere = SPHERE,
) -> optax.GradientTransformation:
    r"""Wasserstein-Fisher-Rao step on the neurons ``(features, weights)`` of a shallow energy.

    Args:
        learning_rate: :math:`\gamma` (a float or an optax schedule of the step count); for
            :class:`~smc_ebm.energies.ShallowReLU` use ``s * alpha / beta`` (see
            :meth:`smc_ebm.strategies.Dual.optimizer`).
        radius: F1-norm cap ``r`` on :math:`\frac1m\sum_j w_j` (``None``: no cap).
        features: name of the ``(m, d)`` feature field.
        weights: name of the ``(m,)`` non-negative weight field.
        manifold: where the features live (the sphere by default: Riemannian gradient and
            renormalisation).

    Returns:
        An ``optax.GradientTransformation`` whose ``update(grads, state, params)`` needs
        ``params`` and returns ``new_params - params`` for the two fields (other inexact
        fields get a zero update).

    Example:
        >>> import jax, smc_ebm as se
        >>> opt = se.optim.wfr(0.02 * 20 / 10.0, radius=1.0)
    """
    if radius is not None and not float(radius) > 0:
        raise ValueError(f"radius must be positive or None; got {radius}.")
    if not callable(learning_rate) and not float(learning_rate) >= 0:
        raise ValueError(f"learning_rate must be >= 0; got {learning_rate}.")

    def init_fn(params: Any) -> WFRState:
        for name in (features, weights):
            if getattr(params, name, None) is None:
                raise ValueError(
                    f"wfr: the parameters have no trainable field {name!r}; "
                    f"pass features=/weights= naming the neurons' fields."
                )
        return WFRState(count=jnp.zeros((), jnp.int32))

    def update_fn(updates: Any, state: WFRState, params: Any = None) -> tuple[Any, WFRState]:
        if params is None:
            raise ValueError("wfr needs the parameters: call update(grads, state, params).")
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        theta, w = getattr(params, features), getattr(params, weights)
        g_theta, g_w = getattr(updates, features), getattr(updates, weights)
        m = w.shape[0]
        lr = jnp.asarray(lr, w.dtype)
        # grad V(theta_j) = m dH/dtheta_j / w_j; w_j > 0 unless it underflowed (then no move).
        safe_w = jnp.where(w > 0, w, 1.0)
        grad_v = jnp.where((w > 0)[:, None], m * g_theta / safe_w[:, None], 0.0)
        new_theta = manifold.project(theta - lr * manifold.to_tangent(theta, grad_v))
        new_w = w * jnp.exp(-lr * m * g_w)
        if radius is not None:
            new_w = new_w / jnp.maximum(1.0, jnp.mean(new_w) / radius)
        out = jax.tree.map(jnp.zeros_like, updates)
        out = _replace(out, features, new_theta - theta)
        out = _replace(out, weights, new_w - w)
        return out, WFRState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


def _replace(tree: Any, name: str, value: jax.Array) -> Any:
    return eqx.tree_at(lambda t: getattr(t, name), tree, value)
