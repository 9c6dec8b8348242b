"""Log-weight increments of the moving-target SMC (DESIGN 1.1, 1.2)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def row_sum(z: Float[Array, "*batch d"]) -> Float[Array, " *batch"]:
    r""":math:`\sum_j z_{\dots j}`, the sum over the last axis, in the form fastest per backend.

    On CPU, XLA compiles a fused reduction over the minor axis of an ``(n, d)`` array into a
    kernel that is slower than an elementwise pass followed by a matrix-vector product with a
    vector of ones: on the 50-d, :math:`10^4`-walker benchmark the Jarzynski increment costs
    about half as much this way (``benchmarks/overhead.py``). Other backends get the plain
    fused reduction. Both sum in the input's full precision (the product at
    ``Precision.HIGHEST``, so no backend sums in TF32 or bfloat16); they differ only in the
    order of summation.
    """

    def cpu(v):
        ones = jnp.ones(v.shape[-1:], v.dtype)
        return jnp.matmul(v, ones, precision=jax.lax.Precision.HIGHEST)

    def other(v):
        return jnp.sum(v, axis=-1)

    return jax.lax.platform_dependent(z, cpu=cpu, default=other)


def jarzynski_increment(
    x_old: Float[Array, "n d"],
    u_old: Float[Array, " n"],
    g_old: Float[Array, "n d"],
    x_new: Float[Array, "n d"],
    u_new: Float[Array, " n"],
    g_new: Float[Array, "n d"],
    step_size: float,
) -> Float[Array, " n"]:
    r"""Jarzynski increment of a ULA move taken with the OLD energy :math:`U_k`.

    .. math::
        \Delta A = \alpha_k(x, x') - \alpha_{k+1}(x', x)

    with ``(u_old, g_old) = (U_k, \nabla U_k)(x)`` and ``(u_new, g_new) =
    (U_{k+1}, \nabla U_{k+1})(x')``. It is the log-ratio of the backward ULA kernel of
    :math:`U_{k+1}` times :math:`e^{-U_{k+1}(x')}` over the forward kernel of :math:`U_k`
    times :math:`e^{-U_k(x)}`, so :math:`E[f(X_k)e^{A_k}]/E[e^{A_k}] = E_{\rho_k}[f]` and
    :math:`E[e^{A_k}] = Z_k/Z_0` for any step size (Carbone et al., 2023).

    With :math:`\delta = x' - x`, :math:`s = g + g'` the two :math:`\alpha` terms combine to

    .. math::
        \Delta A = U_k(x) - U_{k+1}(x') + \tfrac12\, s \cdot \big(\delta
        + \tfrac h2 (g - g')\big),

    one reduction over the coordinates instead of four (the same number up to rounding as
    :func:`smc_ebm.kernels.ula_log_alpha` taken twice, at a fraction of the memory traffic),
    taken by :func:`row_sum`.
    """
    s = g_old + g_new
    t = (x_new - x_old) + (0.5 * step_size) * (g_old - g_new)
    return u_old - u_new + 0.5 * row_sum(s * t)


def ais_increment(u_old: Float[Array, " n"], u_new: Float[Array, " n"]) -> Float[Array, " n"]:
    r"""AIS increment :math:`U_k(x) - U_{k+1}(x)` at a fixed position.

    Used for kernels that leave the target invariant (MALA, i-SIR) and for walkers that are
    frozen during a mini-batched step.
    """
    return u_old - u_new


frozen_increment = ais_increment
