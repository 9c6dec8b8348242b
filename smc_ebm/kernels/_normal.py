r"""Standard normal draws, the numbers of :func:`jax.random.normal`, fused on the CPU.

Written here because jax 0.10.2 (the version measured) lowers its threefry hash on the CPU as
a rolled loop over the hash's five rounds (an upstream change, jax-ml/jax#37872, unrolls it;
with it this module only repeats what jax does). Each trip of that loop reads and writes
arrays of the output's size, so the draws are cheap while those arrays fit in the
processor's cache and slow once they do not: on the 2-core CPU the ULA
move's ``N x d`` normal numbers cost 2.6 ns each at :math:`10^4 \times 50` and 4.5–5.3 ns at
:math:`10^5`–:math:`10^6 \times 50`, most of a Jarzynski step there. Written out in
:mod:`jax.numpy` operations, the hash, the conversion to a uniform and ``erf_inv`` fuse into
one pass: 2.7–3.0 ns a number at all three sizes (``benchmarks/components.py``; outputs in
``benchmarks/results/components_walkers*.txt``). The numbers are bit for bit those of
:func:`jax.random.normal` (``tests/test_random.py`` checks it).

The same-numbers path covers threefry keys (the default) with ``jax_threefry_partitionable``
on (the default since jax 0.5), ``float32`` and fewer than :math:`2^{32}` numbers; anything
else, and every platform but the CPU, calls :func:`jax.random.normal` itself.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _rotl(v: Array, r: int) -> Array:
    return (v << np.uint32(r)) | (v >> np.uint32(32 - r))


def threefry2x32(k0: Array, k1: Array, x0: Array, x1: Array) -> tuple[Array, Array]:
    """The Threefry-2x32 hash (20 rounds) of the counter pairs ``(x0, x1)`` under ``(k0, k1)``.

    Salmon et al. (2011), as :mod:`jax.random` computes it, unrolled.
    """
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = x0 ^ _rotl(x1, r)
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def _typed(key: Array) -> bool:
    return jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)


def _fast_path(key: Array, shape: tuple[int, ...], dtype) -> bool:
    if np.dtype(dtype) != np.float32 or math.prod(shape) >= 2**32:
        return False
    if not jax.config.jax_threefry_partitionable:
        return False
    if _typed(key):
        return key.shape == () and str(jax.random.key_impl(key)) == "threefry2x32"
    return key.shape == (2,) and jax.config.jax_default_prng_impl == "threefry2x32"


def _fused_normal(key: Array, shape: tuple[int, ...]) -> Array:
    data = (jax.random.key_data(key) if _typed(key) else key).astype(jnp.uint32)
    # The counter of each element is its row-major index (below 2^32: high word 0), built
    # from broadcasted iotas so that a sharded walker axis partitions it.
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        index = index + np.uint32(stride) * jax.lax.broadcasted_iota(jnp.uint32, shape, axis)
        stride *= shape[axis]
    b0, b1 = threefry2x32(data[0], data[1], jnp.zeros(shape, jnp.uint32), index)
    bits = b0 ^ b1
    # jax.random.uniform on [nextafter(-1, 0), 1): 23 random mantissa bits under exponent 0.
    one = jax.lax.bitcast_convert_type((bits >> np.uint32(9)) | np.uint32(0x3F800000), jnp.float32)
    lo = np.nextafter(np.float32(-1.0), np.float32(0.0), dtype=np.float32)
    width = np.float32(1.0) - lo  # float32 arithmetic, as jax's maxval - minval
    u = jnp.maximum(lo, (one - np.float32(1.0)) * width + lo)
    return np.float32(np.sqrt(2.0)) * jax.lax.erf_inv(u)


def standard_normal(key: PRNGKeyArray, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
    """``jax.random.normal(key, shape, dtype)``, fused into one pass on the CPU."""
    shape = tuple(int(s) for s in shape)
    if not _fast_path(key, shape, dtype):
        return jax.random.normal(key, shape, dtype)
    return jax.lax.platform_dependent(
        key,
        cpu=lambda k: _fused_normal(k, shape),
        default=lambda k: jax.random.normal(k, shape, dtype),
    )
