"""Posterior SMC with evidence for NumPyro models, against exact answers and references.

1. Conjugate Bayesian linear regression (``--dim`` weights, known noise): exact log evidence,
   posterior mean and covariance. ``se.posterior`` (MALA, preconditioned, tuned step size)
   against ``blackjax.adaptive_tempered_smc`` (MALA at a fixed step size) with the same
   particles, target ESS and moves per stage, i.e. about the same number of evaluations.
2. Eight schools, non-centred and centred, against NumPyro's NUTS (4 chains x 2000 draws on
   the non-centred form): posterior means of ``mu``, ``tau`` and ``theta`` within 3 Monte Carlo
   standard errors, and the log evidence of the two forms (the same marginal model).

Default (a few minutes on 2 CPU cores)::

    python examples/numpyro_posterior.py --seeds 0 1 2 3

Writes ``posterior.json`` into ``--out`` (default ``outputs/numpyro_posterior``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from blackjax.smc.resampling import systematic
from numpyro.infer import MCMC, NUTS, Predictive
from tqdm.auto import tqdm

import smc_ebm as se
from smc_ebm.recipes import blr_data, blr_exact, blr_model, output_dir  # noqa: E402

Y8 = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
S8 = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def schools_noncentred(sigma, y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", 8):
        eta = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * eta)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def schools_centred(sigma, y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", 8):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def blackjax_atsmc(key, model, args, n, n_mcmc, step_size, target_ess):
    """blackjax.adaptive_tempered_smc on the same unconstrained space: log Z, evaluations."""
    energy = se.energies.from_numpyro(model, *args, trainable=False)
    k0, k1 = jax.random.split(key)
    draws = Predictive(energy.model(), num_samples=n, return_sites=list(energy.site_names))(
        k0, *args
    )
    z0 = energy.unconstrain(draws)
    smc = blackjax.adaptive_tempered_smc(
        lambda z: -energy.prior_energy(z),
        lambda z: energy.prior_energy(z) - energy(z),
        blackjax.mala.build_kernel(),
        blackjax.mala.init,
        {"step_size": jnp.array([step_size])},  # blackjax: shared parameters have a leading 1
        systematic,
        target_ess,
        num_mcmc_steps=n_mcmc,
    )

    @jax.jit
    def go(key, z0):
        def cond(c):
            return c[0].tempering_param < 1.0

        def body(c):
            state, log_z, j, key = c
            key, k = jax.random.split(key)
            state, info = smc.step(k, state)
            return state, log_z + info.log_likelihood_increment, j + 1, key

        return jax.lax.while_loop(cond, body, (smc.init(z0), jnp.zeros(()), 0, key))

    state, log_z, stages, _ = go(k1, z0)
    return float(log_z), int(stages), np.asarray(state.particles)


def blr(seeds, num_walkers, num_runs, dim, bj_step, progress=True, bj_moves=10):
    x, y = blr_data(0, n=30, d=dim)
    log_z, mean, cov = blr_exact(x, y)
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        res = se.posterior(
            blr_model,
            x,
            y,
            key=jax.random.key(seed),
            num_walkers=num_walkers,
            num_runs=num_runs,
            kernel="mala",
            num_mcmc_steps=10,
            progress=progress,
        )
        t_ours = time.perf_counter() - t0
        w = res.samples["w"].reshape(-1, dim)
        t0 = time.perf_counter()
        bj = [
            blackjax_atsmc(
                jax.random.key(10_000 * seed + r),
                blr_model,
                (x, y),
                num_walkers,
                bj_moves,
                bj_step,
                0.5,
            )
            for r in tqdm(range(num_runs), desc="blackjax runs", disable=not progress)
        ]
        t_bj = time.perf_counter() - t0
        bj_z = np.array([b[0] for b in bj])
        top = bj_z.max()
        zz = np.exp(bj_z - top)
        bj_log_z = float(top + np.log(zz.mean()))
        bj_se = float(zz.std(ddof=1) / (np.sqrt(num_runs) * zz.mean()))
        bj_w = np.concatenate([b[2] for b in bj])
        sd = np.sqrt(np.diag(cov))
        rows.append(
            {
                "seed": seed,
                "exact_log_Z": log_z,
                "ours_log_Z": res.log_evidence,
                "ours_se": res.log_evidence_se,
                "ours_err_in_se": (res.log_evidence - log_z) / res.log_evidence_se,
                "ours_time_s": t_ours,
                "ours_evals_per_particle": res.num_evaluations,
                "ours_stages": float(res.num_stages.mean()),
                "ours_max_mean_err_in_sd": float(np.max(np.abs(w.mean(0) - mean) / sd)),
                "ours_max_sd_ratio_err": float(np.max(np.abs(w.std(0) / sd - 1))),
                "bj_log_Z": bj_log_z,
                "bj_se": bj_se,
                "bj_err": bj_log_z - log_z,
                "bj_time_s": t_bj,
                "bj_stages": float(np.mean([b[1] for b in bj])),
                "bj_moves": bj_moves,
                "bj_evals_per_particle": 1 + float(np.mean([b[1] for b in bj])) * (bj_moves + 2),
                "bj_max_mean_err_in_sd": float(np.max(np.abs(bj_w.mean(0) - mean) / sd)),
                "bj_max_sd_ratio_err": float(np.max(np.abs(bj_w.std(0) / sd - 1))),
            }
        )
        print(json.dumps({k: round(v, 4) for k, v in rows[-1].items()}), flush=True)
    return rows


def schools(seed, num_walkers, num_runs, nuts_draws, progress=True):
    t0 = time.perf_counter()
    mcmc = MCMC(
        NUTS(schools_noncentred),
        num_warmup=1000,
        num_samples=nuts_draws,
        num_chains=4,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(seed), S8, Y8)
    t_nuts = time.perf_counter() - t0
    import arviz as az

    ref = az.summary(az.from_numpyro(mcmc), var_names=["mu", "tau", "theta"])
    out = {"nuts_time_s": t_nuts}
    for name, model in (("noncentred", schools_noncentred), ("centred", schools_centred)):
        t0 = time.perf_counter()
        res = se.posterior(
            model,
            S8,
            Y8,
            key=jax.random.key(seed),
            num_walkers=num_walkers,
            num_runs=num_runs,
            kernel="mala",
            num_mcmc_steps=20,
            progress=progress,
        )
        z_scores = {}
        for site in ("mu", "tau", "theta"):
            v = res.samples[site]  # (runs, particles, ...)
            run_means = v.mean(1)
            se_smc = run_means.std(0, ddof=1) / np.sqrt(num_runs)
            m = v.reshape((-1,) + v.shape[2:]).mean(0)
            rows = [site] if v.ndim == 2 else [f"{site}[{i}]" for i in range(v.shape[2])]
            ref_m = ref.loc[rows, "mean"].to_numpy()
            ref_se = ref.loc[rows, "mcse_mean"].to_numpy()
            z = (np.atleast_1d(m) - ref_m) / np.sqrt(ref_se**2 + np.atleast_1d(se_smc) ** 2)
            z_scores[site] = [round(float(t), 2) for t in z]
        out[name] = {
            "time_s": time.perf_counter() - t0,
            "log_Z": res.log_evidence,
            "log_Z_se": res.log_evidence_se,
            "stages": float(res.num_stages.mean()),
            "acceptance": float(res.acceptance.mean()),
            "z_vs_nuts": z_scores,
            "max_abs_z": max(abs(t) for zs in z_scores.values() for t in zs),
            "tau_mean": float(res.samples["tau"].mean()),
        }
        print(name, json.dumps(out[name]), flush=True)
    out["nuts_tau_mean"] = float(ref.loc["tau", "mean"])
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--num-walkers", type=int, default=1000)
    p.add_argument("--num-runs", type=int, default=8)
    p.add_argument("--dim", type=int, default=5)
    p.add_argument("--blackjax-step", type=float, default=0.01)
    p.add_argument(
        "--blackjax-moves",
        type=int,
        default=10,
        help="blackjax's MALA moves per stage (7 gives about se.posterior's evaluations)",
    )
    p.add_argument("--nuts-draws", type=int, default=2000)
    p.add_argument("--skip-schools", action="store_true")
    p.add_argument("--out", default="outputs/numpyro_posterior")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    a = p.parse_args(argv)
    result = {"args": vars(a)}
    progress = not a.no_progress
    result["blr"] = blr(
        a.seeds, a.num_walkers, a.num_runs, a.dim, a.blackjax_step, progress, a.blackjax_moves
    )
    if not a.skip_schools:
        n = 2 * a.num_walkers
        result["schools"] = schools(a.seeds[0], n, a.num_runs, a.nuts_draws, progress)
    out = Path(a.out)
    output_dir(out)
    (out / "posterior.json").write_text(json.dumps(result, indent=1, default=float))
    return result


if __name__ == "__main__":
    main()
