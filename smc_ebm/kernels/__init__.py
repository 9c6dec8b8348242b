"""Moves of the walkers: ULA with cached gradients, MALA (blackjax), and the fused evaluator."""

from smc_ebm.kernels._evaluate import (
    energies,
    evaluate,
    evaluate_uniform,
    mean_param_grad,
    n_params,
    split_energy,
)
from smc_ebm.kernels._isir import adapt_step_size, isir_move
from smc_ebm.kernels._langevin import mala_move, ula_log_alpha, ula_propose

__all__ = [
    "adapt_step_size",
    "energies",
    "evaluate",
    "evaluate_uniform",
    "isir_move",
    "mala_move",
    "mean_param_grad",
    "n_params",
    "split_energy",
    "ula_log_alpha",
    "ula_propose",
]
