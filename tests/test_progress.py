"""Live progress of sample and diagnose: the bar ends at its total, the polls come once per
step group (not once per run or chain), the results do not depend on the bar, and without
progress no callback is compiled in."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import smc_ebm as se
from smc_ebm import _live
from smc_ebm import _sample as sample_module
from smc_ebm.diagnostics import _diagnose as diagnose_module

N_STEPS = 32  # 4 polls at FIRST_POLL_EVERY = 8 before a step has been timed


@pytest.fixture(scope="module")
def gmm():
    return se.energies.GaussianMixture(
        means=jnp.array([[-2.0, 0.0], [2.0, 1.0]]), logits=jnp.array([0.0, 0.5]), sigma=1.0
    )


@pytest.fixture
def polls(monkeypatch):
    """The steps reported by the polls, and the (position, total) of every bar at its close."""
    seen = {"steps": [], "bars": []}
    at, close = _live.LiveCall.at, _live.Progress.close

    def counting_at(self, step, *values):
        seen["steps"].append(step)
        at(self, step, *values)

    def recording_close(self):
        seen["bars"].append((self.bar.n, self.bar.total))
        close(self)

    monkeypatch.setattr(_live.LiveCall, "at", counting_at)
    monkeypatch.setattr(_live.Progress, "close", recording_close)
    monkeypatch.setattr(_live, "_STEP_SECONDS", {})  # no step timed yet: every 8 steps
    return seen


def _sample(gmm, progress):
    return se.sample(
        gmm, key=jax.random.key(1), num_walkers=64, num_steps=N_STEPS, num_runs=4, progress=progress
    )


def _diagnose(gmm, progress):
    x0 = jax.random.normal(jax.random.key(2), (16, 2))
    return se.diagnose(
        gmm, key=jax.random.key(3), init=x0, num_chains=16, num_steps=24, thin=3, num_warmup=8,
        kernel="ula", step_size=0.1, progress=progress,
    )  # fmt: skip


def test_sample_polls_once_per_step_group_and_ends_at_its_total(gmm, polls):
    on = _sample(gmm, True)
    # One poll per 8 steps of all 4 runs (a poll under the runs' vmap would come 4 times).
    assert polls["steps"] == [0, 8, 16, 24]
    assert polls["bars"] == [(N_STEPS, N_STEPS)]
    assert _live.step_seconds(next(iter(_live._STEP_SECONDS))) > 0  # timed for the next call
    off = _sample(gmm, False)
    assert len(polls["steps"]) == 4 and len(polls["bars"]) == 1  # no bar, no poll
    for field in ("samples", "log_weights", "resampled", "log_Z_runs", "num_resamplings"):
        np.testing.assert_array_equal(getattr(on, field), getattr(off, field), err_msg=field)
    assert on.log_Z == off.log_Z and on.acceptance == off.acceptance


def test_diagnose_polls_the_steps_and_ends_at_its_total(gmm, polls):
    on = _diagnose(gmm, True)
    # 8 warm-up steps then 24 recorded ones: polls at every 8th step of all 16 chains.
    assert polls["steps"] == [0, 8, 16, 24]
    assert polls["bars"] == [(32, 32)]
    off = _diagnose(gmm, False)
    assert len(polls["steps"]) == 4 and len(polls["bars"]) == 1
    post_on, post_off = on.idata["posterior"], off.idata["posterior"]
    np.testing.assert_array_equal(post_on["x"].values, post_off["x"].values)
    np.testing.assert_array_equal(on.table.values, off.table.values)


def test_later_calls_poll_by_the_measured_step_time_without_compiling_again(gmm, polls):
    _sample(gmm, True)
    _diagnose(gmm, True)
    sizes = (sample_module._run._cached._cache_size(), diagnose_module._run_chains._cached)
    sizes = (sizes[0], sizes[1]._cache_size())
    polls["steps"].clear()
    _sample(gmm, True)  # timed now: a step takes far less than POLL_SECONDS / 32
    _diagnose(gmm, True)
    assert polls["steps"] == [0, 0]  # only the first poll of each call, which starts its clock
    after = (sample_module._run._cached._cache_size(), diagnose_module._run_chains._cached)
    assert (after[0], after[1]._cache_size()) == sizes


def test_without_progress_no_callback_is_compiled_in(gmm):
    x0 = jnp.zeros((2, 8, 2))
    keys = jax.random.split(jax.random.key(0), 2)
    base = se.energies.Gaussian.standard(2)
    resampling = se.ESSResampling(0.5, "systematic")

    def hlo(every):
        lowered = sample_module._run.lower(keys, gmm, base, x0, 4, 0.1, "ula", resampling, every)
        return lowered.as_text()

    assert "callback" not in hlo(None)
    assert "callback" in hlo(jnp.asarray(8, jnp.int32))
