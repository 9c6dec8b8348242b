"""Several processes under ``jax.distributed`` give the one-device run.

Two processes on this machine, each with two forced CPU devices, join one four-device mesh
through ``jax.distributed.initialize`` (a coordinator on localhost; CPU collectives over gloo),
as processes on several hosts would. Each runs the same calls with ``devices=jax.devices()``
and prints what it reads back; every process must read the whole result (walkers,
log-weights, parameters, history), and it must equal the one-device run in this process to
1e-4 (the sums run in another order across devices, float32 rounding about 1e-7 per step; a
real error, such as a reduction over one process's walkers only, is of order one), with the
same resampling decisions. With a checkpoint, only process 0 writes it.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

HEAD = textwrap.dedent(
    """
    import json, sys, jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    port, pid, parts, ckpt = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), sys.argv[4]
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    assert jax.process_count() == 2 and len(jax.devices()) == 4, jax.devices()
    """
)

TAIL = textwrap.dedent(
    """
    out = {}
    for name in parts:
        out[name] = READ[name](RUN[name](jax.devices(), ckpt if name == "jarzynski" else None))
    print("RESULT" + json.dumps(out))
    """
)

CASES_SOURCE = textwrap.dedent(
    """
    import jax, numpy as np, optax, smc_ebm as se
    data = se.datasets.two_mode_teacher(jax.random.key(0), n=400, dim=3).samples
    energy = se.energies.GaussianMixture.init(jax.random.key(1), 2, 3, scale=0.1)
    gmm = se.energies.GaussianMixture.init(jax.random.key(4), 3, 3, scale=2.0)

    def fit(strategy):
        def run(devices, ckpt):
            return se.fit(energy, data, strategy=strategy, optimizer=optax.sgd(0.05),
                          num_steps=60, key=jax.random.key(2), progress=False, chunk_size=20,
                          devices=devices, checkpoint=ckpt, checkpoint_every=20 if ckpt else None)
        return run

    def read_fit(r):
        return dict(walkers=np.asarray(r.walkers).tolist(),
                    log_weights=np.asarray(r.log_weights).tolist(),
                    params=[np.asarray(x).tolist() for x in jax.tree.leaves(r.energy)
                            if hasattr(x, "shape")],
                    resampled=np.asarray(r.history["resampled"]).tolist(),
                    log_Z=np.asarray(r.history["log_Z"]).tolist())

    def sample(devices, ckpt):
        return se.sample(gmm, key=jax.random.key(5), num_walkers=256, num_steps=50, num_runs=4,
                         devices=devices, progress=False)

    def read_sample(r):
        return dict(walkers=r.samples.tolist(), log_weights=r.log_weights.tolist(),
                    params=[[r.log_Z]], resampled=r.num_resamplings.tolist(), log_Z=[r.log_Z])

    def diagnose(devices, ckpt):
        return se.diagnose(gmm, key=jax.random.key(6), num_chains=16, num_steps=40,
                           devices=devices, init=gmm.sample(jax.random.key(7), 16),
                           progress=False)

    def read_diagnose(d):
        x = d.idata.posterior["x"].values
        return dict(walkers=x.reshape(-1, 3).tolist(),
                    log_weights=d.table[["mean", "r_hat"]].values.tolist(),
                    params=[[d.max_rhat]], resampled=[], log_Z=[])

    RUN = {"jarzynski": fit(se.Jarzynski(64, 0.2, resampling=se.ESSResampling(0.9))),
           "pcd": fit(se.PCD(64, 0.2)), "sample": sample, "diagnose": diagnose}
    READ = {"jarzynski": read_fit, "pcd": read_fit, "sample": read_sample,
            "diagnose": read_diagnose}
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(parts: list[str], ckpt: str, tmp_path) -> list[dict]:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    code = HEAD + CASES_SOURCE + TAIL
    port = str(_free_port())
    # Output to files, not pipes: a process blocked on a full pipe while the other waits for
    # it at a collective would hang both.
    logs = [(tmp_path / f"out{pid}.txt", tmp_path / f"err{pid}.txt") for pid in (0, 1)]
    procs = []
    for pid, (out, err) in enumerate(logs):
        with open(out, "w") as fo, open(err, "w") as fe:
            argv = [sys.executable, "-c", code, port, str(pid), ",".join(parts), ckpt]
            procs.append(subprocess.Popen(argv, env=env, stdout=fo, stderr=fe))
    results = []
    for p, (out, err) in zip(procs, logs, strict=True):
        p.wait(timeout=600)
        assert p.returncode == 0, err.read_text()[-3000:]
        line = [x for x in out.read_text().splitlines() if x.startswith("RESULT")][-1]
        results.append(json.loads(line[len("RESULT") :]))
    return results


def _check(parts: list[str], tmp_path) -> None:
    ckpt = tmp_path / "run"
    both = _two_processes(parts, str(ckpt), tmp_path)
    namespace: dict = {}
    exec(CASES_SOURCE, namespace)  # the one-device run, here
    for name in parts:
        one = namespace["READ"][name](namespace["RUN"][name](None, None))
        for pid, out in enumerate(both):
            run = out[name]
            assert run["resampled"] == one["resampled"], (name, pid)
            for key in ("walkers", "log_weights", "log_Z"):
                np.testing.assert_allclose(
                    run[key], one[key], atol=1e-4, err_msg=f"{name} {key}, process {pid}"
                )
            for a, b in zip(run["params"], one["params"], strict=True):
                np.testing.assert_allclose(a, b, atol=1e-4, err_msg=f"{name} params")
        if name == "jarzynski":
            assert sum(one["resampled"]) > 0  # steps with resampling are compared
            assert ckpt.exists()  # written (by process 0) at every 20 steps and at the end


def test_two_processes_train_jarzynski_like_one_device(tmp_path):
    _check(["jarzynski"], tmp_path)


@pytest.mark.slow  # about a minute: compiles PCD, sample and diagnose in three processes
def test_two_processes_run_pcd_sample_and_diagnose_like_one_device(tmp_path):
    _check(["pcd", "sample", "diagnose"], tmp_path)
