"""Datasets: teachers with exact log-densities and toy sets."""

from smc_ebm.datasets._images import digits, mnist, read_idx
from smc_ebm.datasets._mixtures import (
    Mixture,
    Rings,
    eight_gaussians,
    four_gaussians,
    four_mode_mixture,
    mixture,
    rings,
    two_gaussians,
)
from smc_ebm.datasets._sphere import sphere_teacher
from smc_ebm.datasets._teacher import Dataset, two_mode_teacher

__all__ = [
    "Dataset",
    "Mixture",
    "Rings",
    "digits",
    "eight_gaussians",
    "four_gaussians",
    "four_mode_mixture",
    "mixture",
    "mnist",
    "read_idx",
    "rings",
    "sphere_teacher",
    "two_gaussians",
    "two_mode_teacher",
]
