"""The host side of ``fit`` and the other long calls: stop requests, progress, Ctrl-C.

Ctrl-C and SIGTERM set :data:`STOP` during the loop (a second one raises
``KeyboardInterrupt``). The compiled chunk calls :func:`poll` (through :func:`ask_host`, an
unordered ``io_callback``) every ``poll_every`` steps. The call reports the step to the live
progress bar and answers whether a stop was asked for; a stop ends the chunk at that step,
and ``fit`` keeps every step done. ``fit`` chooses ``poll_every`` so that polls come about
``POLL_SECONDS`` apart, from the step time measured on the last chunk of the same compiled
function (also by an earlier call); before any step has been timed it polls every
``FIRST_POLL_EVERY`` steps. A poll interrupts the compiled loop (0.2 to 0.3 ms on a 2-core
CPU, ``benchmarks/progress_overhead.py``), so it is kept rare: at one poll per 0.5 s it
costs under 0.1%.

``sample``, ``diagnose`` and ``posterior`` are one compiled call each; they poll the same way
(:func:`poll_at` in the compiled code, :func:`live_call` on the host), with the step time
measured from the call's first poll (after compilation) to its end. There a stop request
ends the call at its next poll with ``KeyboardInterrupt`` (a partial result of those calls
means nothing). JAX cannot put a polling ``cond`` under ``vmap`` (``NotImplementedError: IO
effect not supported in vmap-of-cond``) and calls a callback with batched operands once per
batch element, so a caller that vmaps over runs polls outside its vmap: one poll per step of
all runs.

A process runs one such loop at a time: :data:`STOP` and :data:`LIVE` are module state.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

STOP = threading.Event()
LIVE: dict[str, Callable[..., None] | None] = {"progress": None}
ABORT = threading.Event()  # set while a call that cannot keep a partial result is running
POLL_SECONDS = 0.5  # the time aimed for between two polls
FIRST_POLL_EVERY = 8  # steps between polls before a step has been timed
# id(compiled chunk), or a tuple naming a compiled call -> last measured seconds per step
_STEP_SECONDS: dict[Any, float] = {}


_WAKE: dict[str, Any] = {"sock": None, "signals": 0}
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def poll(step: Any, *values: Any) -> np.ndarray:
    """Called from the compiled chunk every ``poll_every`` steps: ``True`` to stop.

    ``values`` (scalars) go to the progress bar with the step. In a call that keeps no partial
    result (:data:`ABORT`), a stop request raises ``KeyboardInterrupt`` here, which ends the
    compiled call with an error at once.
    """
    report = LIVE["progress"]
    if report is not None:
        report(int(step), *(float(v) for v in values))
    sock = _WAKE["sock"]
    if sock is not None and not STOP.is_set():
        # A chunk with a host callback runs synchronously on the CPU backend: the main thread
        # is inside the call and Python's handlers cannot run. The signal's byte on the wakeup
        # socket is written by the C-level handler at once.
        try:
            if any(b in _SIGNALS for b in sock.recv(256)):
                STOP.set()
        except (BlockingIOError, OSError):
            pass
    if ABORT.is_set() and STOP.is_set():
        raise KeyboardInterrupt
    return np.asarray(STOP.is_set())


def ask_host(step: Any, *values: Any) -> Any:
    """The chunk's poll (traced): the host's answer, a boolean scalar."""
    return io_callback(poll, jax.ShapeDtypeStruct((), jnp.bool_), step, *values, ordered=False)


def poll_at(step: Any, every: Any, when: Any = True, values: tuple = ()) -> Any:
    """Traced: :func:`ask_host` at the steps that are multiples of ``every``, when ``when``.

    ``every`` is a traced integer (its value changes without a new compilation; ``0``: never),
    or ``None``: then nothing is added to the compiled code (no progress, no callback).
    ``values`` (traced scalars) go to the bar with the step. Returns the host's answer
    (``False`` at the steps not polled). Not under ``jax.vmap`` (see the module's notes).
    """
    if every is None:
        return jnp.asarray(False)
    step = jnp.asarray(step)
    every = jnp.asarray(every).astype(step.dtype)  # int64 steps under x64: no mixed promotion
    polled = jnp.asarray(when) & (every > 0) & (jnp.mod(step, jnp.maximum(every, 1)) == 0)
    return jax.lax.cond(
        polled, lambda s, *v: ask_host(s, *v), lambda s, *v: jnp.asarray(False), step, *values
    )


def step_seconds(chunk: Any, seconds: float | None = None) -> float | None:
    """The last measured time of a step of ``chunk`` (and record ``seconds`` if given).

    ``chunk`` is a compiled function (known by its identity) or a tuple that names a call
    (its shapes and settings).
    """
    key = chunk if isinstance(chunk, tuple) else id(chunk)
    if seconds is not None:
        if len(_STEP_SECONDS) > 256:
            _STEP_SECONDS.clear()
        _STEP_SECONDS[key] = seconds
    return _STEP_SECONDS.get(key)


def poll_every(step_seconds: float | None) -> int:
    """Steps between two polls, about ``POLL_SECONDS`` apart.

    ``0`` (never) under several processes (``jax.distributed``): each process times its own
    steps, and processes that poll at different steps desynchronise the collectives of the
    compiled call (a poll's answer is shared from one device). They stop between chunks
    instead (:func:`stop_asked`).
    """
    if jax.process_count() > 1:
        return 0
    if step_seconds is None or not step_seconds > 0:
        return FIRST_POLL_EVERY
    return max(1, min(2**30, math.floor(POLL_SECONDS / step_seconds)))


def stop_asked() -> bool:
    """Whether a stop was asked (:data:`STOP`).

    Under several processes: of any of them, so that all stop after the same chunk.
    """
    if jax.process_count() == 1:
        return STOP.is_set()
    from jax.experimental import multihost_utils

    asked = multihost_utils.process_allgather(np.asarray(STOP.is_set()))
    return bool(np.any(asked))


def wait(tree: Any, also: Any = (), interval: float = 0.002) -> Any:
    """``jax.device_get(tree)`` once ``tree`` and ``also`` (left on the device) are ready.

    It waits in short sleeps: a blocking ``device_get`` holds the main thread in C++ until
    the arrays are ready, and Python runs its signal handlers only between bytecodes.
    """
    leaves = [x for x in jax.tree.leaves((tree, also)) if isinstance(x, jax.Array)]
    while not all(x.is_ready() for x in leaves):
        time.sleep(interval)
    return jax.device_get(tree)


def _on_signal(signum, frame) -> None:
    """Ctrl-C or SIGTERM: the first asks the loop to stop at its next poll.

    Every step done is kept; a second signal gives up at once.
    """
    # Counted here, not read from STOP: the chunk's poll may have set STOP already from the
    # wakeup byte of this same signal.
    _WAKE["signals"] += 1
    STOP.set()
    if _WAKE["signals"] > 1:
        raise KeyboardInterrupt


@contextlib.contextmanager
def running() -> Iterator[None]:
    """The scope of one training loop: SIGINT and SIGTERM ask it to stop.

    See :func:`_on_signal`; no stale stop request is left before or after.
    Signals are handled only in the main thread (where Python can install handlers); the
    previous handlers and wakeup fd are restored on exit.
    """
    STOP.clear()
    _WAKE["signals"] = 0
    main = threading.current_thread() is threading.main_thread()
    handlers, old_fd, pair = {}, None, None
    if main:
        pair = socket.socketpair()
        for sock in pair:
            sock.setblocking(False)
        old_fd = signal.set_wakeup_fd(pair[1].fileno())
        _WAKE["sock"] = pair[0]
        handlers = {sig: signal.signal(sig, _on_signal) for sig in _SIGNALS}
    try:
        yield
    finally:
        if main:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(old_fd)
            _WAKE["sock"] = None
            for sock in pair:
                sock.close()
        STOP.clear()
        LIVE["progress"] = None


class Progress:
    """A tqdm bar moved by the chunk's polls, with the chunk's finite quantities after it."""

    def __init__(self, total: int, step0: int, desc: str = "fit", unit: str = "step"):
        from tqdm.auto import tqdm

        self.step0 = step0
        self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
        self._lock = threading.Lock()
        LIVE["progress"] = self.at

    def at(self, step: int) -> None:
        with self._lock:
            n = min(self.bar.total, step - self.step0)
            if n > self.bar.n:
                self.bar.update(n - self.bar.n)

    def show(self, step: int, **values: float) -> None:
        """The bar at ``step``, with the values that are finite.

        A strategy without log Z (PCD, CD) shows none of the weighted quantities.
        """
        self.at(step)
        shown = {k: f"{v:.3f}" for k, v in values.items() if np.isfinite(v)}
        if shown:
            self.bar.set_postfix(shown)

    def close(self) -> None:
        LIVE["progress"] = None
        self.bar.close()


class LiveCall:
    """The host side of one long compiled call with a live bar (``sample``, ``diagnose``...).

    ``every`` is the call's argument for :func:`poll_at`: ``None`` without progress (no
    callback is compiled in), else a traced integer, so that its value never recompiles. The
    first poll (step 0, once compiled) starts the clock; :meth:`done` reads it and keeps the
    step time under ``key``, which spaces the polls of the next call with that ``key``
    about ``POLL_SECONDS`` apart. ``position(step, *values)`` maps a poll to the bar (default:
    the step).
    """

    def __init__(
        self, key: tuple, total: int, desc: str, progress: bool, position=None, unit="step"
    ):
        self.key, self.total, self.position = key, int(total), position
        self.first: tuple[float, int] | None = None
        self.bar, self.every = None, None
        if progress:
            self.every = jnp.asarray(poll_every(step_seconds(key)), jnp.int32)
            self.bar = Progress(self.total, 0, desc, unit)
            LIVE["progress"] = self.at

    def at(self, step: int, *values: float) -> None:
        if self.first is None:  # compiled and running: the bar's clock (rate, ETA) starts here
            self.first = (time.perf_counter(), step)
            if self.bar is not None:
                self.bar.bar.reset()
        if self.bar is not None:
            self.bar.at(step if self.position is None else self.position(step, *values))

    def done(self, out: Any, steps: int | None = None) -> Any:
        """``out`` once computed, and the bar at its total.

        The step time is kept under the call's key (``steps`` taken; default the total).
        """
        wait((), also=out)
        if self.bar is not None:
            steps = self.total if steps is None else int(steps)
            if self.first is not None and steps > self.first[1]:
                seconds = (time.perf_counter() - self.first[0]) / (steps - self.first[1])
                step_seconds(self.key, seconds)
            self.bar.at(self.total)
        return out

    def show(self, **values: float) -> None:
        """The finite ``values`` after the bar (the call's results)."""
        if self.bar is not None:
            self.bar.show(self.total, **values)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def live_call(
    key: tuple, total: int, desc: str, progress: bool, position=None, unit: str = "step"
) -> Iterator[LiveCall]:
    """The scope of one long compiled call: its bar, and Ctrl-C that ends it at a poll.

    A call keeps no partial result: with progress, the first Ctrl-C or SIGTERM raises
    ``KeyboardInterrupt`` at the call's next poll (:data:`ABORT`); without progress there is
    no poll, and the signals keep their handlers.
    """
    call = LiveCall(key, total, desc, progress, position, unit)
    if not progress:
        yield call
        return
    try:
        with running():
            ABORT.set()
            try:
                yield call
            except Exception:
                if STOP.is_set():  # the poll's KeyboardInterrupt, as the call's error
                    raise KeyboardInterrupt from None
                raise
    finally:
        ABORT.clear()
        call.close()


class _QuietStop(logging.Filter):
    """JAX logs every exception of a callback; a stop request raised by the poll is no error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, KeyboardInterrupt)


logging.getLogger("jax._src.callback").addFilter(_QuietStop())
