"""How late a CPU device may reach a collective before XLA's runtime ends the process.

Under a walker mesh every cross-device reduction holds each device until all have arrived.
On the CPU, XLA's runtime logs a warning when a device has waited 20 s at a collective and
ends the process (``Termination timeout for all reduce ... Exiting``) when the last one is
still missing 40 s later. A machine loaded by other work can stall one device thread that
long. This script makes device 0 reach a ``psum`` ``--late`` seconds after the other three
(a host callback that sleeps) and reports whether the call returned.

    export XLA_FLAGS=--xla_force_host_platform_device_count=4
    python benchmarks/late_device.py --late 45
    python benchmarks/late_device.py --late 75
    XLA_FLAGS="$XLA_FLAGS --xla_cpu_collective_call_terminate_timeout_seconds=300" \\
        python benchmarks/late_device.py --late 75

The second command ends with a fatal error (exit code 134), the first and third print the
sum. ``--xla_cpu_collective_call_terminate_timeout_seconds`` (with
``--xla_cpu_collective_call_warn_stuck_timeout_seconds`` for the warning) is XLA's setting,
read when JAX starts; the library does not change it.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback
from jax.sharding import Mesh, PartitionSpec


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--late", type=float, default=45.0, help="seconds device 0 arrives late")
    a = p.parse_args(argv)
    devices = jax.devices()
    if len(devices) < 2:
        raise SystemExit("needs several devices (--xla_force_host_platform_device_count=4)")
    mesh = Mesh(np.array(devices), ("d",))

    def sleep(x):
        time.sleep(a.late)
        return x

    def late_sum(x):
        x = jax.lax.cond(
            jax.lax.axis_index("d") == 0,
            lambda x: io_callback(sleep, jax.ShapeDtypeStruct(x.shape, x.dtype), x),
            lambda x: x,
            x,
        )
        return jax.lax.psum(x, "d")

    split, whole = PartitionSpec("d"), PartitionSpec()
    mapped = jax.shard_map(late_sum, mesh=mesh, in_specs=split, out_specs=whole, check_vma=False)
    f = jax.jit(mapped)
    t0 = time.perf_counter()
    out = jax.block_until_ready(f(jnp.arange(2.0 * len(devices))))
    seconds = time.perf_counter() - t0
    total = np.asarray(out)
    print(f"device 0 late by {a.late:g} s: the psum returned {total} after {seconds:.1f} s")
    return seconds


if __name__ == "__main__":
    main()
