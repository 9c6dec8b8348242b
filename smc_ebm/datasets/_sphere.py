"""Teacher on the sphere: a few-neuron shallow ReLU energy, sampled exactly (DESIGN 1.4)."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

from smc_ebm._naming import renamed
from smc_ebm.datasets._teacher import Dataset
from smc_ebm.energies._shallow import ShallowReLU


@renamed()
def sphere_teacher(
    key: PRNGKeyArray,
    n: int,
    dim: int,
    angle: float,
    weight: float = -10.0,
    num_neurons: int = 2,
) -> Dataset:
    r"""Samples of the teacher :math:`\rho_* \propto e^{-f_*}` on :math:`S^{d-1}`.

    .. math::
        f_*(x) = \frac{1}{n_*}\sum_{j=1}^{n_*} w_*\,\mathrm{ReLU}(\langle x, \theta^*_j\rangle),

    with :math:`w_* =` ``weight`` and the neurons :math:`\theta^*_j = \cos(j a)\,e_1 +
    \sin(j a)\,e_2`, ``j = 0, ..., n_* - 1``, ``a = angle`` (two neurons at angle ``a``: a
    negative weight makes one bump per neuron, which merge when ``a`` is small: 2.87 rad
    is bimodal, 1.37 rad monomodal, as in Domingo-Enrich et al.). Samples are exact
    (rejection from the uniform distribution, :meth:`ShallowReLU.sample`).

    The teacher is returned as a :class:`~smc_ebm.energies.ShallowReLU` with
    ``beta = |weight|``, unit weights and signs ``sign(weight)``: the same energy, written so
    that a student with the same ``beta`` represents it with F1 norm 1.

    Returns:
        A :class:`Dataset` with ``n`` samples, ``teacher`` and
        ``info = {"neurons", "angle", "weight"}`` (``log_prob`` and ``log_Z`` are ``None``:
        the normaliser on the sphere has no closed form).
    """
    if n < 1 or dim < 2 or num_neurons < 1:
        raise ValueError(f"need n >= 1, dim >= 2, num_neurons >= 1; got {n}, {dim}, {num_neurons}.")
    if weight == 0:
        raise ValueError("weight must be non-zero.")
    j = jnp.arange(num_neurons, dtype=float) * angle
    theta = jnp.zeros((num_neurons, dim)).at[:, 0].set(jnp.cos(j)).at[:, 1].set(jnp.sin(j))
    sign = 1 if weight > 0 else -1
    teacher = ShallowReLU(
        dim,
        num_neurons,
        beta=abs(float(weight)),
        theta=theta,
        w=jnp.ones(num_neurons),
        sigma=jnp.full(num_neurons, sign),
    )
    samples = teacher.sample(key, n)
    return Dataset(
        samples=samples,
        teacher=teacher,
        info={"neurons": teacher.theta, "angle": float(angle), "weight": float(weight)},
    )
