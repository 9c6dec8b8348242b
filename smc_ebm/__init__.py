"""smc_ebm: maximum-likelihood training of energy-based models as SMC over a moving target.

The public names live here; everything else is private.
"""

from smc_ebm import (
    datasets,
    diagnostics,
    energies,
    flows,
    kernels,
    manifolds,
    metrics,
    optim,
    plots,
    runs,
    smc,
    strategies,
)
from smc_ebm._fit import FitResult, TrainingError, fit
from smc_ebm._posterior import PosteriorResult, posterior
from smc_ebm._sample import SampleResult, sample
from smc_ebm.diagnostics import diagnose
from smc_ebm.runs import load_run
from smc_ebm.smc import ESSResampling, IntervalResampling, NoResampling, off_until
from smc_ebm.strategies import (
    CD,
    PCD,
    Dual,
    FlowJarzynski,
    FlowMC,
    Jarzynski,
    ScoreMatching,
    Unweighted,
)

__version__ = "0.1.0"

__all__ = [
    "CD",
    "Dual",
    "PCD",
    "ESSResampling",
    "FitResult",
    "FlowJarzynski",
    "FlowMC",
    "IntervalResampling",
    "Jarzynski",
    "NoResampling",
    "PosteriorResult",
    "SampleResult",
    "ScoreMatching",
    "TrainingError",
    "Unweighted",
    "datasets",
    "diagnose",
    "diagnostics",
    "energies",
    "fit",
    "flows",
    "kernels",
    "load_run",
    "manifolds",
    "metrics",
    "off_until",
    "optim",
    "plots",
    "posterior",
    "runs",
    "sample",
    "smc",
    "strategies",
]
