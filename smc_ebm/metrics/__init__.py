"""Metrics of a trained energy, usable as ``fit(..., metrics=...)``.

Each metric is a function of the energy (or a factory returning one) that runs inside
the compiled training loop and returns a scalar.
"""

from smc_ebm.metrics._class_mass import ClassMasses, class_masses
from smc_ebm.metrics._images import (
    DigitClassifier,
    class_proportions,
    digit_classifier,
    effective_sample_size,
    proportion_errors,
)
from smc_ebm.metrics._modes import (
    grid_2d,
    langevin_chains,
    log_density_error,
    mode_weights_grid,
    mode_weights_samples,
    rhat,
)
from smc_ebm.metrics._sphere import kl_estimate, score_error
from smc_ebm.metrics._teacher import exact_kl, mode_weight

__all__ = [
    "ClassMasses",
    "DigitClassifier",
    "class_masses",
    "class_proportions",
    "digit_classifier",
    "effective_sample_size",
    "exact_kl",
    "grid_2d",
    "kl_estimate",
    "langevin_chains",
    "log_density_error",
    "mode_weight",
    "mode_weights_grid",
    "mode_weights_samples",
    "proportion_errors",
    "rhat",
    "score_error",
]
