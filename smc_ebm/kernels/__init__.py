"""Moves of the walkers: ULA with cached gradients, MALA (blackjax), and the fused evaluator."""

from smc_ebm.kernels._evaluate import (
    energies,
    evaluate,
    evaluate_uniform,
    mean_param_grad,
    split_energy,
)
from smc_ebm.kernels._langevin import mala_move, ula_log_alpha, ula_propose

__all__ = [
    "energies",
    "evaluate",
    "evaluate_uniform",
    "mala_move",
    "mean_param_grad",
    "split_energy",
    "ula_log_alpha",
    "ula_propose",
]
