"""Property-based checks of ``fit``'s argument validation: any input either runs or raises
``ValueError``/``TypeError`` with a message, never a JAX-internal error or a silent NaN."""

import math

import jax
import numpy as np
import optax
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import smc_ebm as se

DATA = np.asarray(se.datasets.two_mode_teacher(jax.random.key(0), n=64, dim=2).samples)
ENERGY = se.energies.GaussianMixture.init(jax.random.key(1), 2, 2, scale=0.1)
OPTIMIZER = optax.sgd(0.01)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ints = st.one_of(st.integers(-3, 12), st.sampled_from([0, 1, 2**31, 2**63, 1.5, True, "3"]))
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([0.1, 0.5])
)


def _run_or_refuse(call):
    try:
        return call()
    except (ValueError, TypeError) as err:
        assert str(err), "an error without a message"
        return None


def _fit(strategy, data=DATA, num_steps=2, **kw):
    return se.fit(
        ENERGY,
        data,
        strategy=strategy,
        optimizer=OPTIMIZER,
        num_steps=num_steps,
        key=jax.random.key(2),
        progress=False,
        **kw,
    )


@SETTINGS
@given(
    num_steps=st.integers(-2, 6),
    record_every=ints,
    chunk_size=ints,
    batch_size=st.one_of(st.none(), ints),
    trace_walkers=ints,
    checkpoint_every=st.one_of(st.none(), ints),
)
def test_fit_loop_arguments_run_or_are_refused(
    num_steps, record_every, chunk_size, batch_size, trace_walkers, checkpoint_every
):
    result = _run_or_refuse(
        lambda: _fit(
            se.PCD(8, 0.1),
            num_steps=num_steps,
            record_every=record_every,
            chunk_size=chunk_size,
            batch_size=batch_size,
            trace_walkers=trace_walkers,
            checkpoint_every=checkpoint_every,
        )
    )
    if result is not None:
        assert result.steps == num_steps
        assert np.all(np.isfinite(np.asarray(result.walkers)))


@settings(SETTINGS, max_examples=20)  # each example compiles a fit: half of the others' budget
@given(
    num_walkers=st.integers(-1, 9),
    step_size=floats,
    threshold=floats,
    kernel=st.sampled_from(["ula", "mala", "hmc", ""]),
)
def test_jarzynski_hyperparameters_run_or_are_refused(num_walkers, step_size, threshold, kernel):
    def call():
        resampling = se.ESSResampling(threshold)
        return _fit(
            se.Jarzynski(num_walkers, step_size, resampling=resampling, kernel=kernel), num_steps=3
        )

    try:
        result = _run_or_refuse(call)
    except se.TrainingError as err:  # a huge but finite step size: named, with the last state
        assert math.isfinite(step_size) and step_size > 0, err
        return
    if result is not None:
        assert math.isfinite(step_size) and step_size > 0
        assert np.all(np.isfinite(np.asarray(result.walkers)))


@SETTINGS
@given(
    rows=st.integers(0, 5),
    cols=st.integers(0, 3),
    fill=st.sampled_from([0.0, np.nan, np.inf, 1e38]),
    dtype=st.sampled_from([np.float32, np.float64, np.int32, np.bool_]),
)
def test_bad_data_run_or_are_refused(rows, cols, fill, dtype):
    with np.errstate(invalid="ignore", over="ignore"):
        data = np.full((rows, cols), fill).astype(dtype)

    try:
        result = _run_or_refuse(lambda: _fit(se.PCD(8, 0.1), data))
    except se.TrainingError:  # huge finite data: named, with the last finite state
        assert fill == 1e38
        return
    if result is not None:
        assert np.all(np.isfinite(np.asarray(result.walkers)))


# --------------------------------------------------------------------------- run configs
CONFIG = """
name = "p"
seed = 0
steps = 3
record_every = 1

[dataset]
name = "two_mode_teacher"
n = 64
dim = 2

[energy]
name = "GaussianMixture"
num_modes = 2
scale = 0.5

[strategy]
name = "Jarzynski"
num_walkers = 16
step_size = 0.1
resampling = { name = "ESSResampling", threshold = 0.5 }

[optimizer]
name = "sgd"
learning_rate = 0.05

[diagnostics]
num_chains = 4
num_steps = 10

[sample]
num_walkers = 16
num_steps = 5
"""
KEYS = [
    ("name",),
    ("seed",),
    ("steps",),
    ("record_every",),
    ("checkpoint_every",),
    ("dataset", "name"),
    ("dataset", "n"),
    ("dataset", "dim"),
    ("energy", "name"),
    ("energy", "num_modes"),
    ("energy", "scale"),
    ("strategy", "name"),
    ("strategy", "num_walkers"),
    ("strategy", "step_size"),
    ("strategy", "resampling"),
    ("optimizer", "name"),
    ("optimizer", "learning_rate"),
    ("diagnostics", "num_chains"),
    ("diagnostics", "kernel"),
    ("sample", "num_walkers"),
    ("sample", "num_steps"),
    ("extra",),
    ("strategy", "extra"),
]
# What a TOML file can hold (no null); sizes stay small enough to build.
VALUES = st.one_of(
    st.integers(-3, 300),
    st.sampled_from([2**70, 1.5, "3", True, "../x", "", "sgd", "PCD", "ula", [1, 2], {}]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.dictionaries(st.sampled_from(["name", "threshold", "x"]), st.integers(0, 3), max_size=2),
)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(edits=st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=3))
def test_run_configs_are_planned_or_refused_with_a_message(edits):
    """``smc-ebm fit``'s checks before training (``runs.plan_run``) on a valid config with one
    to three values replaced: the plan is made or ``ValueError`` names the problem; never
    another exception, and nothing is written."""
    import copy
    import tempfile
    import tomllib
    from pathlib import Path

    from smc_ebm.runs._plan import plan_run

    cfg = copy.deepcopy(tomllib.loads(CONFIG))
    for path, value in edits:
        node = cfg
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        try:
            plan_run(cfg, out)
        except ValueError as err:
            assert str(err), "an error without a message"
        assert not out.exists()
