"""Moves of the walkers: one kernel interface, and the fused one-pass evaluator.

The kernels (ULA, MALA, i-SIR, :class:`Repeated` steps of an invariant one; projected
Langevin in :mod:`smc_ebm.manifolds`) act on a :class:`KernelState`; :func:`evaluate` gives
energies, gradients and parameter gradients from one pass.
"""

from smc_ebm.kernels._base import Kernel, KernelState, MoveInfo, energy_and_grad, run_chains
from smc_ebm.kernels._evaluate import (
    energies,
    evaluate,
    evaluate_uniform,
    mean_param_grad,
    n_params,
    per_walker_sized,
    split_energy,
)
from smc_ebm.kernels._isir import ISIR, adapt_step_size, isir_move
from smc_ebm.kernels._langevin import (
    KERNELS,
    MALA,
    ULA,
    make_kernel,
    mala_move,
    ula_log_alpha,
    ula_propose,
)
from smc_ebm.kernels._normal import standard_normal
from smc_ebm.kernels._repeat import Repeated

__all__ = [
    "ISIR",
    "KERNELS",
    "MALA",
    "Repeated",
    "ULA",
    "Kernel",
    "KernelState",
    "MoveInfo",
    "adapt_step_size",
    "energies",
    "energy_and_grad",
    "evaluate",
    "evaluate_uniform",
    "isir_move",
    "make_kernel",
    "mala_move",
    "mean_param_grad",
    "n_params",
    "per_walker_sized",
    "run_chains",
    "split_energy",
    "standard_normal",
    "ula_log_alpha",
    "ula_propose",
]
