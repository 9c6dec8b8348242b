"""Datasets: teachers with exact log-densities and toy sets."""

from smc_ebm.datasets._images import digits, mnist, read_idx
from smc_ebm.datasets._teacher import Dataset, two_mode_teacher

__all__ = ["Dataset", "digits", "mnist", "read_idx", "two_mode_teacher"]
