"""Datasets: teachers with exact log-densities and toy sets."""

from smc_ebm.datasets._sphere import sphere_teacher
from smc_ebm.datasets._teacher import Dataset, two_mode_teacher

__all__ = ["Dataset", "sphere_teacher", "two_mode_teacher"]
