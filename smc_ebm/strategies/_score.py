r"""Score matching (Hyvärinen, 2005): exact, sliced (Song et al., 2019), denoising (Vincent, 2011).

The loss does not involve the model's normaliser, so no walkers are needed:

.. math::
    J(\theta) = \mathbb E_{\rho_*}\Big[\tfrac12|\nabla U_\theta(x)|^2 - \Delta U_\theta(x)\Big]
    = \tfrac12\mathbb E_{\rho_*}|\nabla\log\rho_\theta - \nabla\log\rho_*|^2 - C.

It only sees the data's local geometry: for well separated modes the relative weights of
the modes leave almost no trace in the score at the data, so score matching cannot learn
them (see ``examples/score_matching_vs_jarzynski.py``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from smc_ebm.kernels import split_energy
from smc_ebm.manifolds import Euclidean, manifold_of
from smc_ebm.strategies._base import AbstractStrategy, ModelTerm, StepInfo

METHODS = ("exact", "sliced", "denoising")
PROJECTIONS = ("gaussian", "rademacher")


class ScoreState(NamedTuple):
    """What score matching carries between steps: nothing but shapes.

    Attributes:
        zeros: the (zero) model term, shaped like the energy's trainable arrays.
        no_walkers: a ``(0, d)`` array (score matching has no walkers).
    """

    zeros: Any
    no_walkers: Float[Array, "0 d"]


@dataclasses.dataclass(frozen=True)
class ScoreMatching(AbstractStrategy):
    r"""Score matching for any energy on :math:`\mathbb R^d`; ``fit`` minimises its loss.

    Per data point ``x`` (``loss`` is the batch mean, the gradient its ``theta``-gradient):

    * ``"exact"``: :math:`\tfrac12|\nabla U(x)|^2 - \mathrm{tr}\,\nabla^2 U(x)` (``d`` Hessian
      columns by forward-over-reverse differentiation: low dimension);
    * ``"sliced"``: :math:`\tfrac12|\nabla U(x)|^2 - \frac1P\sum_p v_p^\top\nabla^2U(x)\,v_p`
      with ``P = num_projections`` Gaussian or Rademacher ``v`` (Hutchinson; one JVP each;
      unbiased for the exact loss);
    * ``"denoising"``: :math:`\tfrac12|\nabla U(x + \sigma\varepsilon) - \varepsilon/\sigma|^2
      - \frac{d}{2\sigma^2}` with :math:`\sigma` = ``noise_scale`` (the constant is removed so
      the value is comparable: for a quadratic ``U`` with Hessian ``A`` its mean is the exact
      loss plus :math:`\tfrac12\sigma^2\mathrm{tr}A^2`; in general it is the exact loss of the
      data smoothed by :math:`\mathcal N(0,\sigma^2 I)`).

    The state holds no walkers (``result.walkers`` is empty); ``history["loss"]`` is the
    score-matching loss and ``log_Z``/``cross_entropy`` are NaN.

    Args:
        method: ``"exact"``, ``"sliced"`` or ``"denoising"``.
        num_projections: ``P`` for ``"sliced"``.
        projection: ``"gaussian"`` or ``"rademacher"`` (``"sliced"``).
        noise_scale: :math:`\sigma` for ``"denoising"``.

    Example:
        >>> import jax, optax, smc_ebm as se
        >>> data = se.datasets.two_mode_teacher(jax.random.key(0), n=1000, dim=2)
        >>> energy = se.energies.GaussianMixture.init(jax.random.key(1), 2, 2, scale=3.0)
        >>> res = se.fit(energy, data.samples, strategy=se.ScoreMatching("exact"),
        ...              optimizer=optax.adam(0.05), num_steps=100, key=jax.random.key(2),
        ...              progress=False)
    """

    method: str = "exact"
    num_projections: int = 1
    projection: str = "gaussian"
    noise_scale: float = 0.1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {self.method!r}.")
        if int(self.num_projections) < 1:
            raise ValueError(f"num_projections must be >= 1; got {self.num_projections}.")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}; got {self.projection!r}.")
        s = float(self.noise_scale)
        if not s > 0 or not math.isfinite(s):
            raise ValueError(f"noise_scale must be a positive finite number; got {s}.")

    def init_state(self, key, energy, data, log_Z0) -> ScoreState:
        if not isinstance(manifold_of(energy), Euclidean):
            raise ValueError(
                "ScoreMatching works on R^d; for energies on the sphere use "
                "Dual(..., restart_prob='score_matching')."
            )
        params, _ = split_energy(energy)
        return ScoreState(
            jax.tree.map(jnp.zeros_like, params), jnp.zeros((0, data.shape[1]), data.dtype)
        )

    def walkers(self, state: ScoreState):
        """No walkers: ``(0, d)`` positions and ``(0,)`` log-weights."""
        return state.no_walkers, jnp.zeros(0, state.no_walkers.dtype)

    # ----------------------------------------------------------------------------------
    def per_sample_loss(
        self, key: PRNGKeyArray, energy: Any, x: Float[Array, "n d"]
    ) -> Float[Array, " n"]:
        """The loss of each data point (the estimator's terms before the batch mean)."""
        keys = jax.random.split(key, x.shape[0])
        return jax.vmap(lambda k, xi: self._one(k, energy, xi))(keys, x)

    def loss(self, key: PRNGKeyArray, energy: Any, x: Float[Array, "n d"]) -> Float[Array, ""]:
        """Batch mean of :meth:`per_sample_loss`."""
        return jnp.mean(self.per_sample_loss(key, energy, x))

    def _one(self, key, energy, x):
        grad_u = jax.grad(energy)
        if self.method == "denoising":
            sigma = jnp.asarray(self.noise_scale, x.dtype)
            eps = jax.random.normal(key, x.shape, x.dtype)
            r = grad_u(x + sigma * eps) - eps / sigma
            return 0.5 * jnp.sum(r * r) - 0.5 * x.shape[0] / sigma**2
        g = grad_u(x)
        if self.method == "exact":
            lap = jnp.trace(jax.jacfwd(grad_u)(x))
        else:
            shape = (int(self.num_projections), x.shape[0])
            if self.projection == "gaussian":
                v = jax.random.normal(key, shape, x.dtype)
            else:
                v = jax.random.rademacher(key, shape, x.dtype)
            hv = jax.vmap(lambda vi: jax.jvp(grad_u, (x,), (vi,))[1])(v)
            lap = jnp.mean(jnp.sum(v * hv, axis=-1))
        return 0.5 * jnp.sum(g * g) - lap

    def gradient(self, key, state, energy, batch):
        """``(state, dJ/dtheta, J, mean_batch U, model_term)``: the loss and its gradient."""
        params, static = split_energy(energy)

        def loss_of(p):
            return self.loss(key, eqx.combine(p, static), batch)

        loss, grad = jax.value_and_grad(loss_of)(params)
        data_energy = jnp.mean(jax.vmap(energy)(batch))
        state, term = self.model_term(key, state, energy, batch)
        return state, grad, loss, data_energy, term

    def model_term(self, key, state, energy, batch):
        """No model term: the loss needs no samples of the model."""
        zero = jnp.zeros((), batch.dtype)
        return state, ModelTerm(state.zeros, zero, zero + 1.0, zero + jnp.nan)

    def step(self, key, state, energy_old, energy_new, step):
        one = jnp.asarray(1.0, state.no_walkers.dtype)
        return state, StepInfo(jnp.asarray(False), one, {})
