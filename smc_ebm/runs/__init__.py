"""Runs on disk: a TOML (or YAML) config in, a run directory out, and back.

A config names the dataset, the energy, the strategy, the optimizer, the number of steps and
the seed (see ``docs/diagnostics.md`` for every key)::

    name = "two_modes"
    seed = 0
    steps = 500
    # checkpoint_every = 50    # optional: default a tenth of the run; 0: only at the end

    [dataset]
    name = "two_mode_teacher"   # or "file" with path = "data.npy" (.npy, .npz, .csv)
    n = 2000
    dim = 2

    [energy]
    name = "GaussianMixture"    # or "MLP", "Gaussian"
    num_modes = 2
    scale = 0.1

    [strategy]
    name = "Jarzynski"          # or "PCD", "CD", "Unweighted"
    num_walkers = 1000
    step_size = 0.1
    resampling = { name = "ESSResampling", threshold = 0.5 }

    [optimizer]
    name = "sgd"                # any optax transformation, with its keyword arguments
    learning_rate = 0.05        # or per_field = { logits = { name = "sgd", ... }, ... }

    [diagnostics]               # optional: independent chains under the trained energy
    num_chains = 128
    num_steps = 1000

    [sample]                    # optional: generation with log Z and its error bar,
    num_walkers = 2000          # annealed from a Gaussian moment-matched to the data
    num_steps = 200

The run directory holds ``config.toml`` (the file as given), ``run.json`` (the resolved
config, the status, the summary, the diagnostics and sampling figures, the sha256 of every
other file), ``history.npz``, ``walkers.npz``, ``energy.eqx``
(``equinox.tree_serialise_leaves``), ``diagnostics.csv``, ``figures/*.png`` and
``checkpoint/`` (every ``checkpoint_every`` steps, default a tenth of the run; ``smc-ebm fit
--resume RUN_DIR`` continues from it). :func:`load_run` checks the checksums and gives the
energy and the history back.
"""

from smc_ebm.runs._config import (
    FORMAT_VERSION,
    build_dataset,
    build_energy,
    build_metrics,
    build_optimizer,
    build_strategy,
    read_config,
    validate_config,
)
from smc_ebm.runs._execute import fit_config
from smc_ebm.runs._store import Run, load_run

__all__ = [
    "FORMAT_VERSION",
    "Run",
    "build_dataset",
    "build_energy",
    "build_metrics",
    "build_optimizer",
    "build_strategy",
    "fit_config",
    "load_run",
    "read_config",
    "validate_config",
]
