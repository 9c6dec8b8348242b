"""Recipes of the examples: the pieces that several example scripts share, as a module.

The example scripts in ``examples/`` import these instead of sharing code through ``sys.path``.
"""

from smc_ebm.recipes._flows import flow_strategies, table, tilted_energy, train
from smc_ebm.recipes._output import output_dir, stop_if_interrupted, write_json
from smc_ebm.recipes._regression import blr_data, blr_exact, blr_model

__all__ = [
    "blr_data",
    "blr_exact",
    "blr_model",
    "flow_strategies",
    "output_dir",
    "stop_if_interrupted",
    "table",
    "tilted_energy",
    "train",
    "write_json",
]
