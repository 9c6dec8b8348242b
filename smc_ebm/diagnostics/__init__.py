"""Diagnostics: ArviZ conversion, R-hat and ESS of independent chains, run summaries.

The ``device_*`` statistics compute ArviZ's R-hat, ESS and MCSE in ``jax.numpy`` under ``jit``.
"""

from smc_ebm.diagnostics._arviz import arviz_major, group, group_names, make_tree, sites_dataset
from smc_ebm.diagnostics._device import ess_bulk as device_ess_bulk
from smc_ebm.diagnostics._device import ess_tail as device_ess_tail
from smc_ebm.diagnostics._device import mcse_mean as device_mcse_mean
from smc_ebm.diagnostics._device import mcse_sd as device_mcse_sd
from smc_ebm.diagnostics._device import rhat as device_rhat
from smc_ebm.diagnostics._device import summary_stats as device_summary_stats
from smc_ebm.diagnostics._diagnose import Diagnosis, diagnose, summary_table
from smc_ebm.diagnostics._report import write_report
from smc_ebm.diagnostics._summary import FitSummary, summarize
from smc_ebm.diagnostics._to_arviz import strategy_name, to_arviz

__all__ = [
    "Diagnosis",
    "FitSummary",
    "arviz_major",
    "device_ess_bulk",
    "device_ess_tail",
    "device_mcse_mean",
    "device_mcse_sd",
    "device_rhat",
    "device_summary_stats",
    "diagnose",
    "group",
    "group_names",
    "make_tree",
    "sites_dataset",
    "strategy_name",
    "summarize",
    "summary_table",
    "to_arviz",
    "write_report",
]
