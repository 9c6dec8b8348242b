"""Conjugate Bayesian linear regression: exact log evidence and posterior (shared by examples)."""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist


def blr_model(x, y, prior_scale=1.0, noise=0.5):
    w = numpyro.sample("w", dist.Normal(0.0, prior_scale).expand([x.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Normal(x @ w, noise).to_event(1), obs=y)


def blr_data(seed=0, n=30, d=5, prior_scale=1.0, noise=0.5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(scale=prior_scale, size=d)
    y = (x @ w + noise * rng.normal(size=n)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


def blr_exact(x, y, prior_scale=1.0, noise=0.5):
    """Exact log p(y), posterior mean and covariance (float64 numpy)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n, d = x.shape
    cov_y = noise**2 * np.eye(n) + prior_scale**2 * x @ x.T
    _, logdet = np.linalg.slogdet(cov_y)
    log_z = -0.5 * (n * np.log(2 * np.pi) + logdet + y @ np.linalg.solve(cov_y, y))
    prec = np.eye(d) / prior_scale**2 + x.T @ x / noise**2
    cov = np.linalg.inv(prec)
    return float(log_z), cov @ x.T @ y / noise**2, cov
