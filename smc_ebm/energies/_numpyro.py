r"""Energies written as NumPyro models.

A model's latent ``numpyro.sample`` sites are the walkers' space, flattened to one vector
``z`` in unconstrained coordinates (NumPyro's ``biject_to`` of each support); its
``numpyro.param`` sites are the trained parameters :math:`\theta`; observed sites and
``numpyro.factor`` add their terms. The energy is NumPyro's potential energy,
:math:`U_\theta(z) = -\log p_\theta(T(z), y) - \log|\det \partial T(z)|`, so
:math:`e^{-U_\theta}` integrates to the model's normaliser (the evidence :math:`p(y)` for a
normalised prior and likelihood).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to
from numpyro.handlers import block, seed, substitute, trace
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.util import constrain_fn, potential_energy, unconstrain_fn

from smc_ebm.energies._base import AbstractEnergy

_FLOAT = jax.dtypes.canonicalize_dtype(jnp.float64)


class ModelSpec:
    """The model and everything fixed about it, kept out of the trained pytree.

    Held in a static field of :class:`NumPyroEnergy`: the observations and covariates in
    ``args``/``kwargs`` are constants of the compiled program, never parameters. Compared by
    identity (two energies built by separate calls compile separately).
    """

    def __init__(self, model, args, kwargs, unravel, latent_shapes, constraints_, fixed):
        self.model = model
        self.args = args
        self.kwargs = kwargs
        self.unravel = unravel
        self.latent_shapes = latent_shapes  # site -> constrained shape of one draw
        self.constraints = constraints_  # param site -> constraint
        self.fixed = fixed  # constrained values of the param sites when not trained


def _bijection(name: str, support: Any, kind: str) -> Any:
    try:
        return biject_to(support)
    except NotImplementedError as err:
        raise ValueError(
            f"{kind} site {name!r}: its support {support} has no bijection to unconstrained "
            "space in NumPyro (numpyro.distributions.transforms.biject_to); reparametrise it."
        ) from err


def _init_latent(site: dict) -> Any:
    """NumPyro's uniform initialisation, after naming the sites it cannot handle."""
    if site["type"] == "sample" and not site["is_observed"]:
        support = site["fn"].support
        if support.is_discrete:
            raise ValueError(
                f"latent site {site['name']!r} is discrete (support {support}); the walkers "
                "move by gradients in R^d: marginalise it out or observe it."
            )
        _bijection(site["name"], support, "latent")
    return init_to_uniform(site)


def _check_observed(name: str, site: dict) -> None:
    if type(site["fn"]).__name__ == "Unit":  # numpyro.factor
        return
    expected = tuple(site["fn"].shape())
    got = tuple(jnp.shape(site["value"]))
    try:
        ok = jnp.broadcast_shapes(got, expected) == got
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"observed site {name!r}: the observations have shape {got} but the distribution "
            f"(batch_shape + event_shape, plates included) has shape {expected}."
        )


def _trace(model: Any, args: tuple, kwargs: dict) -> dict:
    model = substitute(seed(model, rng_seed=0), substitute_fn=_init_latent)
    try:
        return trace(model).get_trace(*args, **kwargs)
    except ValueError:
        raise
    except Exception as err:
        raise ValueError(f"running the NumPyro model failed: {err}") from err


class NumPyroEnergy(AbstractEnergy):
    r"""NumPyro's potential energy of a model over its flat unconstrained latent vector.

    Build it with :func:`from_numpyro`. ``params`` holds the unconstrained values of the
    ``numpyro.param`` sites (what :func:`smc_ebm.fit` trains); :meth:`param_values` gives
    them constrained. :meth:`constrain` maps walkers to the model's own sites and
    :meth:`unconstrain` maps site values (data) to walkers.
    """

    params: dict[str, Array]
    spec: ModelSpec = eqx.field(static=True)
    _dim: int = eqx.field(static=True)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def site_names(self) -> tuple[str, ...]:
        """The latent sites, in the order of the flat vector."""
        return tuple(self.spec.latent_shapes)

    def param_values(self) -> dict[str, Array]:
        """The ``numpyro.param`` sites, constrained (the model's own values)."""
        out = {k: biject_to(self.spec.constraints[k])(v) for k, v in self.params.items()}
        return {**self.spec.fixed, **out}

    def model(self) -> Any:
        """The model with its ``param`` sites set to :meth:`param_values`."""
        return substitute(self.spec.model, data=self.param_values())

    def _potential(self, model: Any, z: Float[Array, " dim"]) -> Float[Array, ""]:
        return potential_energy(model, self.spec.args, self.spec.kwargs, self.spec.unravel(z))

    def __call__(self, z: Float[Array, " dim"]) -> Float[Array, ""]:
        return self._potential(self.model(), z)

    def prior_energy(self, z: Float[Array, " dim"]) -> Float[Array, ""]:
        """The energy without the observed sites and factors: the prior's, Jacobian included."""
        prior = block(self.model(), hide_fn=lambda site: site.get("is_observed", False))
        return self._potential(prior, z)

    def constrain(self, z: Float[Array, "... dim"]) -> dict[str, Array]:
        """Walkers ``(dim,)`` or ``(n, dim)`` -> the model's latent and deterministic sites."""
        z = jnp.asarray(z)
        if z.ndim > 1:
            return jax.vmap(self.constrain)(z)
        return constrain_fn(
            self.model(),
            self.spec.args,
            self.spec.kwargs,
            self.spec.unravel(z),
            return_deterministic=True,
        )

    def unconstrain(self, values: dict[str, Any]) -> Float[Array, "... dim"]:
        """Constrained site values (one draw, or a batch on a leading axis) -> walkers."""
        values = {k: jnp.asarray(values[k]) for k in self.site_names}
        name = self.site_names[0]
        if values[name].ndim > len(self.spec.latent_shapes[name]):
            return jax.vmap(self.unconstrain)(values)
        u = unconstrain_fn(self.model(), self.spec.args, self.spec.kwargs, values)
        return ravel_pytree({k: u[k] for k in self.site_names})[0]


def from_numpyro(model: Any, *args: Any, trainable: bool | None = None, **kwargs: Any) -> Any:
    r"""An energy from a NumPyro model: ``U(z)`` over its latent sites, ``theta`` its params.

    Args:
        model: a NumPyro model (a function with ``numpyro.sample``, ``numpyro.param`` and
            ``numpyro.factor`` sites).
        *args: the model's positional arguments (observations, covariates): fixed,
            never trained.
        **kwargs: its keyword arguments, fixed likewise.
        trainable: ``True`` requires ``numpyro.param`` sites (for :func:`smc_ebm.fit`: a
            model without them has nothing to train); ``False`` freezes them at their
            initial values; ``None`` (default) trains whatever params there are.

    Returns:
        A :class:`NumPyroEnergy` with ``dim`` the number of unconstrained latent numbers.

    Raises:
        ValueError: naming the site, for a discrete latent site, a support without a
            bijection to R^d, observations of the wrong shape; a model without latent sites;
            ``trainable=True`` without ``param`` sites.

    Example:
        >>> import numpyro, numpyro.distributions as dist
        >>> def model():
        ...     s = numpyro.param("s", 1.0, constraint=dist.constraints.positive)
        ...     numpyro.sample("x", dist.Normal(0.0, s).expand([3]).to_event(1))
        >>> energy = from_numpyro(model, trainable=True)
        >>> energy.dim, sorted(energy.param_values())
        (3, ['s'])
    """
    tr = _trace(model, args, kwargs)
    latent, params, cons = {}, {}, {}
    for name, site in tr.items():
        if site["type"] == "param":
            c = site["kwargs"].get("constraint", constraints.real)
            cons[name] = c
            value = jnp.asarray(site["value"]).astype(_FLOAT)  # strong dtype: a scan carry
            params[name] = _bijection(name, c, "param").inv(value)
        elif site["type"] == "sample" and site["is_observed"]:
            _check_observed(name, site)
        elif site["type"] == "sample":
            latent[name] = site["value"]
    if not latent:
        raise ValueError("the model has no latent numpyro.sample site: nothing to sample.")
    if trainable and not params:
        raise ValueError(
            "the model has no numpyro.param site: fit has nothing to train. Declare the "
            "trained parameters with numpyro.param, or pass trainable=None/False to sample."
        )
    shapes = {k: tuple(jnp.shape(latent[k])) for k in sorted(latent)}  # ravel_pytree order
    flat, unravel = ravel_pytree(
        unconstrain_fn(substitute(model, data=_values(params, cons)), args, kwargs, latent)
    )
    fixed = {} if trainable is not False else _values(params, cons)
    spec = ModelSpec(model, args, kwargs, unravel, shapes, cons, fixed)
    trained = {} if trainable is False else params
    return NumPyroEnergy(trained, spec, int(flat.shape[0]))


def _values(params: dict, cons: dict) -> dict:
    return {k: biject_to(cons[k])(v) for k, v in params.items()}


def check_trainable(energy: Any) -> None:
    """Raise ``ValueError`` when a NumPyro energy has no ``param`` site to train."""
    if isinstance(energy, NumPyroEnergy) and not energy.params:
        raise ValueError(
            "the NumPyro model has no trainable numpyro.param site; fit has nothing to train."
        )
