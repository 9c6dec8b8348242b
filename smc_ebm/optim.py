"""Optimizer helpers: per-field learning rates, the Wasserstein-Fisher-Rao neuron step."""

from __future__ import annotations

from typing import Any

import jax
import optax


def _field_name(path: tuple) -> str:
    for entry in path:
        name = getattr(entry, "name", None)
        if name is not None:
            return str(name)
    return ""


def by_field(
    default: optax.GradientTransformation | None = None, **per_field: optax.GradientTransformation
) -> optax.GradientTransformation:
    """One optax transformation per top-level field of the energy module.

    Example:
        >>> import optax, smc_ebm as se
        >>> opt = se.optim.by_field(logits=optax.sgd(0.125), means=optax.sgd(0.025))

    Args:
        default: transformation for the fields not named (required if any are left).
        **per_field: field name -> transformation.
    """
    transforms = dict(per_field)
    if default is not None:
        transforms["__default__"] = default

    def labels(params: Any) -> Any:
        def label(path, _):
            name = _field_name(path)
            if name in per_field:
                return name
            if default is None:
                raise ValueError(
                    f"by_field: no transformation for field {name!r}; name it or pass default=."
                )
            return "__default__"

        return jax.tree_util.tree_map_with_path(label, params)

    return optax.multi_transform(transforms, labels)


from smc_ebm._wfr import WFRState, wfr  # noqa: E402

__all__ = ["WFRState", "by_field", "wfr"]
