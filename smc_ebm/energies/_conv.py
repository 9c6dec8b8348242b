"""A small convolutional energy for square grey-level images (8x8 digits, 28x28 MNIST)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from smc_ebm.energies._base import AbstractEnergy


class ConvEnergy(AbstractEnergy):
    r"""Energy :math:`U(x) = \mathrm{CNN}(x) + \frac{c}{2}|x|^2` of a flattened square image.

    The input is one image flattened row-major, shape ``(side * side,)``. The network is a
    stack of 3x3 convolutions with SiLU activations (as in Carbone et al., 2023): the first
    keeps the resolution, each next one halves it (stride 2), then a linear layer maps the
    flattened features to a scalar. With the default ``channels=(16, 32, 64)`` an 8x8 image
    goes 8 -> 8 -> 4 -> 2 (256 features) and a 28x28 one 28 -> 28 -> 14 -> 7 (3136).

    ``confinement = c > 0`` makes :math:`e^{-U}` integrable (the network grows at most
    linearly) and keeps the walkers from drifting far from the data range ``[-1, 1]``.

    ``l2_penalty = lambda > 0`` asks :func:`~smc_ebm.fit` to add
    :math:`\lambda\,(\overline{U(x^*)^2} + E_{\rm walkers}[U(X)^2])` to the loss (the
    energy regulariser of Du & Mordatch, 2019), the walker term weighted like the model
    term of the gradient (Jarzynski weights, or uniform). It keeps the energies of data
    and walkers near zero and so the parameters from drifting; it biases the maximum
    likelihood estimate slightly, so keep it small (``1e-3``--``1e-2``).

    Args:
        side: image side (``8`` for the scikit-learn digits, ``28`` for MNIST).
        key: PRNG key (keyword-only).
        channels: output channels of the convolutions (at least one).
        confinement: coefficient ``c >= 0`` of the quadratic term (not trained).
        l2_penalty: coefficient ``lambda >= 0`` of the energy penalty (not trained).
        activation: hidden activation (default SiLU).

    Example:
        >>> import jax, smc_ebm as se
        >>> energy = se.energies.ConvEnergy(8, key=jax.random.key(0))
        >>> energy(jax.numpy.zeros(64)).shape
        ()
    """

    convs: list[eqx.nn.Conv2d]
    head: eqx.nn.Linear
    side: int = eqx.field(static=True)
    confinement: float = eqx.field(static=True, default=0.0)
    l2_penalty: float = eqx.field(static=True, default=0.0)
    activation: Callable = eqx.field(static=True, default=jax.nn.silu)

    def __init__(
        self,
        side: int,
        *,
        key: PRNGKeyArray,
        channels: Sequence[int] = (16, 32, 64),
        confinement: float = 1.0,
        l2_penalty: float = 0.0,
        activation: Callable = jax.nn.silu,
    ) -> None:
        if int(side) < 1:
            raise ValueError(f"side must be a positive integer; got {side}.")
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty list of positive ints; got {channels}.")
        if confinement < 0 or not math.isfinite(confinement):
            raise ValueError(f"confinement must be >= 0; got {confinement}.")
        if l2_penalty < 0 or not math.isfinite(l2_penalty):
            raise ValueError(f"l2_penalty must be >= 0; got {l2_penalty}.")
        keys = jax.random.split(key, len(channels) + 1)
        convs, c_in, s = [], 1, int(side)
        for i, (c_out, k) in enumerate(zip(channels, keys[:-1], strict=True)):
            stride = 1 if i == 0 else 2
            convs.append(eqx.nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, key=k))
            c_in, s = c_out, (s - 1) // stride + 1
        self.convs = convs
        self.head = eqx.nn.Linear(c_in * s * s, "scalar", key=keys[-1])
        self.side = int(side)
        self.confinement = float(confinement)
        self.l2_penalty = float(l2_penalty)
        self.activation = activation

    @property
    def dim(self) -> int:
        return self.side * self.side

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        h = x.reshape(1, self.side, self.side)
        for conv in self.convs:
            h = self.activation(conv(h))
        out = self.head(h.reshape(-1))
        if self.confinement:
            out = out + 0.5 * self.confinement * jnp.sum(x**2)
        return out

    def evaluate_batch(
        self, x: Float[Array, "n d"]
    ) -> tuple[Float[Array, " n"], Float[Array, "n d"], Callable[[Array], Any]] | None:
        r"""Energies, x-gradients and a weighted parameter gradient, sharing one backward pass.

        The contract of :func:`smc_ebm.kernels.evaluate`: returns ``(U, G, param_grad)`` with
        ``param_grad(w) = \sum_i w_i \partial_\theta U(x_i)``, where ``w`` may depend on
        ``U`` and ``G``. Zero "probes" are added to the pre-activations :math:`z_l` of the
        convolutions (``(n, C_l, H_l, W_l)``); the backward pass of ``G`` (cotangent 1 per
        image) then also returns their adjoints :math:`\delta_l = \partial U/\partial z_l`.
        Each layer is affine in its parameters given its input :math:`h_{l-1}`, and each
        image's backward pass is linear in its own cotangent, so

        .. math::
            \sum_i w_i \frac{\partial U(x_i)}{\partial \theta_l}
            = \Big(\frac{\partial z_l}{\partial \theta_l}\Big)^{\!\top}
              (w \odot \delta_l),

        one transposed convolution per layer on the kept inputs (the head's adjoint is 1,
        so its cotangent is ``w``), without the second backward pass through the network
        that the generic path of :func:`~smc_ebm.kernels.evaluate` runs. Returns ``None``
        (the generic path) for a subclass that changes ``__call__``.
        """
        if type(self).__call__ is not ConvEnergy.__call__ or x.ndim != 2:
            return None
        n = x.shape[0]

        def forward(x, probes):
            """``(U without confinement, [input of each conv..., last activations])``."""
            h, hs = x.reshape(n, 1, self.side, self.side), []
            for conv, probe in zip(self.convs, probes, strict=True):
                hs.append(h)
                h = self.activation(jax.vmap(conv)(h) + probe)
            hs.append(h)
            return jax.vmap(self.head)(h.reshape(n, -1)), hs

        # Each conv's output has the shape of the activations after it.
        shapes = jax.eval_shape(forward, x, [0.0] * len(self.convs))[1][1:]
        probes = [jnp.zeros(s.shape, s.dtype) for s in shapes]
        out, vjp, inputs = jax.vjp(forward, x, probes, has_aux=True)
        g, deltas = vjp(jnp.ones_like(out))
        g = g.reshape(n, -1)
        if self.confinement:
            out = out + 0.5 * self.confinement * jnp.sum(x**2, axis=-1)
            g = g + self.confinement * x
        params = eqx.partition(self, eqx.is_inexact_array)[0]

        def layer_grad(layer, h, cotangent):
            layer_params, layer_static = eqx.partition(layer, eqx.is_inexact_array)
            apply = jax.vmap(lambda p, hi: eqx.combine(p, layer_static)(hi), (None, 0))
            return jax.vjp(lambda p: apply(p, h), layer_params)[1](cotangent)[0]

        def param_grad(w: Float[Array, " n"]) -> Any:
            w = w.astype(x.dtype)
            convs = [
                layer_grad(conv, h, w[:, None, None, None] * d)
                for conv, h, d in zip(self.convs, inputs[:-1], deltas, strict=True)
            ]
            head = layer_grad(self.head, inputs[-1].reshape(n, -1), w)
            return eqx.tree_at(lambda p: (p.convs, p.head), params, (convs, head))

        return out, g, param_grad


def energy_l2_grad(
    energy: eqx.Module,
    batch: Float[Array, "n d"],
    walkers: Float[Array, "N d"],
    walker_weights: Float[Array, " N"],
) -> tuple[Any, Float[Array, ""]]:
    r"""Gradient in the parameters of :math:`\lambda(\overline{U(x^*)^2} + \sum_i w_i U(X_i)^2)`.

    ``lambda = energy.l2_penalty``; ``w`` are treated as constants. Returns ``(grad pytree,
    penalty value)``. Used by the strategies' ``gradient`` when ``energy.l2_penalty > 0``.
    """
    coef = float(getattr(energy, "l2_penalty", 0.0))
    params, static = eqx.partition(energy, eqx.is_inexact_array)
    w = jax.lax.stop_gradient(walker_weights)
    walkers = jax.lax.stop_gradient(walkers)

    def penalty(p):
        e = eqx.combine(p, static)
        u_data = jax.vmap(e)(batch)
        u_walk = jax.vmap(e)(walkers)
        return coef * (jnp.mean(u_data**2) + jnp.sum(w * u_walk**2))

    value, grad = jax.value_and_grad(penalty)(params)
    return grad, value
