"""Training strategies: how the model term of the gradient is estimated."""

from smc_ebm.strategies._base import AbstractStrategy, StepInfo, WalkerState
from smc_ebm.strategies._cd import CD
from smc_ebm.strategies._dual import Dual, DualState
from smc_ebm.strategies._flowmc import FlowJarzynski, FlowMC, FlowState, FlowStrategy
from smc_ebm.strategies._score import ScoreMatching
from smc_ebm.strategies._walkers import PCD, Jarzynski, Unweighted, Walkers

__all__ = [
    "CD",
    "Dual",
    "DualState",
    "PCD",
    "AbstractStrategy",
    "FlowJarzynski",
    "FlowMC",
    "FlowState",
    "FlowStrategy",
    "Jarzynski",
    "ScoreMatching",
    "StepInfo",
    "Unweighted",
    "WalkerState",
    "Walkers",
]
