"""`smc-ebm fit` killed with SIGKILL at chosen moments, then `--resume`d: every resumed run
ends with the uninterrupted run's files, bitwise.

The run is a child process (``tests/_killable.py``) killed: before its first run.json is
whole, while it compiles, half-way through a checkpoint's parameter file, half-way through a
checkpoint's manifest, between two checkpoints, half-way through the run's walkers file after
training, and half-way through the final run.json after the figures. The default suite kills
at two of these moments; ``-m slow`` at all seven.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import smc_ebm
from smc_ebm.cli import main

KILLABLE = Path(__file__).with_name("_killable.py")
ROOT = Path(smc_ebm.__file__).resolve().parent.parent

CONFIG = """
name = "faults"
seed = 3
steps = 400
record_every = 5
chunk_size = 100
checkpoint_every = 20

[dataset]
name = "two_mode_teacher"
n = 200
dim = 2
a = -3.0
b = 3.0

[energy]
name = "GaussianMixture"
num_modes = 2
scale = 0.5

[strategy]
name = "Jarzynski"
num_walkers = 64
step_size = 0.1
resampling = { name = "ESSResampling", threshold = 0.8 }

[optimizer]
name = "sgd"
learning_rate = 0.05
momentum = 0.5

[diagnostics]
enabled = false  # (their cost, about 5 s a run, buys nothing here)

[sample]
num_walkers = 64
num_steps = 10
num_runs = 2
"""

# The files a complete run writes, compared bitwise (and the checkpoint's); run.json holds
# times, and the figures are drawn from these arrays.
COMPARED = ["history.npz", "walkers.npz", "energy.eqx", "samples.npy"]


def _checkpoint_step(out):
    try:
        return json.loads((out / "checkpoint" / "manifest.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


# name -> (environment of the child, when to kill it)
MOMENTS = {
    "first run.json half-written": ({"STALL": "run.json:1"}, "mark"),
    "compiling, before any checkpoint": (
        {},
        lambda out: (out / "run.json").is_file() and _checkpoint_step(out) < 0,
    ),
    "checkpoint 3's parameters half-written": ({"STALL": "params-:3"}, "mark"),
    "checkpoint 5's manifest half-written": ({"STALL": "manifest.json:5"}, "mark"),
    "between checkpoints, past step 200": (
        {"PAUSE": "0.05"},
        lambda out: _checkpoint_step(out) >= 200,
    ),
    "after training, walkers.npz half-written": ({"STALL": "walkers.npz:1"}, "mark"),
    "after the figures, final run.json half-written": ({"STALL": "run.json:2"}, "mark"),
}
# The checkpoint's step when each kill landed (-1: none yet).
EXPECTED = {
    "first run.json half-written": lambda step: step == -1,
    "compiling, before any checkpoint": lambda step: step == -1,
    "checkpoint 3's parameters half-written": lambda step: step == 40,
    "checkpoint 5's manifest half-written": lambda step: step == 80,
    "between checkpoints, past step 200": lambda step: 200 <= step < 400,
    "after training, walkers.npz half-written": lambda step: step == 400,
    "after the figures, final run.json half-written": lambda step: step == 400,
}
DEFAULT = ["checkpoint 3's parameters half-written", "after training, walkers.npz half-written"]


def _kill_at(cfg, out, env_extra, when, tmp_path, timeout=180.0, before_kill=None):
    """Run the child until ``when`` holds, then SIGKILL it; what the run left is in ``out``.

    ``before_kill()`` runs while the child is still alive at that moment.
    """
    mark = tmp_path / f"mark-{out.name}"
    env = {**os.environ, **env_extra, "MARK": str(mark)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    log = tmp_path / f"log-{out.name}.txt"
    args = [sys.executable, str(KILLABLE), "fit", str(cfg), "--out", str(out), "--no-progress"]
    with open(log, "w") as err:
        proc = subprocess.Popen(args, env=env, stdout=err, stderr=err)
        start = time.monotonic()
        try:
            while not (mark.exists() if when == "mark" else when(out)):
                if proc.poll() is not None:
                    pytest.fail(f"the run ended (rc {proc.returncode}) first:\n{log.read_text()}")
                if time.monotonic() - start > timeout:
                    pytest.fail(f"no kill point within {timeout} s:\n{log.read_text()}")
                time.sleep(0.002)
            if before_kill is not None:
                before_kill()
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return _checkpoint_step(out)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    cfg = root / "faults.toml"
    cfg.write_text(CONFIG)
    out = root / "straight"
    assert main(["fit", str(cfg), "--out", str(out), "--no-progress"]) == 0
    return cfg, out


def _same_run(a, b):
    for name in COMPARED:
        if name.endswith(".npz"):
            x, y = np.load(a / name), np.load(b / name)
            assert sorted(x.files) == sorted(y.files), name
            for k in x.files:
                np.testing.assert_array_equal(x[k], y[k], err_msg=f"{name}:{k}")
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ca, cb = sorted((a / "checkpoint").iterdir()), sorted((b / "checkpoint").iterdir())
    assert [p.name for p in ca] == [p.name for p in cb]
    for p, q in zip(ca, cb, strict=True):
        if p.name != "manifest.json":
            assert p.read_bytes() == q.read_bytes(), p.name
    ma, mb = json.loads((a / "run.json").read_text()), json.loads((b / "run.json").read_text())
    assert mb["status"] == "complete" and mb["steps_done"] == ma["steps_done"] == 400
    assert set(ma["files"]) == set(mb["files"])
    assert ma["diagnostics"] == mb["diagnostics"] and ma["sample"] == mb["sample"]
    assert not [p.name for p in b.iterdir() if p.name.endswith(".tmp")]


def _kill_then_resume(straight, tmp_path, moment, before_kill=None):
    cfg, reference = straight
    env_extra, when = MOMENTS[moment]
    out = tmp_path / "killed"
    step = _kill_at(cfg, out, env_extra, when, tmp_path, before_kill=lambda: before_kill(out))
    assert EXPECTED[moment](step), (moment, step)
    if "half-written" in moment:  # the kill landed inside an atomic write
        assert list(out.rglob("*.tmp")), moment
    if (out / "run.json").is_file():
        meta = json.loads((out / "run.json").read_text())
        assert meta["status"] == "running", moment  # killed: nobody wrote an end
        assert main(["fit", "--resume", str(out), "--no-progress"]) == 0, moment
    else:  # killed before its first run.json was whole: --resume with the config starts it
        assert main(["fit", str(cfg), "--out", str(out), "--resume", "--no-progress"]) == 0
    _same_run(reference, out)
    return step


@pytest.mark.parametrize("moment", DEFAULT)
def test_killed_runs_resume_to_the_uninterrupted_run_bitwise(straight, tmp_path, moment, capsys):
    def in_use(out):  # while the child runs, no other process may resume or replace its run
        before = sorted(p.name for p in out.iterdir())
        assert main(["fit", "--resume", str(out), "--no-progress"]) == 2
        assert main(["fit", str(straight[0]), "--out", str(out), "--overwrite"]) == 2
        assert capsys.readouterr().err.count("in use by another smc-ebm process") == 2
        assert sorted(p.name for p in out.iterdir()) == before

    _kill_then_resume(straight, tmp_path, moment, before_kill=in_use)


@pytest.mark.slow
@pytest.mark.parametrize("moment", [m for m in MOMENTS if m not in DEFAULT])
def test_killed_runs_resume_bitwise_at_more_moments(straight, tmp_path, moment):
    _kill_then_resume(straight, tmp_path, moment, before_kill=lambda out: None)
