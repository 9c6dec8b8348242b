"""Teacher distributions with exact log-densities: the two-mode Gaussian mixture."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from smc_ebm.energies._gmm import GaussianMixture


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Training samples and, when known, the exact teacher.

    Attributes:
        samples: ``(n, d)`` training samples.
        log_prob: exact normalised log-density of one sample ``(d,) -> ()`` (or ``None``).
        log_Z: ``log`` of the teacher energy's partition function (or ``None``).
        teacher: the teacher energy module (or ``None``).
        info: free-form extra facts (mode centres, weights, labels, ...).
    """

    samples: Float[Array, "n d"]
    log_prob: Callable[[Array], Array] | None = None
    log_Z: float | None = None
    teacher: Any = None
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.samples.shape[1])

    def entropy(self) -> Float[Array, ""]:
        """Monte Carlo estimate of the teacher's entropy ``-mean log rho*(x)`` on the samples."""
        if self.log_prob is None:
            raise ValueError("this dataset has no exact log-density.")
        return -jnp.mean(jax.vmap(self.log_prob)(self.samples))


def two_mode_teacher(
    key: PRNGKeyArray,
    n: int,
    dim: int,
    a: float = -10.0,
    b: float = 6.0,
    weight: float = 0.25,
) -> Dataset:
    r"""Two unit Gaussians at ``a e_1`` (weight ``weight``) and ``b e_1`` (Carbone et al., 2023).

    :math:`\rho_*(x) = w\,\mathcal N(x; a e_1, I) + (1-w)\,\mathcal N(x; b e_1, I)`.

    Returns:
        A :class:`Dataset` with ``n`` samples, the exact ``log_prob``, the teacher as a
        :class:`~smc_ebm.energies.GaussianMixture` (normalised logits, so ``log_Z`` is
        ``(d/2) log 2 pi``) and ``info = {"means", "weights"}``.
    """
    if dim < 1 or n < 1:
        raise ValueError(f"n and dim must be >= 1; got n={n}, dim={dim}.")
    if not 0.0 < weight < 1.0:
        raise ValueError(f"weight must be in (0, 1); got {weight}.")
    means = jnp.zeros((2, dim)).at[0, 0].set(a).at[1, 0].set(b)
    logits = jnp.log(jnp.array([weight, 1.0 - weight]))
    teacher = GaussianMixture(means=means, logits=logits)
    samples = teacher.sample(key, n)
    return Dataset(
        samples=samples,
        log_prob=teacher.log_prob,
        log_Z=float(teacher.log_partition()),
        teacher=teacher,
        info={"means": means, "weights": teacher.weights},
    )
