"""Exact resume, checkpoints on disk, and Ctrl-C: nothing done is lost.

Step ``k`` draws its random numbers from ``(key, k)`` alone and chunks are aligned with the
absolute step, so any split of a run into resumed pieces (through a ``FitResult`` or a
checkpoint directory) gives the uninterrupted run bitwise: walkers, parameters, history, traces.
"""

import json
import os
import signal
import threading
import time
import warnings

import jax
import numpy as np
import optax
import pytest

import smc_ebm as se
from smc_ebm.energies import GaussianMixture


def _problem():
    data = se.datasets.two_mode_teacher(jax.random.key(0), n=300, dim=2).samples
    return GaussianMixture.init(jax.random.key(1), 2, 2, scale=0.1), data


# One optimizer object: an equal one built anew would be another key of the compiled-chunk cache.
OPTIMIZER = optax.sgd(0.01, momentum=0.9)


def _kw(**over):
    kw = dict(
        strategy=se.Jarzynski(64, 0.2, resampling=se.ESSResampling(0.9)),
        optimizer=OPTIMIZER,
        key=jax.random.key(2),
        progress=False,
        record_every=3,
        chunk_size=7,  # 6 steps per chunk: chunks end neither at 17 nor at 40
        trace_walkers=4,
        metrics={"mean_sum": lambda e: e.means.sum()},
    )
    kw.update(over)
    return kw


def _fit(num_steps, **over):
    energy, data = _problem()
    return se.fit(energy, data, num_steps=num_steps, **_kw(**over))


def _assert_same_run(a, b):
    assert a.steps == b.steps
    np.testing.assert_array_equal(np.asarray(a.walkers), np.asarray(b.walkers))
    np.testing.assert_array_equal(np.asarray(a.log_weights), np.asarray(b.log_weights))
    for x, y in zip(jax.tree.leaves(a.energy), jax.tree.leaves(b.energy), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for x, y in zip(jax.tree.leaves(a.opt_state), jax.tree.leaves(b.opt_state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert set(a.history) == set(b.history)
    for name in a.history:
        np.testing.assert_array_equal(a.history[name], b.history[name], err_msg=name)
    assert (a.traces is None) == (b.traces is None)
    for name in a.traces or {}:
        np.testing.assert_array_equal(a.traces[name], b.traces[name], err_msg=name)


@pytest.fixture(scope="module")
def straight():
    return _fit(40)


def test_resumed_pieces_equal_the_straight_run(straight):
    """17 + 23 steps (17 is neither a chunk nor a record boundary) and 12 + 9 + 19."""
    assert straight.history["step"].tolist() == list(range(0, 40, 3))
    first = _fit(17)
    _assert_same_run(straight, _fit(23, resume=first))
    r = _fit(12)
    r = _fit(9, resume=r)
    _assert_same_run(straight, _fit(19, resume=r))


def test_resume_with_the_feedback_correction_is_exact():
    """The feedback correction (SGD) and observers carry more state, and the walkers' kernel
    is an object (two MALA steps a move), built anew for each piece: a split changes
    nothing."""

    optimizer = optax.sgd(0.05)  # one object: the compiled chunks are reused

    def over():
        kernel = se.kernels.Repeated(se.kernels.MALA(0.2), 2)
        strategy = se.Jarzynski(64, 0.2, kernel=kernel, num_observers=16, feedback_correction=True)
        return dict(strategy=strategy, optimizer=optimizer, record_every=1, chunk_size=5)

    straight = _fit(14, **over())
    assert np.all(straight.history["acceptance"] < 1.0)  # MALA's moves, some rejected
    _assert_same_run(straight, _fit(6, resume=_fit(8, **over()), **over()))


def test_checkpoints_on_disk_resume_the_straight_run(straight, tmp_path):
    path = tmp_path / "ckpt"
    first = _fit(19, checkpoint=path, checkpoint_every=6)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["step"] == 19 and manifest["format_version"] == 1
    assert manifest["num_walkers"] == 64 and manifest["dim"] == 2
    assert "Jarzynski" in manifest["strategy_type"]
    assert sorted(os.listdir(path)) == sorted(["manifest.json", *manifest["files"]])
    _assert_same_run(straight, _fit(21, resume=path))
    # The checkpoint of step 12 (every 6 steps) is the state of the run at step 12.
    _assert_same_run(_fit(12), _fit(0, resume=_checkpoint_at(12, tmp_path)))
    assert first.steps == 19


def _checkpoint_at(step, tmp_path):
    path = tmp_path / f"at{step}"
    _fit(step, checkpoint=path, checkpoint_every=6)
    return path


def test_a_flipped_byte_is_detected(tmp_path):
    path = tmp_path / "ckpt"
    _fit(6, checkpoint=path)
    manifest = json.loads((path / "manifest.json").read_text())
    name = next(n for n in manifest["files"] if n.startswith("state"))
    blob = bytearray((path / name).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (path / name).write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=f"corrupted checkpoint file .*{name}"):
        _fit(3, resume=path)
    (path / name).write_bytes(bytes(blob[:10]))  # truncated
    with pytest.raises(ValueError, match=name):
        _fit(3, resume=path)
    with pytest.raises(ValueError, match="no checkpoint"):
        _fit(3, resume=tmp_path / "nowhere")


@pytest.mark.parametrize(
    "over, match",
    [
        (dict(strategy=se.Jarzynski(64, 0.1, resampling=se.ESSResampling(0.9))), "step_size"),
        (dict(strategy=se.PCD(64, 0.2)), "type Jarzynski != PCD"),
        (dict(optimizer=optax.sgd(0.01)), "optimizer state"),
    ],
)
def test_resume_of_another_run_is_refused(over, match, tmp_path):
    first = _fit(3, checkpoint=tmp_path / "c")
    with pytest.raises(ValueError, match=match):
        _fit(3, resume=first, **over)
    with pytest.raises(ValueError, match="cannot resume"):
        _fit(3, resume=tmp_path / "c", **over)


def test_resume_with_another_energy_or_size_is_refused(tmp_path):
    first = _fit(3, checkpoint=tmp_path / "c")
    energy3 = GaussianMixture.init(jax.random.key(1), 3, 2, scale=0.1)
    _, data = _problem()
    for resume in (first, tmp_path / "c"):
        with pytest.raises(ValueError, match="energy structure"):
            se.fit(energy3, data, num_steps=3, resume=resume, **_kw())
    with pytest.raises(ValueError, match="num_walkers"):
        _fit(3, resume=first, strategy=se.Jarzynski(32, 0.2, resampling=se.ESSResampling(0.9)))


def test_another_key_warns(tmp_path):
    first = _fit(3)
    with pytest.warns(UserWarning, match="another key"):
        _fit(3, resume=first, key=jax.random.key(9))


def test_checkpoint_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="multiple of record_every"):
        _fit(3, checkpoint=tmp_path / "c", checkpoint_every=4)
    with pytest.raises(ValueError, match="checkpoint=PATH"):
        _fit(3, checkpoint_every=3)


def test_ctrl_c_keeps_the_finished_chunks_and_resumes_exactly():
    """SIGINT from a timer thread during a long fit: the result holds every step done
    (``interrupted=True``), and resuming it gives the uninterrupted run."""
    over = dict(chunk_size=6, trace_walkers=0, metrics=None)
    _fit(6, **over)  # compile first, so that the interrupt lands in the loop
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.warns(UserWarning, match="interrupted after"):
            cut = _fit(100_000, **over)
    finally:
        timer.cancel()
    assert cut.interrupted and 0 < cut.steps < 100_000
    assert cut.history["step"].tolist() == list(range(0, cut.steps, 3))
    assert np.all(np.isfinite(cut.history["ess"]))
    rest = 9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resumed = _fit(rest, resume=cut, **over)
    _assert_same_run(_fit(cut.steps + rest, **over), resumed)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_inside_a_chunk_within_a_second(sig):
    """One compiled chunk for a run of several seconds: a signal sent one second in stops
    the chunk at its next poll (polls are about ``POLL_SECONDS`` = 0.5 s apart), not at its
    end; the steps done are kept, and resuming gives the uninterrupted run bitwise.

    The polls are spaced from a step time measured before the run; with another process on
    the same cores (the suite runs in two workers) a step can take twice as long, and so the
    wait is bounded by two poll intervals and a second of slack. ``cut.steps < n`` is what
    tells a stop at a poll from a stop at the chunk's end."""
    from smc_ebm import _live

    n = 400_000  # several seconds of 64 walkers in 2-d on a CPU
    over = dict(chunk_size=n, trace_walkers=0, metrics=None, record_every=1)
    _fit(10, **over)  # compiles the chunk and times a step
    sent = {}

    def send():
        sent["time"] = time.perf_counter()
        os.kill(os.getpid(), sig)

    timer = threading.Timer(1.0, send)
    timer.start()
    try:
        with pytest.warns(UserWarning, match="interrupted after"):
            cut = _fit(n, **over)
    finally:
        timer.cancel()
    waited = time.perf_counter() - sent["time"]
    assert cut.interrupted and 0 < cut.steps < n, cut.steps
    assert waited < 2 * _live.POLL_SECONDS + 1.0, waited
    assert cut.history["step"].tolist() == list(range(cut.steps))
    rest = 7
    _assert_same_run(_fit(cut.steps + rest, **over), _fit(rest, resume=cut, **over))
    assert signal.getsignal(sig) is not _live._on_signal  # handlers restored
