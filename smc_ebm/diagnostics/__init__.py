"""Diagnostics: ArviZ conversion, R-hat and ESS of independent chains, run summaries."""

from smc_ebm.diagnostics._arviz import arviz_major, group, group_names, make_tree, to_arviz
from smc_ebm.diagnostics._diagnose import Diagnosis, diagnose, summary_table
from smc_ebm.diagnostics._report import write_report
from smc_ebm.diagnostics._summary import FitSummary, summarize

__all__ = [
    "Diagnosis",
    "FitSummary",
    "arviz_major",
    "diagnose",
    "group",
    "group_names",
    "make_tree",
    "summarize",
    "summary_table",
    "to_arviz",
    "write_report",
]
