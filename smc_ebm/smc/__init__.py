"""The SMC core: Algorithm 1's step, weight increments, ESS, resamplers and schedules."""

from smc_ebm.smc._increments import ais, default_increment, jarzynski
from smc_ebm.smc._resampling import (
    RESAMPLERS,
    WALKER_AXIS,
    ESSResampling,
    IntervalResampling,
    NoResampling,
    ess_fraction,
    log_mean_exp,
    maybe_resample_indices,
    off_until,
    resample_indices,
    walkers_split,
)
from smc_ebm.smc._step import (
    Interpolated,
    Population,
    SMCInfo,
    anneal,
    gather_rows,
    resample,
    step,
)
from smc_ebm.smc._weights import ais_increment, frozen_increment, jarzynski_increment, row_sum

__all__ = [
    "RESAMPLERS",
    "WALKER_AXIS",
    "ESSResampling",
    "Interpolated",
    "IntervalResampling",
    "NoResampling",
    "Population",
    "SMCInfo",
    "ais",
    "ais_increment",
    "anneal",
    "default_increment",
    "ess_fraction",
    "frozen_increment",
    "gather_rows",
    "jarzynski",
    "jarzynski_increment",
    "log_mean_exp",
    "maybe_resample_indices",
    "off_until",
    "resample",
    "resample_indices",
    "row_sum",
    "step",
    "walkers_split",
]
