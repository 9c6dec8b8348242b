"""Walkers across devices: a one-axis ``jax.sharding.Mesh`` over the walker axis.

``fit(..., devices=jax.devices())`` places every array of the strategy's state whose leading
axis is the walker axis with ``NamedSharding(mesh, P("walkers"))`` and everything else (the
parameters, the optimizer state, the key) replicated. The data are split over the devices
along their first axis when it divides evenly (and the data term is a full-batch mean), else
replicated. The compiled chunk is then partitioned by XLA (GSPMD): per-walker moves run where
their walkers live, and the weighted means, the ESS, log Z and the resampling's cumulative sum
become cross-device reductions (the normalised weights, the ESS and log Z in one crossing,
:func:`smc_ebm.smc.normalized_weights`). Resampling is global (the same ancestors as on one
device), so results equal the one-device run up to the order of floating-point sums.

Under ``jax.distributed.initialize()`` the same code spans hosts: pass ``jax.devices()``
(all processes' devices) on every process. Arrays are then built from each process's own
shards (:func:`put_global`), and what leaves the compiled calls is gathered to every process
(:func:`fetch`), so results are plain arrays that every process can read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from smc_ebm.smc import WALKER_AXIS


def _mesh(devices: Sequence[Any]) -> Mesh:
    devices = list(devices)
    if not devices:
        raise ValueError("devices must hold at least one device.")
    return Mesh(np.array(devices), (WALKER_AXIS,))


def walker_mesh(devices: Sequence[Any], num_walkers: int) -> Mesh:
    """A one-axis mesh named ``"walkers"`` over ``devices``; ``num_walkers`` must divide."""
    mesh = _mesh(devices)
    if num_walkers % mesh.devices.size:
        raise ValueError(
            f"the {num_walkers} walkers cannot be split evenly over {mesh.devices.size} devices: "
            "choose a number of walkers that is a multiple of the number of devices."
        )
    return mesh


def on_mesh(mesh: Mesh | None) -> contextlib.AbstractContextManager:
    """``jax.set_mesh(mesh)`` around the compiled calls of a run split over ``mesh``.

    With the mesh set, the resamplers keep their cumulative sum off the split walker axis
    (:func:`smc_ebm.smc.resample_indices`). Without ``jax.set_mesh`` (jax < 0.7) the results
    are the same, and a resampling step costs more at large populations.
    """
    if mesh is None or not hasattr(jax, "set_mesh"):
        return contextlib.nullcontext()
    return jax.set_mesh(mesh)


def place(tree: Any, mesh: Mesh, n: int | None) -> Any:
    """``tree`` on the mesh: arrays with leading axis ``n`` split, the rest replicated.

    ``n=None`` replicates everything.
    """
    split = NamedSharding(mesh, PartitionSpec(WALKER_AXIS))
    whole = NamedSharding(mesh, PartitionSpec())

    def put(x):
        if not isinstance(x, jax.Array | np.ndarray):
            return x
        lead = n is not None and x.ndim >= 1 and x.shape[0] == n
        return put_global(x, split if lead else whole)

    return jax.tree.map(put, tree)


def put_global(x: Any, sharding: NamedSharding) -> jax.Array:
    """``x`` with ``sharding``, also when the mesh spans several processes.

    ``jax.device_put`` accepts only shardings whose devices this process can address. Under
    ``jax.distributed`` every process holds the same value (the same data, and starts drawn
    from the same key), so each builds its own shards of the global array from it.
    """
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):  # typed keys: via their data
        data = put_global(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.jit(lambda a: a, out_shardings=sharding)(x)  # already global: reshard
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def place_data(data: Any, mesh: Mesh, minibatched: bool) -> Any:
    """The data on the mesh: split along their first axis, or replicated.

    Split when the first axis divides evenly and every step uses the whole data set;
    replicated otherwise (a minibatch would gather rows from every device).
    """
    n_dev = mesh.devices.size
    n = data.shape[0] if (not minibatched and data.shape[0] % n_dev == 0) else None
    return place(data, mesh, n)


def place_populations(x0: Any, keys: Any, devices: Sequence[Any]) -> tuple[Any, Any, Mesh | None]:
    """``sample``'s starts ``(runs, m, d)`` and run keys on a mesh over ``devices``.

    Whole runs go to each device when their number divides evenly (no communication: each
    run resamples on its own device); otherwise each run's walkers are split, and its
    resampling is a cross-device operation. The third value is the mesh when the walkers are
    split (to set around the compiled call, :func:`on_mesh`), else ``None``.
    """
    mesh = _mesh(devices)
    n_dev = mesh.devices.size
    runs, m = x0.shape[0], x0.shape[1]
    if runs % n_dev == 0:
        by_run = NamedSharding(mesh, PartitionSpec(WALKER_AXIS))
        return put_global(x0, by_run), put_global(keys, by_run), None
    if m % n_dev == 0:
        by_walker = NamedSharding(mesh, PartitionSpec(None, WALKER_AXIS))
        whole = NamedSharding(mesh, PartitionSpec())
        return put_global(x0, by_walker), put_global(keys, whole), mesh
    raise ValueError(
        f"neither the {runs} runs nor their {m} walkers each can be split evenly over "
        f"{n_dev} devices."
    )


def fetch(tree: Any) -> Any:
    """``tree`` with every array that spans several processes gathered to this process.

    Under ``jax.distributed`` an array split over the devices of several processes cannot be
    read by any one of them; ``multihost_utils.process_allgather`` (called by every process,
    as every process runs the same code) gives each the whole value. Arrays that one process
    can address are returned as they are, so one-process runs are unchanged.
    """
    from jax.experimental import multihost_utils

    def get(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = get(jax.random.key_data(x))
            return jax.random.wrap_key_data(jax.numpy.asarray(data), impl=jax.random.key_impl(x))
        return jax.numpy.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(get, tree)
