"""Multilayer-perceptron energy with an optional quadratic confinement."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from smc_ebm.energies._base import AbstractEnergy, split_energy


class MLP(AbstractEnergy):
    r"""Energy :math:`U(x) = \mathrm{net}(x) + \frac{c}{2}|x|^2`.

    ``net`` is an equinox MLP with scalar output. With ``confinement = c > 0`` the density
    :math:`e^{-U}` is integrable whenever ``net`` grows slower than quadratically (always
    true for SiLU/ReLU/tanh networks). ``zero_init=True`` zeroes the last layer so that
    ``net`` starts at exactly zero (used with :class:`Tilted`).

    Args:
        dim: sample dimension ``d``.
        width: hidden width.
        depth: number of hidden layers.
        key: PRNG key (keyword-only).
        confinement: coefficient ``c >= 0`` of the quadratic term (not trained).
        activation: hidden activation (default SiLU).
        zero_init: start with the output layer at zero.
    """

    net: eqx.nn.MLP
    confinement: float = eqx.field(static=True, default=0.0)
    _dim: int = eqx.field(static=True, default=0)

    def __init__(
        self,
        dim: int,
        width: int,
        depth: int,
        *,
        key: PRNGKeyArray,
        confinement: float = 0.0,
        activation=jax.nn.silu,
        zero_init: bool = False,
    ) -> None:
        if confinement < 0:
            raise ValueError(f"confinement must be >= 0; got {confinement}.")
        net = eqx.nn.MLP(dim, "scalar", width, depth, activation=activation, key=key)
        if zero_init:
            last = net.layers[-1]
            net = eqx.tree_at(
                lambda n: (n.layers[-1].weight, n.layers[-1].bias),
                net,
                (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)),
            )
        self.net = net
        self.confinement = float(confinement)
        self._dim = int(dim)

    @property
    def dim(self) -> int:
        return self._dim

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        out = self.net(x)
        if self.confinement:
            out = out + 0.5 * self.confinement * jnp.sum(x**2)
        return out

    def evaluate_batch(
        self, x: Float[Array, "n d"]
    ) -> tuple[Float[Array, " n"], Float[Array, "n d"], Callable[[Array], Any]] | None:
        r"""Energies, x-gradients and a weighted parameter gradient, sharing one backward pass.

        The contract of :func:`smc_ebm.kernels.evaluate`: returns ``(U, G, param_grad)`` with
        ``param_grad(w) = \sum_i w_i \partial_\theta U(x_i)``, where ``w`` may depend on
        ``U`` and ``G``. A generic energy needs a second backward pass for ``param_grad``
        (its cotangent ``w`` is known only after ``G``). A dense network does not: with
        layer inputs :math:`h_{l-1}` (``(n, in_l)``) and pre-activations :math:`z_l`, the
        backward pass of ``G`` (cotangent 1 per walker) computes the adjoints
        :math:`\delta_l = \partial U / \partial z_l` (``(n, out_l)``), and since each
        walker's backward pass is linear in its own cotangent,

        .. math::
            \sum_i w_i \frac{\partial U(x_i)}{\partial W_l}
            = (w \odot \delta_l)^\top h_{l-1}, \qquad
            \sum_i w_i \frac{\partial U(x_i)}{\partial b_l} = w^\top \delta_l,

        the same outer products a single fused backward pass forms with uniform weights.
        Returns ``None`` (use the generic path) for a scanned MLP or learnt activations.
        """
        mlp = self.net
        trainable_act = eqx.filter((mlp.activation, mlp.final_activation), eqx.is_array)
        if getattr(mlp, "scan", False) or jax.tree.leaves(trainable_act) or x.ndim != 2:
            return None
        n = x.shape[0]
        layers = mlp.layers
        acts = [mlp.activation] * (len(layers) - 1) + [mlp.final_activation]

        def forward(x, probes):
            h, inputs = x, []
            for layer, act, probe in zip(layers, acts, probes, strict=True):
                inputs.append(h)
                z = h @ layer.weight.T + probe
                if layer.bias is not None:
                    z = z + layer.bias
                h = jax.vmap(jax.vmap(act))(z)  # per neuron, as eqx.nn.MLP applies it
            return jnp.reshape(h, (n,)), inputs

        # Zero "probes" added to the pre-activations: their cotangents are the adjoints.
        probes = [jnp.zeros((n, layer.weight.shape[0]), x.dtype) for layer in layers]
        out, vjp, inputs = jax.vjp(forward, x, probes, has_aux=True)
        g, deltas = vjp(jnp.ones_like(out))
        if self.confinement:
            out = out + 0.5 * self.confinement * jnp.sum(x**2, axis=-1)
            g = g + self.confinement * x
        params = split_energy(self)[0]  # the pytree that evaluate's callers expect

        def param_grad(w: Float[Array, " n"]) -> Any:
            w = w.astype(x.dtype)
            grads, where = [], []
            for i, (layer, h, d) in enumerate(zip(layers, inputs, deltas, strict=True)):
                grads.append((w[:, None] * d).T @ h)
                where.append(lambda p, i=i: p.net.layers[i].weight)
                if layer.bias is not None:
                    grads.append(jnp.reshape(w @ d, layer.bias.shape))
                    where.append(lambda p, i=i: p.net.layers[i].bias)
            return eqx.tree_at(lambda p: [f(p) for f in where], params, grads)

        return out, g, param_grad
