"""The SMC core: weight increments, ESS, resamplers and resampling schedules."""

from smc_ebm.smc._resampling import (
    RESAMPLERS,
    ESSResampling,
    IntervalResampling,
    NoResampling,
    ess_fraction,
    log_mean_exp,
    maybe_resample_indices,
    off_until,
    resample_indices,
)
from smc_ebm.smc._weights import ais_increment, frozen_increment, jarzynski_increment, row_sum

__all__ = [
    "RESAMPLERS",
    "ESSResampling",
    "IntervalResampling",
    "NoResampling",
    "ais_increment",
    "ess_fraction",
    "frozen_increment",
    "jarzynski_increment",
    "log_mean_exp",
    "maybe_resample_indices",
    "off_until",
    "resample_indices",
    "row_sum",
]
