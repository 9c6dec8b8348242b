"""Host-side pieces of ``fit``: the data check, the history's assembly, the failing-step replay."""

from __future__ import annotations

import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from smc_ebm.energies import energy_batch

# Jitted once at module level: a fresh lambda per ``fit`` call would be traced and compiled at
# every call (about 0.1 s each on a CPU).
_energies = eqx.filter_jit(energy_batch)


def validate_data(data: Any, energy: Any) -> jnp.ndarray:
    arr = np.asarray(data)
    if arr.ndim != 2:
        raise ValueError(f"data must be a 2-D array of shape (n, dim); got shape {arr.shape}.")
    if arr.shape[0] < 1:
        raise ValueError("data is empty.")
    dtype = energy_dtype(energy)
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


def energy_dtype(energy: Any) -> np.dtype:
    """The widest floating dtype of the energy's arrays (JAX's default float if none)."""
    dtypes = [
        np.dtype(x.dtype)
        for x in jax.tree.leaves(eqx.filter(energy, eqx.is_inexact_array))
        if jnp.issubdtype(x.dtype, jnp.floating)
    ]
    return max(dtypes, key=lambda d: d.itemsize, default=np.dtype(jnp.result_type(float)))


def last_finite(chunk, carry, bad_carry, first, start, data, key_run):
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
        good = _replay(chunk, carry, first, start, data, key_run, err_step)
        if not int(good[3]):
            return (*good[:3], err, err_step), failed
        err, err_step, failed = good[3], good[4], good[2]


def step_back(chunk, carry, bad_carry, first, start, data, key_run, prev):
    """The state one step earlier than ``bad_carry`` (the output of :func:`last_finite`).

    A step that finds the data's energy non-finite started from parameters that the step
    before it produced; those parameters are finite (they were checked) but useless, and a
    resume from them fails at once. So the state returned is the one before that step: the
    chunk is replayed from its start ``carry`` (or, when that step opened the chunk, from the
    previous chunk's start ``prev = (carry, first)``) up to it. At the run's first step there
    is nothing earlier and ``bad_carry`` is returned unchanged.

    Returns ``(carry, stepped)``; ``stepped`` says whether the state moved back a step.
    """
    err, target = bad_carry[3], int(bad_carry[4]) - 1
    if target < start:
        return bad_carry, False
    if target >= first:
        src, src_first = carry, first
    elif prev is not None and target >= prev[1]:
        src, src_first = prev
    else:
        return bad_carry, False
    end = jnp.asarray(target, jnp.int32)
    good = _replay(chunk, src, src_first, start, data, key_run, end)
    return (*good[:3], err, end), True


def _replay(chunk, carry, first, start, data, key_run, end_step):
    """The carry of the chunk run again from ``carry`` up to ``end_step``.

    Without polls: a replay does not stop on request.
    """
    never = jnp.asarray(0)
    out, _ = chunk(carry, jnp.asarray(first), jnp.asarray(start), data, key_run, end_step, never)
    return out


def history_of(chunks_out, names, first, record_every, lo, last) -> dict[str, np.ndarray]:
    """The records of the steps in ``[lo, last)``, as numpy columns (with ``step``).

    ``chunks_out`` holds the chunks' records, the first chunk starting at step ``first``.
    """
    if not chunks_out:
        cols = [np.zeros(0) for _ in names]
    else:
        cols = [np.concatenate([np.asarray(c[i]) for c in chunks_out]) for i in range(len(names))]
    steps = first + record_every * np.arange(len(cols[0]) if cols else 0)
    keep = (steps >= lo) & (steps < last)
    hist = {"step": steps[keep]}
    for name, col in zip(names, cols, strict=True):
        hist[name] = col[keep]
    return hist


def join_history(old: dict, new: dict, partial: bool) -> dict[str, np.ndarray]:
    """The records ``old`` then ``new``.

    With ``partial``, the first new record is the rest of the old last record's window (a run
    resumed between two records): only its resampling count is kept, added to the old one's.
    """
    if not old:
        return new
    if not new or len(new["step"]) == 0:
        return {k: np.asarray(v) for k, v in old.items()}
    if partial:
        if len(old["step"]) == 0 or old["step"][-1] != new["step"][0]:
            raise ValueError("cannot join the histories: the resumed run starts at another step.")
        old = {k: np.asarray(v).copy() for k, v in old.items()}
        if "resampled" in old:
            old["resampled"][-1] += new["resampled"][0]
        new = {k: v[1:] for k, v in new.items()}
    if set(old) != set(new):
        raise ValueError(
            f"cannot join the histories: columns {sorted(old)} before, {sorted(new)} now "
            "(the metrics differ)."
        )
    return {k: np.concatenate([np.asarray(old[k]), new[k]]) for k in new}


def join_traces(old: dict | None, new: dict, trace_walkers: int, partial: bool) -> dict:
    """Pop the trace columns of the history ``new`` into the traces of ``fit``, after ``old``."""
    pos, logw = new.pop("_trace_position"), new.pop("_trace_log_weights")
    if old and len(new["step"]) == 0:
        return dict(old)
    walker = np.arange(pos.shape[1]) if pos.ndim == 3 else np.arange(trace_walkers)
    tr = {"position": pos, "log_weights": logw, "step": new["step"]}
    if old:
        skip = 1 if partial else 0  # the rest of the old last record's window
        tr = {k: np.concatenate([old[k], v[skip:]]) for k, v in tr.items()}
    return {**tr, "walker": walker}


def chunk_steps(chunk_size: int, record_every: int, checkpoint_every: int | None) -> int:
    """Steps per compiled chunk: a multiple of ``record_every`` near ``chunk_size``.

    With checkpoints, the largest such number at most ``chunk_size`` that divides
    ``checkpoint_every`` (so that chunks end at every checkpoint).
    """
    records = max(1, chunk_size // record_every)
    if checkpoint_every is None:
        return records * record_every
    if checkpoint_every % record_every:
        raise ValueError(
            f"checkpoint_every ({checkpoint_every}) must be a multiple of record_every "
            f"({record_every})."
        )
    c = checkpoint_every // record_every
    return max(d for d in range(1, min(records, c) + 1) if c % d == 0) * record_every


def chunk_warnings(rec, num_walkers: int) -> list[tuple[str, str]]:
    """``(kind, message)`` for what a finished chunk shows is going wrong without an error.

    ``rec`` is the chunk's records of the steps taken (``Record`` fields first: ESS, log Z,
    cross-entropy, resampled, loss, acceptance). Warned: moves almost never accepted (a MALA
    or i-SIR step size too large), and weights collapsed onto one walker at every record
    (log Z and the model term then rest on one walker).
    """
    out = []
    ess, acc = np.asarray(rec[0]), np.asarray(rec[5])
    active = len(ess)
    if active == 0:
        return out
    acc = acc[np.isfinite(acc)]
    if acc.size and float(acc.mean()) < 0.01:
        out.append(
            (
                "acceptance",
                f"the walkers' moves were accepted {100 * float(acc.mean()):.2f}% of the time "
                f"over the last {active} records: the step size is too large for this energy.",
            )
        )
    ess = ess[np.isfinite(ess)]
    if num_walkers > 1 and ess.size and float(ess.max()) * num_walkers < 1.5:
        out.append(
            (
                "ess",
                f"the weights' ESS stayed at one walker (of {num_walkers}) for the last {active} "
                "records: log Z, the cross-entropy and the model term rest on one walker. "
                "Resample more often (a higher ESS threshold) or take a smaller step size.",
            )
        )
    return out


class FrozenWatch:
    """Warns when a mini-batched population stops moving.

    With ``walker_batch`` each step moves a fraction of the walkers. If a move ruins its
    walker's weight (a step size far too large), resampling replaces the moved walkers by
    copies of frozen ones: the population stops moving, log Z drifts, and no number is
    non-finite. Over windows in which every walker is moved 8 times on average, the watch
    measures the fraction of the walkers whose position was already held by a walker at the
    window's start (exact equality of a projection of the positions, on the device). A
    healthy population gives about ``exp(-8)`` (measured: at most 1 walker in 64, step sizes
    0.1 and 1 on a two-mode mixture); with step size 10 it gave 0.45 to 0.91. It warns at 1/4.
    """

    MOVES, LIMIT = 8, 0.25

    def __init__(self, strategy: Any, state: Any, step: int):
        f = float(strategy.moved_fraction)
        self.strategy = strategy
        self.window = int(np.ceil(self.MOVES / f)) if f < 1 else None
        if self.window is not None:
            self._start(state, step)

    def _start(self, state: Any, step: int) -> None:
        self.first, self.ref = step, _projection(self.strategy.walkers(state)[0])

    def check(self, state: Any, step: int) -> str | None:
        """A warning's text when the walkers at ``step`` are mostly unmoved, else ``None``."""
        if self.window is None or step - self.first < self.window:
            return None
        frac = float(_unmoved(self.ref, self.strategy.walkers(state)[0]))
        steps = step - self.first
        self._start(state, step)
        if frac < self.LIMIT:
            return None
        return (
            f"{100 * frac:.0f}% of the walkers were at positions the population already held "
            f"{steps} steps earlier, though each walker should have moved about "
            f"{self.MOVES} times: the moved walkers do not survive resampling (a step size "
            "too large?), and log Z and the model term rest on walkers that never move."
        )


@jax.jit
def _projection(x: Any) -> Any:
    x = x.reshape(x.shape[0], -1)
    r = jnp.sqrt(jnp.arange(2, x.shape[1] + 2, dtype=x.dtype))  # fixed, irrational weights
    return jnp.sort(x @ r)


@jax.jit
def _unmoved(ref: Any, x: Any) -> Any:
    p = _projection(x)
    i = jnp.clip(jnp.searchsorted(ref, p), 0, ref.shape[0] - 1)
    return jnp.mean(ref[i] == p)


STEP_LIMIT = 2**31 - 1  # steps are counted in int32 on the device


def check_counts(**counts: Any) -> None:
    """Check integer arguments of ``fit`` before they reach the device.

    Raises ``TypeError`` unless each count is an integer (or ``None``), and ``ValueError``
    when one is too large for the device's int32 step counter.
    """
    for name, value in counts.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an integer; got {value!r}.")
        if value > STEP_LIMIT:
            raise ValueError(f"{name} must be at most 2^31 - 1 (an int32 count); got {value}.")
