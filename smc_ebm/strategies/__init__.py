"""Training strategies: how the model term of the gradient is estimated.

Every strategy implements :class:`AbstractStrategy` (``init_state``, ``model_term``, ``step``);
:data:`REGISTRY` names each one for the command line, run files and the contract test.
"""

from smc_ebm.strategies._adapt import AdaptedState, AdaptedStep, with_step_adaptation
from smc_ebm.strategies._base import (
    AbstractStrategy,
    ModelTerm,
    StepInfo,
    WalkerState,
    all_finite,
    walker_checks,
)
from smc_ebm.strategies._cd import CD
from smc_ebm.strategies._dual import Dual, DualState
from smc_ebm.strategies._feedback import FeedbackCorrection
from smc_ebm.strategies._flow_moves import FlowMoves
from smc_ebm.strategies._flowmc import FlowJarzynski, FlowMC, FlowState, FlowStrategy
from smc_ebm.strategies._jarzynski import Jarzynski, move_batch
from smc_ebm.strategies._lazy import LazyTarget, LazyTargetState, with_lazy_target
from smc_ebm.strategies._options import (
    ObservedState,
    RefreshState,
    WithObservers,
    WithRefresh,
    with_observers,
    with_refresh,
)
from smc_ebm.strategies._persistent import PCD, PersistentWalkers, Unweighted, Walkers
from smc_ebm.strategies._registry import REGISTRY, build_strategy
from smc_ebm.strategies._score import ScoreMatching

__all__ = [
    "CD",
    "PCD",
    "REGISTRY",
    "AbstractStrategy",
    "AdaptedState",
    "AdaptedStep",
    "Dual",
    "DualState",
    "FeedbackCorrection",
    "FlowJarzynski",
    "FlowMC",
    "FlowMoves",
    "FlowState",
    "FlowStrategy",
    "Jarzynski",
    "LazyTarget",
    "LazyTargetState",
    "ModelTerm",
    "ObservedState",
    "PersistentWalkers",
    "RefreshState",
    "ScoreMatching",
    "StepInfo",
    "Unweighted",
    "WalkerState",
    "Walkers",
    "WithObservers",
    "WithRefresh",
    "all_finite",
    "build_strategy",
    "move_batch",
    "walker_checks",
    "with_lazy_target",
    "with_observers",
    "with_refresh",
    "with_step_adaptation",
]
