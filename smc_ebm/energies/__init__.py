"""Energies: equinox modules mapping ONE sample ``(d,)`` to a scalar energy."""

from smc_ebm.energies._base import AbstractEnergy, energy_batch, has_log_partition, mean_energy
from smc_ebm.energies._conv import ConvEnergy, energy_l2_grad
from smc_ebm.energies._gaussian import Gaussian
from smc_ebm.energies._gmm import GaussianMixture
from smc_ebm.energies._mlp import MLP
from smc_ebm.energies._shallow import ShallowReLU
from smc_ebm.energies._tilted import Tilted

__all__ = [
    "AbstractEnergy",
    "ConvEnergy",
    "Gaussian",
    "GaussianMixture",
    "MLP",
    "ShallowReLU",
    "Tilted",
    "energy_batch",
    "energy_l2_grad",
    "has_log_partition",
    "mean_energy",
]
