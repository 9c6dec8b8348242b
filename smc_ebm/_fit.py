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

from smc_ebm.energies._base import energy_batch, has_log_partition, mean_energy
from smc_ebm.kernels._evaluate import evaluate, per_walker_sized, split_energy
from smc_ebm.smc._weights import row_sum
from smc_ebm.strategies._base import AbstractStrategy, WalkerState

# Quantity checked after every step, in order; the first non-finite one is reported.
_CHECKS = (
    "energy of the data",
    "energy of the walkers",
    "gradient of the walkers' energy",
    "walker log-weights",
    "walker positions",
    "parameters",
)

# Incremented each time the chunk function is traced; tests use it to prove that the
# training loop compiles once.
TRACE_COUNT = {"chunk": 0}


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
    state: WalkerState
    strategy: AbstractStrategy
    traces: dict[str, np.ndarray] | None = None
    chunk_seconds: np.ndarray | None = None

    @property
    def flow(self) -> Any:
        """The trained companion flow of flow strategies (:func:`FlowMC`), else ``None``."""
        flow_of = getattr(self.strategy, "flow_of", None)
        return None if flow_of is None else flow_of(self.state)

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
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
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


# Jitted once at module level: a fresh lambda per ``fit`` call would be traced and compiled at
# every call (about 0.1 s each on a CPU).
_energies = eqx.filter_jit(energy_batch)
_mean_energy = eqx.filter_jit(mean_energy)


def _finite(x: Array) -> Array:
    """Whether every entry of ``x`` is finite, from one sum.

    ``x * 0`` is 0 where ``x`` is finite and NaN where it is not (inf or NaN), so its sum is
    finite exactly when every entry is: unlike ``all(isfinite(x))`` this writes no boolean
    array of the size of ``x`` (the walkers' positions and gradients are checked every step).
    The rows are summed by :func:`smc_ebm.smc.row_sum` (on CPU a product with ones,
    faster there than XLA's fused reduction), then their sums.
    """
    z = x * jnp.zeros((), x.dtype)
    if z.ndim and z.size:
        z = row_sum(z.reshape(-1, z.shape[-1]))
    return jnp.isfinite(jnp.sum(z))


def _all_finite(tree: Any) -> Array:
    leaves = [_finite(x) for x in jax.tree.leaves(tree) if eqx.is_inexact_array(x)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _first_bad(data_energy, state: WalkerState, params, certified: bool = False) -> Array:
    """The code (``1 + index`` into ``_CHECKS``) of the first non-finite quantity, or 0.

    With ``certified`` (the strategy's ``weights_certify_walkers``) the ``(N, d)`` positions
    and gradients are not read: a non-finite one has made its walker's log-weight non-finite,
    and the step fails with the log-weights' code, which :func:`_refine_code` turns into the
    gradient's on the host when the gradient is the cause.
    """
    walkers_ok = jnp.asarray(True)
    ok = [
        jnp.isfinite(data_energy),
        _all_finite(state.energy),
        walkers_ok if certified else _all_finite(state.grad),
        _all_finite((state.log_weights, state.log_Z_anchor, state.observers)),
        walkers_ok if certified else _all_finite(state.position),
        _all_finite(params) & _all_finite(state.param_grad),
    ]
    codes = jnp.arange(1, len(ok) + 1)
    bad = ~jnp.stack(ok)
    return jnp.where(jnp.any(bad), codes[jnp.argmax(bad)], 0)


_WEIGHTS_CODE = 1 + _CHECKS.index("walker log-weights")


def _certified(strategy: Any) -> bool:
    """The strategy's ``weights_certify_walkers`` (False for one without the property)."""
    return bool(getattr(strategy, "weights_certify_walkers", False))


def _refine_code(code: int, state: WalkerState, certified: bool) -> int:
    """The code that the full check gives for a failed step's ``state`` (host side, once).

    A certified check reports a non-finite gradient as non-finite log-weights; the full check
    would name the gradient (it comes first in ``_CHECKS``). Positions come after the
    log-weights, and energies are checked either way, so only this case differs.
    """
    if certified and code == _WEIGHTS_CODE and not bool(_all_finite(state.grad)):
        return _CHECKS.index("gradient of the walkers' energy") + 1
    return code


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

    use_correction = bool(getattr(strategy, "feedback_correction", False)) and (
        getattr(state, "grad_weights", None) is not None
    )
    chunk_records = max(1, chunk_size // record_every)
    chunk_steps = chunk_records * record_every
    end_step = step0 + num_steps
    local = getattr(strategy, "feedback_correction", None) == "local"
    if use_correction and not local and not _update_is_linear(optimizer, opt_state, params):
        if strategy.feedback_correction is True:
            warnings.warn(
                "feedback_correction is skipped: it needs an optimizer whose update is linear in "
                "the gradient (SGD, momentum, per-field SGD, schedules); this one (e.g. Adam) is "
                "not, and its Jacobian at a near-zero gradient coordinate is unbounded.",
                stacklevel=2,
            )
        use_correction = False

    chunk = _chunk_function(
        strategy,
        optimizer,
        static,
        tuple(metrics.items()),
        batch_size,
        record_every,
        chunk_records,
        use_correction,
        trace_walkers,
    )

    names = ("ess", "log_Z", "cross_entropy", "resampled", "loss", "acceptance", *metrics)
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
            out = jax.device_get(out)  # waits for the chunk: its records are its last outputs
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
        code = _refine_code(int(err), failed_state, _certified(strategy))
        raise TrainingError(int(err_step), _CHECKS[code - 1], result)
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


def _chunk_function(strategy, optimizer, static, metrics, *sizes):
    """The jitted ``chunk(carry, first_step, data, key_run, end_step)`` of :func:`fit`, cached.

    ``metrics`` is a tuple of ``(name, function)``; ``sizes`` are the remaining arguments of
    :func:`_build_chunk` (hashable values), which enter the cache key as they are.
    """
    leaves, treedef = jax.tree.flatten(static)
    key = (
        _cache_token(strategy),
        _cache_token(optimizer),
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
    chunk = _build_chunk(strategy, optimizer, static, dict(metrics), *sizes)
    if key is not None:
        if len(_CHUNK_CACHE) >= _CHUNK_CACHE_SIZE:
            _CHUNK_CACHE.pop(next(iter(_CHUNK_CACHE)))
        # The objects are kept with the entry so that an ``id`` in the key is never reused.
        _CHUNK_CACHE[key] = (chunk, strategy, optimizer, static, metrics)
    return chunk


def _build_chunk(
    strategy,
    optimizer,
    static,
    metrics,
    batch_size,
    record_every,
    chunk_records,
    use_correction,
    trace_walkers,
):
    """The jitted training chunk: ``chunk_records`` records of ``record_every`` steps.

    ``chunk(carry, first_step, data, key_run, end_step)`` is one ``lax.scan``; steps at or
    after ``end_step`` (and after a non-finite quantity) are skipped.
    """
    certified = _certified(strategy)
    # Walkers that enter the gradient at a step (fewer than all with a moved batch).
    n_grad_walkers = getattr(strategy, "n_gradient_walkers", None)
    # The first step at which the feedback correction applies (0: from the start).
    correction_from = int(getattr(strategy, "feedback_correction_from", 0))
    correction_exact = getattr(strategy, "feedback_estimator", "probe") == "exact"

    @jax.jit
    def chunk(carry, first_step, data, key_run, end_step):
        TRACE_COUNT["chunk"] += 1
        n_data = data.shape[0]

        def one_step(carry, step):
            params, opt_state, state, err, err_step = carry

            def do(_):
                energy_k = eqx.combine(params, static)
                k = jax.random.fold_in(key_run, step)
                kb, kg, ka = jax.random.split(k, 3)
                if batch_size is None:
                    batch = data
                else:
                    batch = data[jax.random.randint(kb, (batch_size,), 0, n_data)]
                ess, log_z = strategy.ess_and_log_Z(state)
                st, grad, loss, data_u = strategy.gradient(kg, state, energy_k, batch)
                if use_correction:
                    kc, ka = jax.random.split(ka)

                    def corrected(_):
                        return _feedback_correction(
                            kc,
                            optimizer,
                            grad,
                            opt_state,
                            params,
                            static,
                            st,
                            n_grad_walkers,
                            exact=correction_exact,
                        )

                    def uncorrected(_):
                        upd, opt = optimizer.update(grad, opt_state, params)
                        return upd, opt, jnp.zeros(st.position.shape[0], st.position.dtype)

                    if correction_from > 0:
                        updates, new_opt, correction = jax.lax.cond(
                            step >= correction_from, corrected, uncorrected, None
                        )
                    else:
                        updates, new_opt, correction = corrected(None)
                else:
                    updates, new_opt = optimizer.update(grad, opt_state, params)
                    correction = None
                new_params = optax.apply_updates(params, updates)
                st, resampled, acc = strategy.advance(
                    ka, st, energy_k, eqx.combine(new_params, static), step, correction
                )
                code = _first_bad(data_u, st, new_params, certified)
                rec = (ess, log_z, log_z + data_u, resampled.astype(jnp.int32), loss, acc)
                # A bad step's state is carried as it is (later steps are skipped) and the host
                # replays the chunk up to that step to recover the last finite state: keeping
                # the old state here would need a conditional that copies the walkers (n x d,
                # more than once) at every step.
                err_new = jnp.where(code > 0, code, 0)
                return (new_params, new_opt, st, err_new, jnp.where(code > 0, step, err_step)), rec

            def skip(_):
                nan = jnp.asarray(jnp.nan, data.dtype)
                rec = (nan, nan, nan, jnp.asarray(0, jnp.int32), nan, nan)
                return carry, rec

            active = (err == 0) & (step < end_step)
            return jax.lax.cond(active, do, skip, None)

        def one_record(carry, first_step):
            params = carry[0]
            energy_k = eqx.combine(params, static)
            mvals = tuple(jnp.asarray(f(energy_k), data.dtype) for f in metrics.values())
            if trace_walkers:
                xw, aw = strategy.walkers(carry[2])
                mvals = (*mvals, xw[:trace_walkers], aw[:trace_walkers])
            steps = first_step + jnp.arange(record_every)
            carry, recs = jax.lax.scan(one_step, carry, steps)
            ess, log_z, ce, resampled, loss, acc = recs
            out = (ess[0], log_z[0], ce[0], jnp.sum(resampled), loss[0], acc[0], *mvals)
            return carry, out

        firsts = first_step + record_every * jnp.arange(chunk_records)
        return jax.lax.scan(one_record, carry, firsts)

    return chunk


def _update_is_linear(optimizer, opt_state, params) -> bool:
    """Whether ``optimizer.update`` is linear in the gradient, checked once on the host.

    Compares the Jacobian diagonal (a JVP with a tangent of ones) at two random gradients;
    SGD, momentum and their per-field or scheduled forms give the same diagonal, Adam-like
    rescalings do not.
    """

    def diag(seed):
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.key(seed), len(leaves))
        g = jax.tree.unflatten(
            treedef,
            [
                jax.random.normal(k, jnp.shape(x), jnp.asarray(x).dtype)
                if eqx.is_inexact_array(x)
                else x
                for k, x in zip(keys, leaves, strict=True)
            ],
        )
        ones = jax.tree.map(jnp.ones_like, g)
        _, (d, _) = jax.jvp(lambda g: optimizer.update(g, opt_state, params), (g,), (ones,))
        return jax.tree.leaves(d)

    try:
        d1, d2 = diag(0), diag(1)
    except Exception:  # an optimizer that cannot be differentiated: no correction
        return False
    return all(
        bool(np.all(np.isfinite(a)) and np.allclose(a, b, rtol=1e-5, atol=0.0))
        for a, b in zip(d1, d2, strict=True)
    )


# Walkers probed per step by the feedback correction (all of them when there are fewer).
_CORRECTION_PROBES = 1024


def _feedback_correction(
    key, optimizer, grad, opt_state, params, static, state, n_active=None, exact=False
):
    r"""Optimizer update and the first-order correction of the walkers' self-influence.

    Walker ``i`` entered the gradient with weight ``q_i`` (``state.grad_weights``); the weights
    are self-normalised, so it moved ``m = sum_j q_j \delta_j`` by ``q_i (\delta_i - m)``
    (``\delta_i = dU(X_i)/d\theta``) and the update by ``-J q_i (\delta_i - m)``, ``J`` the
    Jacobian of the update in the gradient. Its own weight increment
    ``-\delta_i \cdot \Delta\theta`` then contains ``q_i \delta_i^T J (\delta_i - m)``, a
    systematic term (``J`` is negative for a descent step) that an independent walker would
    not see. It is removed with ``S = -diag(J)`` (exact for element-wise optimizers) and a
    Rademacher probe ``v``, ``d_i = \delta_i \cdot S^{1/2} v``:
    ``E[d_i (d_i - m \cdot S^{1/2} v)] = \delta_i^T S (\delta_i - m)``, with ``m`` the
    state's ``param_grad`` (the estimate that entered the update). Only walkers with
    ``q_i > 0`` have a self-term: when at most ``n_active < N`` of them entered the gradient
    (a moved batch), those are found first. With more than ``_CORRECTION_PROBES`` of them,
    only every ``stride``-th one (random offset) is probed and its term scaled by ``stride``:
    the same expectation, at ``1 / stride`` of the cost.

    ``exact=True`` replaces the probe by each probed walker's own parameter gradient
    (``vmap`` of ``grad``: memory ``n_probed x n_params``), which gives
    ``q_i \delta_i^T S (\delta_i - m)`` itself: no probe noise enters the weights.

    Returns ``(updates, new_opt_state, correction (N,))``.
    """
    ones = jax.tree.map(jnp.ones_like, grad)
    (updates, new_opt), (diag, _) = jax.jvp(
        lambda g: optimizer.update(g, opt_state, params), (grad,), (ones,)
    )
    leaves, treedef = jax.tree.flatten(diag)
    # S = -diag(J). Adam-like updates g / sqrt(g^2) have a 0/0 derivative where a gradient
    # coordinate is exactly zero (e.g. the hidden layers of a net whose last layer starts at
    # zero); no walker influences such a coordinate to first order, so it gets no correction.
    scale = [jnp.maximum(-jnp.where(jnp.isfinite(d), d, 0.0), 0.0) for d in leaves]
    n = state.position.shape[0]
    m = n if n_active is None else min(int(n_active), n)
    # The walkers that entered the gradient (``m`` at most; index n pads when fewer did).
    pool = jnp.arange(n) if m == n else jnp.nonzero(state.grad_weights > 0, size=m, fill_value=n)[0]
    # The directional derivative costs about a pass over the probed walkers; it is taken on
    # every ``stride``-th walker of the pool from a random offset (each is probed with
    # probability 1 / stride) and scaled by ``stride``, an unbiased estimate of the same
    # correction at a fraction of the cost.
    stride = max(1, m // _CORRECTION_PROBES)
    offset = jax.random.randint(jax.random.fold_in(key, 1), (), 0, stride)
    probed = offset + stride * jnp.arange(-(-m // stride))
    idx = pool[jnp.minimum(probed, m - 1)]
    valid = (probed < m) & (idx < n)
    idx = jnp.minimum(idx, n - 1)
    x = state.position[idx]
    q = jnp.where(valid, state.grad_weights[idx], 0.0)

    if exact:
        # S (delta_i - m) . delta_i from each walker's own gradient: the self-term itself.
        def self_term(xi):
            g = jax.grad(lambda p: eqx.combine(p, static)(xi))(params)
            return sum(
                jnp.sum(s_ * gi * (gi - mi))
                for s_, gi, mi in zip(
                    scale, jax.tree.leaves(g), jax.tree.leaves(state.param_grad), strict=True
                )
            )

        corr = stride * q * jax.vmap(self_term)(x)
    else:
        keys = jax.random.split(key, len(leaves))
        probe = [
            jnp.sqrt(s_) * jax.random.rademacher(k, s_.shape, s_.dtype)
            for k, s_ in zip(keys, scale, strict=True)
        ]

        d = _param_directional_derivatives(params, static, x, jax.tree.unflatten(treedef, probe))
        # Self-normalised weights: walker i moves m = sum_j q_j delta_j by q_i (delta_i - m),
        # so its self-term is q_i delta_i^T S (delta_i - m) = E_v[q_i d_i (d_i - m . S^1/2 v)].
        # The walkers' gradient estimate m is the state's ``param_grad`` (what entered the
        # update, also after a resampling has made copies), so m . S^1/2 v needs no per-walker
        # pass.
        m = sum(
            jnp.sum(a * b) for a, b in zip(jax.tree.leaves(state.param_grad), probe, strict=True)
        )
        corr = stride * q * d * (d - m)
    return updates, new_opt, jnp.zeros(n, corr.dtype).at[idx].add(jnp.where(valid, corr, 0.0))


def _param_directional_derivatives(params, static, x, v) -> Array:
    r"""``d_i = \partial_\theta U(x_i) \cdot v`` for the rows ``x_i`` of ``x`` (``(m, d) -> (m,)``).

    For a small energy (at most ``PER_WALKER_PARAMS_PER_DIM * d`` trainable numbers, e.g. a
    mixture) ``kernels.evaluate`` gives ``param_grad(w) = sum_i w_i \partial_\theta U(x_i)``
    in closed form or from per-walker gradients; it is linear in ``w`` and its transpose
    applied to ``v`` is ``d``: for the mixture one product, where forward-mode
    differentiation of the energy took about 5% of a Jarzynski step on the 50-d benchmark
    (XLA's CPU backend runs its reduction over the coordinates slowly). For a network the
    transpose needs a backward pass and forward mode is cheaper (by about 12% on a 2 x 128
    MLP), so larger energies, and a ``param_grad`` that JAX cannot transpose, take forward
    mode: ``jvp`` of the energies in ``v``.
    """

    def forward():
        return jax.jvp(lambda p: jax.vmap(eqx.combine(p, static))(x), (params,), (v,))[1]

    if not per_walker_sized(params, x.shape[-1]):
        return forward()
    param_grad = evaluate(eqx.combine(params, static), x)[2]
    try:
        (d,) = jax.linear_transpose(param_grad, jnp.zeros(x.shape[0], x.dtype))(v)
    except Exception:  # noqa: BLE001  (not transposable)
        return forward()
    return d


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
