"""Energies: equinox modules mapping ONE sample ``(d,)`` to a scalar energy."""

from smc_ebm.energies._adapter import DistributionEnergy, as_base, is_distribution
from smc_ebm.energies._base import (
    AbstractEnergy,
    energy_batch,
    has_log_partition,
    mean_energy,
    split_energy,
)
from smc_ebm.energies._conv import ConvEnergy, energy_l2_grad
from smc_ebm.energies._gaussian import Gaussian
from smc_ebm.energies._gmm import GaussianMixture
from smc_ebm.energies._mlp import MLP
from smc_ebm.energies._numpyro import NumPyroEnergy, check_trainable, from_numpyro
from smc_ebm.energies._shallow import ShallowReLU
from smc_ebm.energies._squared import SquaredNorm
from smc_ebm.energies._tilted import Tilted

__all__ = [
    "AbstractEnergy",
    "ConvEnergy",
    "DistributionEnergy",
    "Gaussian",
    "GaussianMixture",
    "MLP",
    "NumPyroEnergy",
    "ShallowReLU",
    "SquaredNorm",
    "Tilted",
    "as_base",
    "check_trainable",
    "energy_batch",
    "energy_l2_grad",
    "from_numpyro",
    "has_log_partition",
    "is_distribution",
    "mean_energy",
    "split_energy",
]
