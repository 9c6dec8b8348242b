"""``fit``: the whole training loop as a jitted ``lax.scan`` over chunks of steps."""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, PRNGKeyArray

from smc_ebm._loop import TRACE_COUNT, Record, chunk_function
from smc_ebm.energies import energy_batch, has_log_partition, mean_energy
from smc_ebm.kernels import split_energy
from smc_ebm.strategies import AbstractStrategy, FlowStrategy

__all__ = ["TRACE_COUNT", "FitResult", "TrainingError", "fit"]


class TrainingError(RuntimeError):
    """A non-finite quantity appeared during training.

    Attributes:
        step: the optimizer step at which it appeared.
        quantity: which quantity (e.g. ``"walker log-weights"``).
        result: a :class:`FitResult` holding the last finite state (nothing learned before
            ``step`` is lost); it can be passed to ``fit(..., resume=...)``.
    """

    def __init__(self, step: int, quantity: str, result: FitResult):
        self.step, self.quantity, self.result = step, quantity, result
        super().__init__(
            f"non-finite {quantity} at step {step}; training stopped. The last finite state "
            f"(after {step} steps) is in `error.result`. A step size that diverges or a too "
            f"large learning rate are the usual causes."
        )


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        energy: the trained energy module.
        walkers: ``(N, d)`` final walker positions.
        log_weights: ``(N,)`` final log-weights (zeros for unweighted strategies).
        history: dict of numpy arrays, one entry per recorded step: ``step``, ``ess``,
            ``log_Z``, ``cross_entropy``, ``resampled`` (resamplings since the previous
            record), ``loss``, ``acceptance`` and every user metric. Each record describes
            the parameters *before* the update of that step (step 0 is the initial model).
        log_Z: final log Z estimate (NaN for unweighted strategies).
        cross_entropy: final cross-entropy estimate ``log Z + mean_data U`` on all the data.
        steps: number of optimizer steps done.
        wall_time: seconds spent in :func:`fit` (compilation included).
        interrupted: the run was stopped by ``KeyboardInterrupt`` and this is its state.
        opt_state, state, strategy: what ``fit(..., resume=result)`` continues from.
        traces: with ``fit(..., trace_walkers=M)``: ``position (T, M, d)``,
            ``log_weights (T, M)``, ``step (T,)``, ``walker (M,)``; else ``None``.
        chunk_seconds: ``(C,)`` wall-clock seconds of each compiled chunk of ``chunk_size``
            steps, up to the host receiving its records (the first includes compilation, unless
            the chunk was compiled by an earlier call); the time of the steps without
            ``fit``'s setup and final evaluation.
    """

    energy: Any
    walkers: Any
    log_weights: Any
    history: dict[str, np.ndarray]
    log_Z: float
    cross_entropy: float
    steps: int
    wall_time: float
    interrupted: bool
    opt_state: Any
    state: Any
    strategy: AbstractStrategy
    traces: dict[str, np.ndarray] | None = None
    chunk_seconds: np.ndarray | None = None

    @property
    def flow(self) -> Any:
        """The trained companion flow of flow strategies (:func:`FlowMC`), else ``None``."""
        if isinstance(self.strategy, FlowStrategy):
            return self.strategy.flow_of(self.state)
        return None

    @property
    def weights(self) -> np.ndarray:
        """Normalised weights ``softmax(log_weights)``, shape ``(N,)``."""
        return np.asarray(jax.nn.softmax(jnp.asarray(self.log_weights)))

    def to_arviz(self, **kwargs: Any) -> Any:
        """ArviZ ``InferenceData`` (``DataTree`` on ArviZ 1.x) of the walkers and history.

        See :func:`smc_ebm.diagnostics.to_arviz` for the groups and the keyword arguments.
        """
        from smc_ebm.diagnostics import to_arviz

        return to_arviz(self, **kwargs)

    def summary(self) -> Any:
        """Headline numbers (:class:`~smc_ebm.diagnostics.FitSummary`); ``print`` it."""
        from smc_ebm.diagnostics import summarize

        return summarize(self)


def _validate_data(data: Any, energy: Any) -> jnp.ndarray:
    arr = np.asarray(data)
    if arr.ndim != 2:
        raise ValueError(f"data must be a 2-D array of shape (n, dim); got shape {arr.shape}.")
    if arr.shape[0] < 1:
        raise ValueError("data is empty.")
    dtype = _energy_dtype(energy)
    exact = np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_
    if not exact and not (np.issubdtype(arr.dtype, np.floating) and arr.dtype.itemsize >= 4):
        # float16, bfloat16 (not a numpy floating type): too coarse for the gradients.
        warnings.warn(
            f"data of dtype {arr.dtype} cast to {dtype.name}, the energy's dtype.", stacklevel=3
        )
    arr = arr.astype(dtype)  # float32 data and a float64 energy (x64): one dtype in the loop
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.all(np.isfinite(arr), axis=1)))
        raise ValueError(f"data contains NaN or inf ({bad} rows).")
    dim = getattr(energy, "dim", None)
    if dim is not None and int(dim) != arr.shape[1]:
        raise ValueError(
            f"data dimension {arr.shape[1]} does not match the energy's dimension {dim}."
        )
    arr = jnp.asarray(arr)
    u = _energies(energy, arr[: min(64, arr.shape[0])])
    if u.ndim != 1:
        raise ValueError(
            f"the energy must map one sample (dim,) to a scalar; got shape {u.shape[1:]}."
        )
    if not bool(jnp.all(jnp.isfinite(u))):
        raise ValueError("the energy is not finite at the data.")
    return arr


def _energy_dtype(energy: Any) -> np.dtype:
    """The widest floating dtype of the energy's arrays (JAX's default float if none)."""
    dtypes = [
        np.dtype(x.dtype)
        for x in jax.tree.leaves(eqx.filter(energy, eqx.is_inexact_array))
        if jnp.issubdtype(x.dtype, jnp.floating)
    ]
    return max(dtypes, key=lambda d: d.itemsize, default=np.dtype(jnp.result_type(float)))


# Jitted once at module level: a fresh lambda per ``fit`` call would be traced and compiled at
# every call (about 0.1 s each on a CPU).
_energies = eqx.filter_jit(energy_batch)
_mean_energy = eqx.filter_jit(mean_energy)


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
    resume: FitResult | None = None,
    trace_walkers: int = 0,
) -> FitResult:
    r"""Train an energy by maximum likelihood (minimise the cross-entropy).

    Each step ``k``: ``D_k = mean_batch dU_k/dtheta - E_model[dU_k/dtheta]`` (the model term
    from ``strategy``), ``theta_{k+1} = optimizer(theta_k, D_k)``, then the strategy's
    walkers follow the target from ``theta_k`` to ``theta_{k+1}``. The loop is a jitted
    ``lax.scan`` over chunks of ``chunk_size`` steps: nothing is synchronised with the host
    inside a chunk, and the chunk compiles once. A progress bar between chunks shows the
    step, ESS, log Z and cross-entropy.

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
        progress: show a tqdm progress bar.
        chunk_size: steps per compiled chunk (rounded to a multiple of ``record_every``).
        resume: continue from a previous :class:`FitResult` (same strategy and optimizer).
        trace_walkers: record the positions ``(T, M, d)`` and log-weights ``(T, M)`` of the
            first ``M = trace_walkers`` walker slots at every record, in ``result.traces``
            (for trace and rank plots through ``result.to_arviz()``). A slot is a walker
            until it is resampled, after which it holds a copy of its ancestor.

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
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0; got {num_steps}.")
    if record_every < 1:
        raise ValueError(f"record_every must be >= 1; got {record_every}.")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    data = _validate_data(data, energy)
    n_data, dim = data.shape
    if trace_walkers < 0:
        raise ValueError(f"trace_walkers must be >= 0; got {trace_walkers}.")
    strategy.validate(dim, n_data)
    metrics = dict(metrics or {})
    key_init, key_run = jax.random.split(key)

    if resume is not None:
        energy = resume.energy
        params, static = split_energy(energy)
        opt_state, state, step0 = resume.opt_state, resume.state, resume.steps
        key_run = jax.random.fold_in(key_run, step0)
    else:
        params, static = split_energy(energy)
        opt_state = optimizer.init(params)
        if log_Z0 is None and has_log_partition(energy):
            log_Z0 = float(energy.log_partition())
        state = strategy.init_state(key_init, energy, data, log_Z0)
        step0 = 0

    chunk_records = max(1, chunk_size // record_every)
    chunk_steps = chunk_records * record_every
    end_step = step0 + num_steps
    rule = strategy.update_rule()
    if rule is not None:
        rule = rule.prepare(optimizer, opt_state, params)
    chunk, check_names = chunk_function(
        strategy,
        optimizer,
        rule,
        static,
        tuple(metrics.items()),
        batch_size,
        record_every,
        chunk_records,
        trace_walkers,
    )
    names = (*Record._fields, *metrics)
    if trace_walkers:
        names = (*names, "_trace_position", "_trace_log_weights")
    chunks_out: list[tuple] = []
    chunk_seconds: list[float] = []
    carry = (params, opt_state, state, jnp.asarray(0), jnp.asarray(0))
    end = jnp.asarray(end_step)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, desc="fit", unit="step", dynamic_ncols=True)
    interrupted = False
    step = step0
    try:
        while step < end_step:
            t_chunk = time.perf_counter()
            new_carry, out = chunk(carry, jnp.asarray(step), data, key_run, end)
            rec, mvals, traces = jax.device_get(out)  # waits for the chunk: its last outputs
            out = (*rec, *mvals, *traces)
            chunk_seconds.append(time.perf_counter() - t_chunk)
            err = int(new_carry[3])
            if err:
                new_carry, failed_state = _last_finite(chunk, carry, new_carry, step, data, key_run)
            carry = new_carry
            chunks_out.append(out)
            done = min(chunk_steps, end_step - step)
            if err:
                break
            step += done
            if bar is not None:
                bar.update(done)
                last = -(-done // record_every) - 1  # the last record of an active step
                bar.set_postfix(
                    ess=f"{out[0][last]:.3f}",
                    log_Z=f"{out[1][last]:.3f}",
                    H=f"{out[2][last]:.3f}",
                )
    except KeyboardInterrupt:
        interrupted = True
        warnings.warn(
            f"fit interrupted after {step - step0} steps; returning the state at that point.",
            stacklevel=2,
        )
    finally:
        if bar is not None:
            bar.close()

    params, opt_state, state, err, err_step = carry
    history = _history(
        chunks_out,
        names,
        step0,
        record_every,
        step if not int(err) else None,
        int(err_step) if int(err) else None,
    )
    done_steps = int(err_step) if int(err) else step
    traces = None
    if trace_walkers:
        pos, logw = history.pop("_trace_position"), history.pop("_trace_log_weights")
        traces = {
            "position": pos,
            "log_weights": logw,
            "step": history["step"],
            "walker": np.arange(pos.shape[1]) if pos.ndim == 3 else np.arange(trace_walkers),
        }
    result = _result(
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
    )
    if int(err):
        raise TrainingError(int(err_step), check_names[int(err) - 1], result)
    return result


def _last_finite(chunk, carry, bad_carry, step, data, key_run):
    """The carry just before the failing step, recovered by replaying the chunk up to it.

    ``bad_carry`` holds the state of the failing step ``err_step`` (the chunk carries it and
    skips the steps after it). The chunk is a deterministic function of its inputs, so running
    it again from ``carry`` (the chunk's start) with ``end_step = err_step`` gives the state
    after the last finite step, with the error code and step of ``bad_carry``. (Should a
    replay meet an earlier failure, the replay is repeated up to that one.)

    Returns ``(carry, failed_state)``: the recovered carry and the strategy state after the
    failing step.
    """
    err, err_step, failed = bad_carry[3], bad_carry[4], bad_carry[2]
    while True:
        good, _ = chunk(carry, jnp.asarray(step), data, key_run, err_step)
        if not int(good[3]):
            return (*good[:3], err, err_step), failed
        err, err_step, failed = good[3], good[4], good[2]


def _history(chunks_out, names, step0, record_every, end_step, err_step) -> dict[str, np.ndarray]:
    if not chunks_out:
        cols = [np.zeros(0) for _ in names]
    else:
        cols = [np.concatenate([np.asarray(c[i]) for c in chunks_out]) for i in range(len(names))]
    steps = step0 + record_every * np.arange(len(cols[0]) if cols else 0)
    last = err_step if err_step is not None else end_step
    keep = steps < last if last is not None else np.ones_like(steps, bool)
    hist = {"step": steps[keep]}
    for name, col in zip(names, cols, strict=True):
        hist[name] = col[keep]
    return hist


def _result(
    params,
    static,
    opt_state,
    state,
    strategy,
    data,
    history,
    steps,
    wall,
    interrupted,
    traces=None,
    chunk_seconds=None,
):
    energy = eqx.combine(params, static)
    ess, log_z = strategy.ess_and_log_Z(state)
    data_u = float(_mean_energy(energy, data))
    x, a = strategy.walkers(state)
    log_z = float(log_z)
    return FitResult(
        energy=energy,
        walkers=x,
        log_weights=a,
        history=history,
        log_Z=log_z,
        cross_entropy=log_z + data_u if math.isfinite(log_z) else float("nan"),
        steps=int(steps),
        wall_time=wall,
        interrupted=interrupted,
        opt_state=opt_state,
        state=state,
        strategy=strategy,
        traces=traces,
        chunk_seconds=chunk_seconds,
    )
