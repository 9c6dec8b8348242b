"""The compiled training chunk of ``fit``: a ``lax.scan`` of optimizer steps, cached.

One step (``one_step`` below) is the whole algorithm as ``fit`` sees it:

1. the gradient: the data term minus the strategy's model term (``strategy.gradient``);
2. the optimizer update, through the strategy's update rule when it has one (the feedback
   correction: :class:`~smc_ebm.strategies.FeedbackCorrection`);
3. the walkers follow the target to the new parameters (``strategy.step``, e.g. Algorithm 1
   in :func:`smc_ebm.smc.step`);
4. the finiteness checks that the strategy's :class:`~smc_ebm.strategies.StepInfo` lists.

``fit`` reads nothing of a strategy but these calls and their typed records.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from smc_ebm._live import poll_at
from smc_ebm.strategies import all_finite

# Incremented each time the chunk function is traced; tests use it to prove that the
# training loop compiles once.
TRACE_COUNT = {"chunk": 0}
# The check of the data's energy under the parameters a step starts from.
DATA_ENERGY = "energy of the data"


class Record(NamedTuple):
    """One record of the history (the parameters before the update of its step)."""

    ess: Any
    log_Z: Any
    cross_entropy: Any
    resampled: Any
    loss: Any
    acceptance: Any


def first_bad(checks: dict[str, Any]) -> Any:
    """``1 + index`` of the first false entry of ``checks`` (in order), or 0."""
    bad = ~jnp.stack([jnp.asarray(v, bool) for v in checks.values()])
    codes = jnp.arange(1, len(checks) + 1)
    return jnp.where(jnp.any(bad), codes[jnp.argmax(bad)], 0)


def build_chunk(
    strategy,
    optimizer,
    rule,
    static,
    metrics,
    batch_size,
    record_every,
    chunk_records,
    trace_walkers,
):
    """The jitted training chunk: ``chunk_records`` records of ``record_every`` steps.

    ``chunk(carry, first_step, start_step, data, key_run, end_step, poll_every)`` is one
    ``lax.scan`` of the steps from ``first_step``; steps before ``start_step`` (a resumed run
    whose first chunk starts before its first step, so that chunks and records stay aligned with
    the absolute step), at or after ``end_step`` and after a non-finite quantity are skipped.

    Every ``poll_every`` steps (0: never) the chunk calls the host (``smc_ebm._live.poll``): it
    reports the step to the live progress bar and learns whether a stop was asked for (Ctrl-C,
    SIGTERM). A stop skips the rest of the chunk and is carried as error code ``-1`` at the
    first step not taken, so the host keeps every step done. ``fit`` spaces the polls about
    ``smc_ebm._live.POLL_SECONDS`` apart, so they cost one host round trip per that time.

    Returns the chunk and the list that names its checks (filled when the chunk is traced).
    """
    check_names: list[str] = []

    @jax.jit
    def chunk(carry, first_step, start_step, data, key_run, end_step, poll_every):
        TRACE_COUNT["chunk"] += 1
        n_data = data.dtype, data.shape[0]

        def one_step(carry, step):
            params, opt_state, state, err, err_step = carry

            def do(_):
                energy_k = eqx.combine(params, static)
                kb, kg, ka = jax.random.split(jax.random.fold_in(key_run, step), 3)
                if batch_size is None:
                    batch = data
                else:
                    batch = data[jax.random.randint(kb, (batch_size,), 0, n_data[1])]
                # 1. D_k = mean_batch dU/dtheta - E_model[dU/dtheta]
                st, grad, loss, data_u, term = strategy.gradient(kg, state, energy_k, batch)
                # 2. theta_{k+1}: the optimizer, or the strategy's rule around it
                if rule is None:
                    updates, new_opt = optimizer.update(grad, opt_state, params)
                else:
                    kc, ka = jax.random.split(ka)
                    updates, new_opt, st = rule.update(
                        kc, optimizer, grad, opt_state, params, static, st, step
                    )
                new_params = optax.apply_updates(params, updates)
                # 3. the walkers follow the target from theta_k to theta_{k+1}
                st, info = strategy.step(ka, st, energy_k, eqx.combine(new_params, static), step)
                # 4. every quantity finite?
                checks = {
                    DATA_ENERGY: jnp.isfinite(data_u),
                    **info.finite,
                    "parameters": all_finite(new_params),
                }
                check_names[:] = list(checks)
                code = first_bad(checks)
                dt = n_data[0]
                rec = Record(
                    jnp.asarray(term.ess, dt),
                    jnp.asarray(term.log_Z, dt),
                    jnp.asarray(term.log_Z + data_u, dt),
                    jnp.asarray(info.resampled).astype(jnp.int32),
                    jnp.asarray(loss, dt),
                    jnp.asarray(info.acceptance, dt),
                )
                # A bad step's state is carried as it is (later steps are skipped) and the host
                # replays the chunk up to that step to recover the last finite state: keeping
                # the old state here would need a conditional that copies the walkers (n x d,
                # more than once) at every step.
                code = code.astype(jnp.int32)
                bad_step = jnp.where(code > 0, step.astype(jnp.int32), err_step)
                new_carry = (new_params, new_opt, st, code, bad_step)
                return new_carry, rec

            nan = jnp.asarray(jnp.nan, data.dtype)
            blank = Record(nan, nan, nan, jnp.asarray(0, jnp.int32), nan, nan)

            active = (err == 0) & (step >= start_step) & (step < end_step)
            stop = poll_at(step, poll_every, active)

            def skip(_):
                # A stop asked for at this step: it and the rest are not taken, carried as
                # error code -1 at this step (int32, as ``do``'s code, so types never change).
                code = jnp.where(stop, jnp.asarray(-1, jnp.int32), err)
                at = jnp.where(stop, step.astype(jnp.int32), err_step)
                return (params, opt_state, state, code, at), blank

            return jax.lax.cond(active & ~stop, do, skip, None)

        def one_record(carry, first_step):
            # Metrics only for records with a step to take (not for a chunk's padding).
            live = (carry[3] == 0) & (first_step + record_every > start_step)
            live = live & (first_step < end_step)
            mvals = tuple(
                jax.lax.cond(
                    live,
                    lambda p, f=f: jnp.asarray(f(eqx.combine(p, static)), data.dtype),
                    lambda p: jnp.asarray(jnp.nan, data.dtype),
                    carry[0],
                )
                for f in metrics.values()
            )
            traces = ()
            if trace_walkers:
                xw, aw = strategy.walkers(carry[2])
                traces = (xw[:trace_walkers], aw[:trace_walkers])
            steps = first_step + jnp.arange(record_every)
            carry, recs = jax.lax.scan(one_step, carry, steps)
            out = Record(
                recs.ess[0],
                recs.log_Z[0],
                recs.cross_entropy[0],
                jnp.sum(recs.resampled),
                recs.loss[0],
                recs.acceptance[0],
            )
            return carry, (out, mvals, traces)

        firsts = first_step + record_every * jnp.arange(chunk_records)
        return jax.lax.scan(one_record, carry, firsts)

    return chunk, check_names


# Compiled chunk functions, keyed by everything that shapes the traced program (strategy,
# optimizer, the energy's static structure, metrics, sizes). ``fit`` called again with the
# same objects reuses the compiled chunk instead of tracing it anew; the array arguments
# (data, key, parameters, state) may change freely between calls.
_CHUNK_CACHE: dict[Any, Any] = {}
_CHUNK_CACHE_SIZE = 16


def _cache_token(obj: Any) -> Any:
    """``obj`` when it is hashable, else its identity (the cache entry keeps it alive)."""
    try:
        hash(obj)
    except TypeError:
        return ("id", id(obj))
    return obj


def chunk_function(strategy, optimizer, rule, static, metrics, *sizes):
    """The cached :func:`build_chunk` for these arguments: ``(chunk, check_names)``.

    ``metrics`` is a tuple of ``(name, function)``; ``sizes`` are the remaining arguments of
    :func:`build_chunk`. The update rule is derived from the strategy and the optimizer, so the
    key records only whether there is one.
    """
    leaves, treedef = jax.tree.flatten(static)
    key = (
        _cache_token(strategy),
        _cache_token(optimizer),
        rule is not None,
        treedef,
        tuple(_cache_token(leaf) for leaf in leaves),
        tuple((name, _cache_token(f)) for name, f in metrics),
        *sizes,
    )
    try:
        entry = _CHUNK_CACHE.get(key)
    except TypeError:  # an unhashable piece of static structure: no caching
        key, entry = None, None
    if entry is not None:
        return entry[0]
    built = build_chunk(strategy, optimizer, rule, static, dict(metrics), *sizes)
    if key is not None:
        if len(_CHUNK_CACHE) >= _CHUNK_CACHE_SIZE:
            _CHUNK_CACHE.pop(next(iter(_CHUNK_CACHE)))
        # The objects are kept with the entry so that an ``id`` in the key is never reused.
        _CHUNK_CACHE[key] = (built, strategy, optimizer, static, metrics)
    return built
