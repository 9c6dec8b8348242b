"""Reference runs for refactors: every strategy, ``sample`` and ``diagnose`` at small sizes.

Run it before and after a change that should not alter results, then compare:

    python benchmarks/reference_runs.py --out before.npz        # at the old commit
    python benchmarks/reference_runs.py --out after.npz         # at the new commit
    python benchmarks/reference_runs.py --compare before.npz after.npz

``--compare`` prints, per array, whether it is equal bit for bit, and otherwise the largest
absolute and relative difference. Each run is a few seconds on a 2-core CPU (about a minute in
all), from fixed keys, with the public API only, so that the file of an old commit can be
compared with a new one.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

import smc_ebm as se


def _flat(prefix: str, tree) -> dict[str, np.ndarray]:
    out = {}
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    for path, leaf in leaves:
        if hasattr(leaf, "shape") and jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact):
            out[prefix + jax.tree_util.keystr(path)] = np.asarray(leaf)
    return out


def _fit_record(name: str, res) -> dict[str, np.ndarray]:
    out = {
        f"{name}/walkers": np.asarray(res.walkers),
        f"{name}/log_weights": np.asarray(res.log_weights),
    }
    out.update(_flat(f"{name}/energy", res.energy))
    for k, v in res.history.items():
        out[f"{name}/history/{k}"] = np.asarray(v)
    out[f"{name}/log_Z"] = np.asarray(res.log_Z)
    return out


def _gmm_case(dim=5, n=2000):
    data = se.datasets.two_mode_teacher(jax.random.key(0), n=n, dim=dim)
    energy = se.energies.GaussianMixture.init(jax.random.key(1), num_modes=2, dim=dim, scale=0.1)
    return data, energy


def runs() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    data, energy = _gmm_case()
    opt = se.optim.by_field(logits=optax.sgd(0.125), means=optax.sgd(0.025))
    kl = {"kl": se.metrics.exact_kl(data.samples, data.log_prob)}
    strategies = {
        "jarzynski": se.Jarzynski(512, 0.1, resampling=se.ESSResampling(1 / 1.05)),
        "jarzynski_nocorr": se.Jarzynski(512, 0.1, feedback_correction=False),
        "jarzynski_mala": se.Jarzynski(256, 0.1, kernel="mala"),
        "jarzynski_batch": se.Jarzynski(512, 0.1, walker_batch=128),
        "jarzynski_batch_grad": se.Jarzynski(512, 0.1, walker_batch=128, walker_grad="batch"),
        "jarzynski_observers_reseed": se.Jarzynski(256, 0.1, num_observers=256, reseed_every=50),
        "jarzynski_refresh": se.Jarzynski(
            256, 0.1, refresh_every=40, refresh_steps=20, init="data", num_anneal=20
        ),
        "pcd": se.PCD(512, 0.1),
        "unweighted": se.Unweighted(512, 0.1),
        "cd": se.CD(num_walkers=256, num_steps=3, step_size=0.1),
    }
    for name, strategy in strategies.items():
        res = se.fit(
            energy,
            data.samples,
            strategy=strategy,
            optimizer=opt,
            num_steps=200,
            key=jax.random.key(2),
            progress=False,
            metrics=kl,
            record_every=10,
            batch_size=None if name != "pcd" else 256,
        )
        out.update(_fit_record(name, res))
    # Adam with the local correction, and a resume.
    res = se.fit(
        energy,
        data.samples,
        strategy=se.Jarzynski(256, 0.1, feedback_correction="local"),
        optimizer=optax.adam(1e-2),
        num_steps=100,
        key=jax.random.key(3),
        progress=False,
    )
    out.update(_fit_record("jarzynski_adam_local", res))
    res2 = se.fit(
        energy,
        data.samples,
        strategy=res.strategy,
        optimizer=optax.adam(1e-2),
        num_steps=50,
        key=jax.random.key(3),
        progress=False,
        resume=res,
    )
    out.update(_fit_record("jarzynski_adam_resumed", res2))

    # Score matching on the same mixture.
    sm = se.ScoreMatching("sliced")
    res = se.fit(
        energy,
        data.samples,
        strategy=sm,
        optimizer=optax.adam(1e-2),
        num_steps=100,
        key=jax.random.key(4),
        progress=False,
    )
    out.update(_fit_record("score_matching", res))

    # Flows: FlowMC and flow-Jarzynski on a tilted 2-d energy.
    small = dict(num_proposals=16, num_global=1, num_local=2, flow_layers=2, flow_width=16)
    data2 = se.datasets.two_mode_teacher(jax.random.key(5), n=1000, dim=2)
    e2 = se.energies.GaussianMixture.init(jax.random.key(6), num_modes=2, dim=2, scale=0.5)
    for name, strategy in {
        "flowmc": se.FlowMC(128, step_size=0.05, **small),
        "flow_jarzynski": se.FlowJarzynski(128, step_size=0.05, **small),
    }.items():
        res = se.fit(
            e2,
            data2.samples,
            strategy=strategy,
            optimizer=optax.sgd(0.05),
            num_steps=60,
            key=jax.random.key(7),
            progress=False,
        )
        out.update(_fit_record(name, res))
        out.update(_flat(f"{name}/flow", res.flow))

    # Dual on the sphere.
    sd = se.datasets.sphere_teacher(jax.random.key(0), 1000, 5, angle=1.37)
    shallow = se.energies.ShallowReLU(5, 8, key=jax.random.key(1), beta=10.0)
    dual = se.Dual(200, step_size=0.02, alpha=20.0, restart_prob=0.1)
    res = se.fit(
        shallow,
        sd.samples,
        strategy=dual,
        optimizer=dual.optimizer(shallow),
        num_steps=60,
        key=jax.random.key(2),
        progress=False,
    )
    out.update(_fit_record("dual", res))

    # sample and diagnose.
    s = se.sample(energy, key=jax.random.key(8), num_walkers=512, num_steps=50, step_size=0.1)
    out["sample/samples"] = np.asarray(s.samples)
    out["sample/log_weights"] = np.asarray(s.log_weights)
    out["sample/log_Z"] = np.asarray(s.log_Z)
    s = se.sample(
        energy, key=jax.random.key(8), num_walkers=256, num_steps=30, step_size=0.1, kernel="mala"
    )
    out["sample_mala/samples"] = np.asarray(s.samples)
    d = se.diagnose(
        energy,
        key=jax.random.key(9),
        num_chains=8,
        num_steps=100,
        step_size=0.05,
        init=np.asarray(data.samples[:8]),
    )
    out["diagnose/x"] = np.asarray(d.idata.posterior["x"].values)
    out["diagnose/max_rhat"] = np.asarray(d.max_rhat)
    return out


def compare(a_path: str, b_path: str) -> int:
    a, b = np.load(a_path), np.load(b_path)
    worst = 0
    for k in sorted(set(a) | set(b)):
        if k not in a or k not in b:
            print(f"{k}: only in {'after' if k in b else 'before'}")
            worst = max(worst, 2)
            continue
        x, y = a[k], b[k]
        if x.shape != y.shape:
            print(f"{k}: shape {x.shape} vs {y.shape}")
            worst = 2
        elif np.array_equal(x, y, equal_nan=True):
            continue
        else:
            d = np.nanmax(np.abs(x.astype(np.float64) - y))
            r = d / max(np.nanmax(np.abs(x.astype(np.float64))), 1e-30)
            print(f"{k}: max |diff| {d:.3g} (relative {r:.3g})")
            worst = max(worst, 1)
    print("all arrays equal" if worst == 0 else "differences above")
    return worst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="reference_runs.npz")
    p.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = p.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = runs()
    np.savez(args.out, **out)
    print(f"wrote {len(out)} arrays to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
