r"""Shallow ReLU energy on the unit sphere (Domingo-Enrich et al., "Dual training of EBMs")."""

from __future__ import annotations

import functools
import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from smc_ebm.energies._base import AbstractEnergy
from smc_ebm.manifolds import SPHERE, Sphere

# Above this many negative neurons the sampler's energy bound uses the plain sum of weights
# instead of the enumeration of subsets (2^k norms).
_MAX_ENUMERATED = 12


class ShallowReLU(AbstractEnergy):
    r"""Shallow ReLU energy on :math:`S^{d-1}` in the mean-field (F1) parametrisation.

    .. math::
        f(x) = \frac1m \sum_{j=1}^m \sigma_j w_j\,\mathrm{ReLU}(\langle x, \theta_j\rangle),
        \qquad U(x) = \beta f(x),

    with features :math:`\theta_j \in S^{d-1}`, weights :math:`w_j \ge 0`, fixed signs
    :math:`\sigma_j = \pm 1`, and the model density :math:`\propto e^{-\beta f}` with respect to
    the uniform measure of the sphere. The F1 norm of ``f`` is at most :math:`\frac1m\sum_j w_j`
    (the Wasserstein-Fisher-Rao step of :func:`smc_ebm.optim.wfr` keeps it below a radius).

    Trainable arrays: ``theta`` ``(m, d)`` and ``w`` ``(m,)``; ``sigma`` is an integer array
    (never trained) and ``beta`` a static float.

    Args:
        dim: ambient dimension ``d`` (samples on ``S^{d-1}``).
        width: number of neurons ``m``.
        key: PRNG key for the initial features (uniform on the sphere).
        beta: inverse temperature.
        theta: explicit ``(m, d)`` features (then ``key`` is not needed); default: uniform
            on the sphere.
        w: explicit ``(m,)`` outer weights; default ``w = 1`` (F1 norm 1).
        sigma: explicit ``(m,)`` signs; default alternating ``+1, -1, ...``.

    Example:
        >>> import jax, smc_ebm as se
        >>> energy = se.energies.ShallowReLU(15, 64, key=jax.random.key(0), beta=10.0)
        >>> x = energy.sample(jax.random.key(1), 8)
        >>> x.shape, jax.vmap(energy)(x).shape
        ((8, 15), (8,))
    """

    theta: Float[Array, "m d"]
    w: Float[Array, " m"]
    sigma: Int[Array, " m"]
    beta: float = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        width: int,
        *,
        key: PRNGKeyArray | None = None,
        beta: float = 1.0,
        theta: Float[Array, "m d"] | None = None,
        w: Float[Array, " m"] | None = None,
        sigma: Int[Array, " m"] | None = None,
    ):
        if int(dim) < 2 or int(width) < 1:
            raise ValueError(f"dim must be >= 2 and width >= 1; got dim={dim}, width={width}.")
        if not float(beta) > 0:
            raise ValueError(f"beta must be positive; got {beta}.")
        if theta is None:
            if key is None:
                raise ValueError("ShallowReLU needs `key` when `theta` is not given.")
            theta = SPHERE.uniform(key, int(width), int(dim))
        theta = jnp.asarray(theta)
        if theta.shape != (width, dim):
            raise ValueError(
                f"theta must have shape (width, dim) = ({width}, {dim}); got {theta.shape}."
            )
        self.theta = SPHERE.project(theta)
        self.w = jnp.ones(width, theta.dtype) if w is None else jnp.asarray(w, theta.dtype)
        if self.w.shape != (width,):
            raise ValueError(f"w must have shape (width,) = ({width},); got {self.w.shape}.")
        if sigma is None:
            sigma = jnp.where(jnp.arange(width) % 2 == 0, 1, -1)
        self.sigma = jnp.asarray(sigma, jnp.int32)
        if self.sigma.shape != (width,) or not bool(jnp.all(jnp.abs(self.sigma) == 1)):
            raise ValueError(f"sigma must be a ({width},) array of +1/-1.")
        self.beta = float(beta)

    @property
    def dim(self) -> int:
        return int(self.theta.shape[1])

    @property
    def width(self) -> int:
        """Number of neurons ``m``."""
        return int(self.theta.shape[0])

    @property
    def manifold(self) -> Sphere:
        """Samples and features live on the unit sphere."""
        return SPHERE

    def f(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        r""":math:`f(x) = \frac1m\sum_j \sigma_j w_j \mathrm{ReLU}(\langle x,\theta_j\rangle)`."""
        sig = self.sigma.astype(self.w.dtype)
        return jnp.mean(sig * self.w * jax.nn.relu(self.theta @ x))

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        return self.beta * self.f(x)

    def f1_norm(self) -> Float[Array, ""]:
        r"""The F1-norm bound :math:`\frac1m \sum_j w_j` of ``f``."""
        return jnp.mean(self.w)

    def energy_lower_bound(self) -> float:
        r"""A lower bound of ``U`` on the sphere, for rejection sampling.

        For any ``x``, :math:`\sum_{j:\sigma_j<0} w_j \mathrm{ReLU}(\langle x,\theta_j\rangle)
        = \langle x, \sum_{j\in S(x)} w_j\theta_j\rangle \le \max_S |\sum_{j\in S} w_j\theta_j|`
        over subsets ``S`` of the negative neurons (enumerated when there are at most 12 of
        them, else bounded by :math:`\sum_{\sigma_j<0} w_j`); positive neurons only add.
        """
        neg = np.asarray(self.sigma) < 0
        wt = np.asarray(self.w, np.float64)[neg, None] * np.asarray(self.theta, np.float64)[neg]
        k = wt.shape[0]
        if k == 0:
            return 0.0
        if k <= _MAX_ENUMERATED:
            best = 0.0
            for r in range(1, k + 1):
                for s in itertools.combinations(range(k), r):
                    best = max(best, float(np.linalg.norm(wt[list(s)].sum(0))))
        else:
            best = float(np.asarray(self.w, np.float64)[neg].sum())
        return -self.beta * best / self.width

    @property
    def can_sample(self) -> bool:
        return True

    def sample(self, key: PRNGKeyArray, n: int, *, batch: int = 65_536) -> Float[Array, "n d"]:
        r"""``n`` exact samples by rejection from the uniform distribution on the sphere.

        A uniform proposal ``x`` is accepted with probability :math:`e^{-(U(x) - U_{lo})}`,
        ``U_lo`` = :meth:`energy_lower_bound`. Runs a host loop over jitted batches (not
        jittable itself); the expected number of proposals is
        :math:`n\,e^{-U_{lo}} / \mathbb E_{\mathrm{unif}}[e^{-U}]`.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0; got {n}.")
        u_lo = self.energy_lower_bound()
        propose = _proposer(self.dim, batch)
        out, have, i = [], 0, 0
        while have < n:
            x, accept = propose(jax.random.fold_in(key, i), self, jnp.asarray(u_lo, self.w.dtype))
            x = np.asarray(x)[np.asarray(accept)]
            out.append(x)
            have += x.shape[0]
            i += 1
            if i > 100_000:
                raise RuntimeError("ShallowReLU.sample: acceptance too low (over 6.5e9 proposals).")
        return jnp.asarray(np.concatenate(out)[:n], self.w.dtype)


@functools.lru_cache(maxsize=16)
def _proposer(dim: int, batch: int):
    @eqx.filter_jit
    def propose(key, energy, u_lo):
        kx, ku = jax.random.split(key)
        x = SPHERE.uniform(kx, batch, dim).astype(energy.w.dtype)
        log_acc = -(jax.vmap(energy)(x) - u_lo)
        accept = jnp.log(jax.random.uniform(ku, (batch,), x.dtype)) < log_acc
        return x, accept

    return propose
