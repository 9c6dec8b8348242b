r"""Several steps of an invariant kernel as one move.

Inside an SMC over a moving target each optimizer step moves the walkers once under the old
model. When the model changes faster than one move lets the walkers follow it, the weights
carry the difference, and their variance grows. :class:`Repeated` makes ``num_steps``
transitions of an invariant kernel one move: the composition leaves the same target
invariant, so the AIS increment :math:`U_k(x') - U_{k+1}(x')` stays exact
(:func:`smc_ebm.smc.default_increment`), at ``num_steps`` energy and gradient evaluations per
walker instead of one.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from smc_ebm.kernels._base import Kernel, MoveInfo


class Repeated(Kernel):
    """``num_steps`` transitions of an invariant ``kernel`` (e.g. :class:`MALA`) as one move.

    Args:
        kernel: a :class:`Kernel` that leaves its energy invariant (``kernel.invariant``);
            ULA is not (its one-step Jarzynski increment has no ``num_steps`` form here).
        num_steps: transitions per move, at least 1.

    Example:
        >>> import smc_ebm as se
        >>> kernel = se.kernels.Repeated(se.kernels.MALA(0.01), 4)
        >>> strategy = se.Jarzynski(1024, 0.01, kernel=kernel)
    """

    invariant: ClassVar[bool] = True

    def __init__(self, kernel: Kernel, num_steps: int):
        if not isinstance(kernel, Kernel):
            raise TypeError(f"kernel must be a Kernel; got {type(kernel).__name__}.")
        if not kernel.invariant:
            raise ValueError(
                f"Repeated needs a kernel that leaves its energy invariant (e.g. MALA); "
                f"{kernel!r} is not."
            )
        if int(num_steps) != num_steps or num_steps < 1:
            raise ValueError(f"num_steps must be an integer >= 1; got {num_steps!r}.")
        self.kernel, self.num_steps = kernel, int(num_steps)

    @property
    def step_size(self) -> Any:
        """The inner kernel's step size."""
        return self.kernel.step_size

    def with_step_size(self, step_size: Any) -> Repeated:
        """The same repetition of the inner kernel at ``step_size``."""
        return Repeated(self.kernel.with_step_size(step_size), self.num_steps)

    def move(self, key, state, energy):
        """``num_steps`` transitions; the acceptance is their mean, per walker."""
        if self.num_steps == 1:
            return self.kernel.move(key, state, energy)

        def one(st, k):
            st, info = self.kernel.step(k, st, energy)
            return st, info.acceptance

        final, acc = jax.lax.scan(one, state, jax.random.split(key, self.num_steps))
        return final.position, MoveInfo(jnp.mean(acc, axis=0), final.energy)

    def __repr__(self) -> str:
        return f"Repeated({self.kernel!r}, {self.num_steps})"

    # Equal when built alike, so that a resumed run's strategy compares equal to the saved one
    # and a compiled start is reused (kernels are static arguments of ``jit``).
    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and repr(other) == repr(self)

    def __hash__(self) -> int:
        return hash(repr(self))
