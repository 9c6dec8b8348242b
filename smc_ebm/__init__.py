"""smc_ebm: maximum-likelihood training of energy-based models as SMC over a moving target.

The public names live here; everything else is private.
"""

from smc_ebm import datasets, energies, kernels, manifolds, metrics, optim, smc, strategies
from smc_ebm._fit import FitResult, TrainingError, fit
from smc_ebm.smc import ESSResampling, IntervalResampling, NoResampling, off_until
from smc_ebm.strategies import CD, PCD, Dual, Jarzynski, ScoreMatching, Unweighted

__version__ = "0.1.0"

__all__ = [
    "CD",
    "Dual",
    "PCD",
    "ESSResampling",
    "FitResult",
    "IntervalResampling",
    "Jarzynski",
    "NoResampling",
    "ScoreMatching",
    "TrainingError",
    "Unweighted",
    "datasets",
    "energies",
    "fit",
    "kernels",
    "manifolds",
    "metrics",
    "off_until",
    "optim",
    "smc",
    "strategies",
]
