"""Walkers split over devices (``fit(..., devices=...)``) give the one-device run.

The check runs in a subprocess with four forced CPU devices
(``--xla_force_host_platform_device_count=4``), so that the rest of the suite keeps one. For
Jarzynski with ESS resampling (on 1, 2 and 4 devices), mini-batched Jarzynski, PCD, FlowMC and
Jarzynski with 4100 walkers, of which the feedback correction probes every fourth (on 1 and 4),
60 steps, and ``se.sample`` with whole runs or each run's walkers split (1 and
4 devices; with 2 runs over 4 devices the walkers are split): the walkers,
log-weights and parameters (log Z for ``sample``) agree to 1e-4 (the sums run in another
order across devices, float32 rounding ~1e-7 per step; a real error, such as a reduction over
one device's walkers only, is of order one), the resampling decisions are the same, and the
state's per-walker arrays are split over the devices. ``fit`` traces a split run under the
walker mesh, and the resamplers draw the one-device ancestors there; the weights, ESS and log Z
of split log-weights are the one-device values, with one crossing of the devices.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, jax, jax.numpy as jnp, numpy as np, optax, smc_ebm as se
    data = se.datasets.two_mode_teacher(jax.random.key(0), n=400, dim=3).samples
    energy = se.energies.GaussianMixture.init(jax.random.key(1), 2, 3, scale=0.1)
    flow = se.flows.make_flow(jax.random.key(3), 3)
    strategies = {
        "jarzynski": se.Jarzynski(64, 0.2, resampling=se.ESSResampling(0.9)),
        "minibatched": se.Jarzynski(64, 0.2, walker_batch=16),
        "pcd": se.PCD(64, 0.2),
        "flowmc": se.FlowMC(64, flow=flow),
        # the feedback correction probes every 4th walker (CORRECTION_PROBES = 1024), and each
        # device's 1025 walkers start at another place in the stride
        "probed": se.Jarzynski(4100, 0.2, resampling=se.ESSResampling(0.5)),
    }
    out = {}
    for name, st in strategies.items():
        runs = []
        for n in ((None, 2, 4) if name == "jarzynski" else (None, 4)):
            devices = None if n is None else jax.devices()[:n]
            r = se.fit(energy, data, strategy=st, optimizer=optax.sgd(0.05), num_steps=60,
                       key=jax.random.key(2), progress=False, chunk_size=20, devices=devices)
            lead = [x for x in jax.tree.leaves(r.state)
                    if isinstance(x, jax.Array) and x.ndim and x.shape[0] == st.num_walkers]
            runs.append(dict(
                walkers=np.asarray(r.walkers).tolist(),
                log_weights=np.asarray(r.log_weights).tolist(),
                params=[np.asarray(x).tolist() for x in jax.tree.leaves(r.energy)
                        if hasattr(x, "shape")],
                resampled=np.asarray(r.history["resampled"]).tolist(),
                n_devices=min(len(x.sharding.device_set) for x in lead),
            ))
        out[name] = runs
    gmm = se.energies.GaussianMixture.init(jax.random.key(4), 3, 3, scale=2.0)
    for name, runs_ in (("sample_by_run", 4), ("sample_by_walker", 2)):
        res = []
        for n in (None, 4):
            devices = None if n is None else jax.devices()[:n]
            r = se.sample(gmm, key=jax.random.key(5), num_walkers=256, num_steps=50,
                          num_runs=runs_, devices=devices)
            res.append(dict(walkers=r.samples.tolist(), log_weights=r.log_weights.tolist(),
                            params=[[r.log_Z]], resampled=r.num_resamplings.tolist(),
                            n_devices=n or 1))
        out[name] = res
    res = []
    for n in (None, 4):
        devices = None if n is None else jax.devices()[:n]
        d = se.diagnose(gmm, key=jax.random.key(6), num_chains=16, num_steps=40, devices=devices,
                        init=gmm.sample(jax.random.key(7), 16))
        x = d.idata.posterior["x"].values
        cols = d.table[["mean", "r_hat"]].values.tolist()
        res.append(dict(walkers=x.reshape(-1, 3).tolist(), log_weights=cols,
                        params=[[d.max_rhat]], resampled=[], n_devices=n or 1))
    out["diagnose"] = res

    seen = []
    class Probe(se.ESSResampling):  # records, at trace time, whether a walker mesh is set
        def should_resample(self, index, ess):
            seen.append(se.smc.walkers_split())
            return super().should_resample(index, ess)
    probe = []
    for n in (None, 4):
        seen.clear()
        se.fit(energy, data, strategy=se.Jarzynski(64, 0.2, resampling=Probe(0.9)),
               optimizer=optax.sgd(0.05), num_steps=4, key=jax.random.key(2), progress=False,
               devices=None if n is None else jax.devices()[:n])
        probe.append(list(seen))
    out["probe"] = probe
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    mesh = Mesh(np.array(jax.devices()), (se.smc.WALKER_AXIS,))
    by_walker = NamedSharding(mesh, PartitionSpec(se.smc.WALKER_AXIS))
    a = 3.0 * jax.random.normal(jax.random.key(8), (64,))
    anc = {}
    for method in se.smc.RESAMPLERS:
        draw = lambda k, a, method=method: se.smc.resample_indices(k, a, method)
        one = jax.jit(draw)(jax.random.key(9), a)
        with jax.set_mesh(mesh):
            split = jax.jit(draw)(jax.random.key(9), jax.device_put(a, by_walker))
        anc[method] = [one.tolist(), split.tolist(), split.sharding.is_equivalent_to(by_walker, 1)]
    out["ancestors"] = anc
    # the normalised weights, the ESS and log Z of split log-weights, a device's block of
    # walkers without weight included: one crossing of the devices
    a = a.at[:16].set(-jnp.inf)
    stats = jax.jit(lambda a: (se.smc.ess_fraction(a), se.smc.log_mean_exp(a),
                               se.smc.normalized_weights(a)))
    one = stats(a)
    with jax.set_mesh(mesh):
        a_split = jax.device_put(a, by_walker)
        split = stats(a_split)
        hlo = stats.lower(a_split).compile().as_text()
    out["weights"] = [[np.asarray(x).ravel().tolist() for x in r] for r in (one, split)]
    out["crossings"] = [hlo.count(" all-reduce("), hlo.count(" all-gather(")]
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def runs():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


@pytest.mark.parametrize(
    "name",
    [
        "jarzynski",
        "minibatched",
        "pcd",
        "flowmc",
        "probed",
        "sample_by_run",
        "sample_by_walker",
        "diagnose",
    ],
)
def test_walkers_split_over_devices_give_the_one_device_run(runs, name):
    """(For ``diagnose`` the chains are compared with the table's means and R-hats; its
    device count is the one asked for, not read back from the arrays.)"""
    import numpy as np

    one, *split = runs[name]
    assert one["n_devices"] == 1
    for n, run in zip((2, 4) if len(split) == 2 else (4,), split, strict=True):
        assert run["n_devices"] == n, (name, n, run["n_devices"])
        assert run["resampled"] == one["resampled"], name
        for key in ("walkers", "log_weights"):
            np.testing.assert_allclose(run[key], one[key], atol=1e-4, err_msg=f"{name} {key}")
        for a, b in zip(run["params"], one["params"], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-4, err_msg=f"{name} params")
    if name == "jarzynski":
        assert sum(one["resampled"]) > 0  # the comparison covers steps with resampling


def test_split_runs_trace_under_the_walker_mesh(runs):
    """``fit`` sets the mesh around a split run's compiled chunk (the resamplers read it), and
    only there."""
    one, split = runs["probe"]
    assert one and not any(one)
    assert split and all(split)


@pytest.mark.parametrize("method", ["systematic", "stratified", "multinomial", "residual"])
def test_resampling_under_the_walker_mesh_draws_the_one_device_ancestors(runs, method):
    """With the mesh set, the weights are gathered whole before the cumulative sum and the
    ancestors come back split over the walkers: the same ancestors as on one device."""
    one, split, is_split = runs["ancestors"][method]
    assert split == one
    assert len(set(one)) < len(one)  # a real resampling: some walkers copied
    assert is_split


def test_split_weights_cross_the_devices_once(runs):
    """``normalized_weights``, ``ess_fraction`` and ``log_mean_exp`` of log-weights split over
    four devices equal their one-device values (``jax.nn.softmax``, blackjax's ESS,
    ``jax.nn.logsumexp``), also when one device's walkers all have weight zero, and the
    compiled program crosses the devices once (one all-reduce, no gather)."""
    import numpy as np

    one, split = runs["weights"]
    for a, b in zip(split, one, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    assert np.sum(one[2][:16]) == 0.0 and 0.0 < one[0][0] < 1.0
    assert runs["crossings"] == [1, 0]


def test_walkers_that_do_not_divide_are_refused():
    import jax
    import optax

    import smc_ebm as se

    data = se.datasets.two_mode_teacher(jax.random.key(0), n=50, dim=2).samples
    energy = se.energies.GaussianMixture.init(jax.random.key(1), 2, 2, scale=0.1)
    with pytest.raises(ValueError, match="cannot be split evenly"):
        se.fit(
            energy,
            data,
            strategy=se.PCD(7, 0.1),
            optimizer=optax.sgd(0.1),
            num_steps=1,
            key=jax.random.key(2),
            progress=False,
            devices=[jax.devices()[0]] * 2,
        )
