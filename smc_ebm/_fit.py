"""``fit``: the whole training loop as a jitted ``lax.scan`` over chunks of steps."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, PRNGKeyArray

from smc_ebm._checkpoint import (
    Start,
    check_result,
    run_manifest,
    same_key,
    state_like,
)
from smc_ebm._checkpoint import (
    load as load_checkpoint,
)
from smc_ebm._checkpoint import (
    save as save_checkpoint,
)
from smc_ebm._host import (
    FrozenWatch,
    check_counts,
    chunk_steps,
    chunk_warnings,
    history_of,
    join_history,
    join_traces,
    last_finite,
    step_back,
    validate_data,
)
from smc_ebm._live import STOP, Progress, poll_every, running, step_seconds, stop_asked, wait
from smc_ebm._loop import DATA_ENERGY, TRACE_COUNT, Record, chunk_function
from smc_ebm._result import FitResult, TrainingError, make_result
from smc_ebm._sharding import fetch, on_mesh, place, place_data, walker_mesh
from smc_ebm.energies import check_trainable, has_log_partition
from smc_ebm.kernels import split_energy
from smc_ebm.strategies import AbstractStrategy

__all__ = ["TRACE_COUNT", "FitResult", "TrainingError", "fit"]


def fit(
    energy: eqx.Module,
    data: Any,
    *,
    strategy: AbstractStrategy,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    key: PRNGKeyArray,
    batch_size: int | None = None,
    log_Z0: float | None = None,
    metrics: Mapping[str, Callable[[Any], Array]] | None = None,
    record_every: int = 1,
    progress: bool = True,
    chunk_size: int = 500,
    resume: FitResult | str | os.PathLike | None = None,
    trace_walkers: int = 0,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    devices: Sequence[Any] | None = None,
) -> FitResult:
    r"""Train an energy by maximum likelihood (minimise the cross-entropy).

    Each step ``k``: ``D_k = mean_batch dU_k/dtheta - E_model[dU_k/dtheta]`` (the model term
    from ``strategy``), ``theta_{k+1} = optimizer(theta_k, D_k)``, then the strategy's
    walkers follow the target from ``theta_k`` to ``theta_{k+1}``. The loop is a jitted
    ``lax.scan`` over chunks of ``chunk_size`` steps, compiled once. Inside a chunk, the only
    contact with the host is a poll about every 0.5 s (an ``io_callback``): it moves the live
    progress bar and lets Ctrl-C or SIGTERM stop the run at that step, keeping every step
    done (a second Ctrl-C gives up the chunk in flight). The bar shows the ESS, log Z and
    cross-entropy after each chunk, for the strategies that have them.

    Args:
        energy: an equinox module mapping ``(dim,) -> ()``; its inexact arrays are trained.
        data: ``(n, dim)`` training samples.
        strategy: e.g. :func:`Jarzynski`, :func:`PCD`, :class:`CD`, :func:`Unweighted`.
        optimizer: an optax transformation (its updates are *added* to the parameters, so
            use ``optax.sgd``/``adam`` as usual: the gradient handed over is ``dH/dtheta``).
        num_steps: optimizer steps.
        key: PRNG key.
        batch_size: data minibatch per step (``None``: all the data every step).
        log_Z0: log Z of the initial energy; default ``energy.log_partition()`` when known,
            else the annealing estimate (``init="model"``), else 0 (then ``log_Z`` is
            ``log Z_k / Z_0``).
        metrics: name -> jittable function of the energy returning a scalar, evaluated
            every ``record_every`` steps inside the compiled loop (e.g. the exact KL).
        record_every: record the history every this many steps.
        progress: show a live tqdm progress bar.
        chunk_size: steps per compiled chunk (rounded to a multiple of ``record_every``).
        resume: continue from a previous :class:`FitResult` or from a checkpoint directory
            (``checkpoint=`` of an earlier call), with the same energy (its structure),
            strategy, optimizer and data dimension (else ``ValueError`` naming the difference).
            Step ``k`` draws its random numbers from ``(key, k)`` alone, so with the same
            ``key`` the resumed run equals the uninterrupted one bitwise; its history holds
            the earlier records then the new ones.
        checkpoint: a directory where the state (parameters, optimizer and strategy states,
            history, key, step) is written at the end and every ``checkpoint_every`` steps,
            atomically, with a manifest of checksums; ``fit(..., resume=checkpoint)`` continues.
        checkpoint_every: steps between checkpoints (a multiple of ``record_every``; chunks
            are shortened to end at every checkpoint).
        trace_walkers: record the positions ``(T, M, d)`` and log-weights ``(T, M)`` of the
            first ``M = trace_walkers`` walker slots at every record, in ``result.traces``
            (for trace and rank plots through ``result.to_arviz()``). A slot is a walker
            until it is resampled, after which it holds a copy of its ancestor.
        devices: split the walkers (and the data, when they divide evenly) over these
            devices, e.g. ``jax.devices()``; the parameters are replicated and resampling
            stays global, so results equal the one-device run up to the order of sums
            (``smc_ebm._sharding``). The number of walkers must be a multiple of the number
            of devices. Under ``jax.distributed``, pass all processes' devices from every
            process; the result is gathered to each (docs/quickstart.md). Default: one
            device.

    Returns:
        A :class:`FitResult`.

    Raises:
        ValueError: bad data, shapes or hyperparameters.
        TrainingError: a non-finite energy, gradient, weight or parameter appeared; the
            error holds the last finite state.

    Example:
        >>> import jax, optax, smc_ebm as se
        >>> data = se.datasets.two_mode_teacher(jax.random.key(0), n=1000, dim=2)
        >>> energy = se.energies.GaussianMixture.init(jax.random.key(1), 2, 2, scale=0.1)
        >>> res = se.fit(energy, data.samples, strategy=se.Jarzynski(500, 0.1),
        ...              optimizer=optax.sgd(0.05), num_steps=100, key=jax.random.key(2),
        ...              progress=False)
    """
    start_time = time.perf_counter()
    check_counts(
        num_steps=num_steps,
        record_every=record_every,
        chunk_size=chunk_size,
        batch_size=batch_size,
        trace_walkers=trace_walkers,
        checkpoint_every=checkpoint_every,
    )
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0; got {num_steps}.")
    if record_every < 1:
        raise ValueError(f"record_every must be >= 1; got {record_every}.")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    if checkpoint_every is not None and (checkpoint is None or checkpoint_every < 1):
        raise ValueError("checkpoint_every must be >= 1 and needs checkpoint=PATH.")
    data = validate_data(data, energy)
    n_data, dim = data.shape
    if trace_walkers < 0:
        raise ValueError(f"trace_walkers must be >= 0; got {trace_walkers}.")
    strategy.validate(dim, n_data)
    metrics = dict(metrics or {})
    key_init, key_run = jax.random.split(key)
    params, static = split_energy(energy)
    check_trainable(energy)  # a NumPyro model without param sites: named
    if not jax.tree.leaves(params):
        raise ValueError("the energy has no trainable (floating-point) array: nothing to fit.")
    opt_like = jax.eval_shape(optimizer.init, params)
    manifest = run_manifest(strategy, optimizer, opt_like, params, dim)
    if resume is None:
        if log_Z0 is None and has_log_partition(energy):
            log_Z0 = float(energy.log_partition())
        state = strategy.init_state(key_init, energy, data, log_Z0)
        start = Start(params, optimizer.init(params), state, 0, {}, None, key)
    elif isinstance(resume, FitResult):
        check_result(resume, params, strategy, opt_like, dim)
        old = split_energy(resume.energy)[0]
        hist, traces = resume.history, resume.traces
        start = Start(old, resume.opt_state, resume.state, resume.steps, hist, traces, resume.key)
    else:
        like = state_like(strategy, key_init, energy, data, log_Z0)
        start = load_checkpoint(resume, manifest, params, opt_like, like)
    if start.key is not None and not same_key(start.key, key):
        warnings.warn(
            "resumed with another key than the run's: the steps from here draw other random "
            "numbers than the uninterrupted run would.",
            stacklevel=2,
        )

    num_walkers = int(strategy.walkers(start.state)[0].shape[0])
    mesh = None
    if devices is not None:
        mesh = walker_mesh(devices, num_walkers)
        placed = (place(start.params, mesh, None), place(start.opt_state, mesh, None))
        start = start._replace(
            params=placed[0], opt_state=placed[1], state=place(start.state, mesh, num_walkers)
        )
        data = place_data(data, mesh, batch_size is not None)
        key_run = place(key_run, mesh, None)
    step0 = start.step
    steps_per_chunk = chunk_steps(chunk_size, record_every, checkpoint_every)
    end_step = step0 + num_steps
    rule = strategy.update_rule()
    if rule is not None:
        rule = rule.prepare(optimizer, start.opt_state, start.params)
    chunk, check_names = chunk_function(
        strategy,
        optimizer,
        rule,
        static,
        tuple(metrics.items()),
        batch_size,
        record_every,
        steps_per_chunk // record_every,
        trace_walkers,
    )
    names = (*Record._fields, *metrics)
    if trace_walkers:
        names = (*names, "_trace_position", "_trace_log_weights")
    chunks_out: list[tuple] = []
    chunk_seconds: list[float] = []
    # The error code and step are int32 in every branch of the chunk (the carry's types never
    # change, so the chunk compiles once).
    zero = jnp.asarray(0, jnp.int32)
    carry = (start.params, start.opt_state, start.state, zero, zero)
    end, start_arr = jnp.asarray(end_step), jnp.asarray(step0)
    # Chunks (and so records and checkpoints) are aligned with the absolute step: a resumed
    # run's first chunk starts before its first step and skips the steps before it.
    first0 = step0 - step0 % steps_per_chunk
    lo = step0 - step0 % record_every
    bar = Progress(num_steps, step0) if progress else None
    interrupted = False
    step, first, err, pending = step0, first0, 0, None
    prev, stepped_back = None, False
    every = jnp.asarray(poll_every(step_seconds(chunk)))
    warned: set[str] = set()
    watch = FrozenWatch(strategy, start.state, step0)

    def assemble(carry, done, err_step=None):
        last = err_step if err_step is not None else done
        new = history_of(chunks_out, names, first0, record_every, lo, last)
        partial = step0 % record_every != 0  # resumed between two records
        tr = join_traces(start.traces, new, trace_walkers, partial) if trace_walkers else None
        hist = join_history(start.history, new, partial)
        return Start(carry[0], carry[1], carry[2], done, hist, tr, key), hist, tr

    def save(carry, done):
        if checkpoint is not None:
            carry = fetch(carry) if devices is not None else carry
            if jax.process_index() == 0:  # under jax.distributed, one process writes
                save_checkpoint(checkpoint, assemble(carry, done)[0], manifest)

    def take():
        """Wait for the chunk in flight and keep it (its records, its carry)."""
        nonlocal carry, step, first, err, pending, interrupted, every, prev, stepped_back
        (new_carry, out_dev), t_chunk = pending
        rec, mvals, traces = wait(out_dev, also=new_carry)  # the carry stays on the device
        seconds = time.perf_counter() - t_chunk
        chunk_seconds.append(seconds)
        code = int(new_carry[3])
        done_to = min(first + steps_per_chunk, end_step)
        if code == -1:  # stopped on request at step new_carry[4]: keep the steps before it
            done_to, interrupted, code = int(new_carry[4]), True, 0
            new_carry = (*new_carry[:3], zero, zero)
        if code:
            new_carry, _ = last_finite(chunk, carry, new_carry, first, step0, data, key_run)
            if check_names[code - 1] == DATA_ENERGY:  # the parameters, not the step, are bad
                new_carry, stepped_back = step_back(
                    chunk, carry, new_carry, first, step0, data, key_run, prev
                )
        chunks_out.append((*rec, *mvals, *traces))
        # The previous chunk's start is kept for step_back (one more state held on the device).
        prev = (carry, first)
        carry, err, pending = new_carry, code, None
        if code:
            return
        if done_to > step:
            every = jnp.asarray(poll_every(step_seconds(chunk, seconds / (done_to - step))))
            lo_i = (max(step, first) - first) // record_every
            hi_i = (done_to - 1 - first) // record_every + 1
            found = chunk_warnings([r[lo_i:hi_i] for r in rec], num_walkers)
            frozen = watch.check(new_carry[2], done_to)
            for kind, message in found + ([("frozen", frozen)] if frozen else []):
                if kind not in warned:
                    warned.add(kind)
                    warnings.warn(message, RuntimeWarning, stacklevel=4)
            if bar is not None:
                last = hi_i - 1  # the last record of an active step
                bar.show(done_to, ess=rec[0][last], log_Z=rec[1][last], H=rec[2][last])
        step, first = done_to, first + steps_per_chunk
        if checkpoint_every is not None and step % checkpoint_every == 0 and step < end_step:
            save(carry, step)

    # Ctrl-C or SIGTERM stops the chunk in flight at its next poll (smc_ebm._live.running); a second
    # one raises KeyboardInterrupt here and gives up the chunk in flight.
    with running(), on_mesh(mesh):
        try:
            while step < end_step and not err and not stop_asked():
                t_chunk = time.perf_counter()
                out = chunk(carry, jnp.asarray(first), start_arr, data, key_run, end, every)
                pending = (out, t_chunk)
                take()
        except KeyboardInterrupt:
            pass
        finally:
            # (A loop that ended early without an error was stopped: under several processes,
            # also on those that were not signalled themselves.)
            stopped = step < end_step and not err
            interrupted = interrupted or STOP.is_set() or pending is not None or stopped
            if bar is not None:
                bar.close()
    if interrupted:
        warnings.warn(
            f"fit interrupted after {step - step0} steps; returning the state at that point.",
            stacklevel=2,
        )

    err_step = int(carry[4]) if err else None
    done_steps = err_step if err else step
    if devices is not None:  # arrays split over several processes: gathered to each
        carry, data = fetch(carry), fetch(data)
    saved, history, traces = assemble(carry, done_steps, err_step)
    if checkpoint is not None and jax.process_index() == 0:
        save_checkpoint(checkpoint, saved, manifest)
    params, opt_state, state = carry[:3]
    result = make_result(
        params,
        static,
        opt_state,
        state,
        strategy,
        data,
        history,
        done_steps,
        time.perf_counter() - start_time,
        interrupted,
        traces,
        np.asarray(chunk_seconds),
        key,
    )
    if err:
        quantity = check_names[err - 1]
        if stepped_back:
            quantity = f"{quantity} under the parameters this step produced"
        raise TrainingError(err_step, quantity, result)
    return result
