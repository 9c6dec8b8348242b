"""The host side of a running ``fit``: stop requests, live progress, waiting that Ctrl-C can cut.

Ctrl-C and SIGTERM set :data:`STOP` during the loop (a second one raises
``KeyboardInterrupt``). The compiled chunk calls :func:`poll` (through :func:`ask_host`, an
unordered ``io_callback``) every ``poll_every`` steps. The call reports the step to the live
progress bar and answers whether a stop was asked for; a stop ends the chunk at that step,
and ``fit`` keeps every step done. ``fit`` chooses ``poll_every`` so that polls come about
``POLL_SECONDS`` apart, from the step time measured on the last chunk of the same compiled
function (also by an earlier call); before any step has been timed it polls every
``FIRST_POLL_EVERY`` steps. A poll is costly on the CPU backend (about 2.5 ms on a 2-core
machine: the callback interrupts the compiled loop), so it is kept rare: at one poll per
0.5 s it costs about 0.5%.

A process runs one ``fit`` loop at a time: :data:`STOP` and :data:`LIVE` are module state.
"""

from __future__ import annotations

import contextlib
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
LIVE: dict[str, Callable[[int], None] | None] = {"progress": None}
POLL_SECONDS = 0.5  # the time aimed for between two polls
FIRST_POLL_EVERY = 8  # steps between polls before a step has been timed
_STEP_SECONDS: dict[int, float] = {}  # id(compiled chunk) -> last measured seconds per step


_WAKE: dict[str, Any] = {"sock": None, "signals": 0}
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def poll(step: Any) -> np.ndarray:
    """Called from the compiled chunk every ``poll_every`` steps: ``True`` to stop."""
    report = LIVE["progress"]
    if report is not None:
        report(int(step))
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
    return np.asarray(STOP.is_set())


def ask_host(step: Any) -> Any:
    """The chunk's poll (traced): the host's answer, a boolean scalar."""
    return io_callback(poll, jax.ShapeDtypeStruct((), jnp.bool_), step, ordered=False)


def step_seconds(chunk: Any, seconds: float | None = None) -> float | None:
    """The last measured time of a step of ``chunk`` (and record ``seconds`` if given)."""
    if seconds is not None:
        if len(_STEP_SECONDS) > 256:
            _STEP_SECONDS.clear()
        _STEP_SECONDS[id(chunk)] = seconds
    return _STEP_SECONDS.get(id(chunk))


def poll_every(step_seconds: float | None) -> int:
    """Steps between two polls, about ``POLL_SECONDS`` apart."""
    if step_seconds is None or not step_seconds > 0:
        return FIRST_POLL_EVERY
    return max(1, min(2**30, math.floor(POLL_SECONDS / step_seconds)))


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

    def __init__(self, total: int, step0: int, desc: str = "fit"):
        from tqdm.auto import tqdm

        self.step0 = step0
        self.bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)
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
