"""The timing scripts and the log Z study behind documented numbers run at a tiny size.

Each documented number names the script that printed it; these runs check that every such
script still runs against the current package (its options, the names it imports, what it
returns), not its timings, which are measured only at full size, side by side in one process.
The study scripts have theirs in ``test_benchmarks.py``; the flow family's is here. The runs
that take over 15 s on 2 cores (compiling every strategy they time) are marked ``slow``, so
that the default run keeps within its 20-minute budget; run them with ``-m slow`` after a
change to ``benchmarks/``.
"""

import math
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from _scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
TINY_FIT = ["--dim", "4", "--num-walkers", "64", "--reps", "2", "--warmup", "4"]


@pytest.fixture(autouse=True)
def _benchmarks_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as when a script runs from its folder


def _load(name):
    return load_script(BENCHMARKS / f"{name}.py")


def _all_positive(times):
    values = [t for ts in times.values() for t in (ts if isinstance(ts, list) else [ts])]
    return bool(values) and all(math.isfinite(t) and t > 0 for t in values)


@pytest.mark.slow  # about 30 s: six strategies and two bare scans
def test_overhead_runs_tiny_with_the_bare_scans():
    names = ["Jarzynski", "PCD", "Jarzynski-nocorr", "Jarzynski-fullcheck", "Bare-Jarzynski"]
    names += ["Bare-PCD"]
    argv = TINY_FIT + ["--n-data", "100", "--steps", "4", "--record-every", "2"]
    times = _load("overhead").main(argv + ["--min-seconds", "0", "--strategies", *names])
    assert list(times) == names and all(len(t) == 2 for t in times.values())
    assert _all_positive(times)


def test_components_runs_tiny():
    times = _load("components").main(
        ["--dim", "4", "--num-walkers", "64", "--n-data", "100", "--inner", "2", "--reps", "1"]
    )
    assert "Jarzynski evaluation (incl. move)" in times and _all_positive(times)


def test_resampling_cost_runs_tiny():
    mod = _load("resampling_cost")
    out = mod.main(["--sizes", "64", "--dim", "4", "--steps", "3", "--reps", "1"])
    assert list(out[64]) == list(mod.VARIANTS) and _all_positive(out[64])


@pytest.mark.slow  # about 20 s
def test_progress_overhead_runs_tiny(tmp_path):
    path = tmp_path / "p.txt"
    summary = _load("progress_overhead").main(["--tiny", "--out", str(path)])
    assert set(summary) == {"sample", "diagnose"}
    for row in summary.values():
        assert row["on"]["median_ratio"] > 0 and row["never"]["min_ratio"] > 0
    assert path.read_text().count("paired median") == 4


@pytest.mark.slow  # about 30 s: compiles the conv energy's strategies
def test_digits_step_runs_tiny():
    argv = ["--num-walkers", "16", "--walker-batch", "8", "--batch-size", "8"]
    argv += ["--channels", "2", "2", "2", "--steps", "2", "--record-every", "1"]
    argv += ["--min-seconds", "0", "--warmup", "2", "--reps", "1"]
    times = _load("digits_step").main(argv + ["--strategies", "J-batch", "PCD"])
    assert list(times) == ["J-batch", "PCD"] and _all_positive(times)


@pytest.mark.slow  # 15-30 s each
@pytest.mark.parametrize("start", ["model", "exact"])
def test_ggm_log_z_path_runs_tiny(start):
    rows = _load("ggm_log_z_path").main(["--tiny", "--start", start, "--seeds", "0"])
    (row,) = rows
    assert np.isfinite(row["log_Z_err"]) and np.isfinite(row["rel_err_vs_mle"])
    assert 0 < row["drivers_min_ess"] <= 1 and row["resamplings"] >= 0


@pytest.mark.slow  # about 30 s: a checkout of HEAD and two packages
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_overhead_ab_runs_tiny_against_head():
    """In a subprocess: the script imports the other commit's package beside this one."""
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    argv = ["--ref", "HEAD", *TINY_FIT, "--steps", "3"]
    cmd = [sys.executable, str(BENCHMARKS / "overhead_ab.py"), *argv]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    for strategy in ("Jarzynski", "PCD", "Unweighted"):
        assert any(line.startswith(f"new/old {strategy}") for line in lines), out.stdout
    assert sum("Jarzynski/PCD" in line for line in lines) == 2


@pytest.mark.slow  # about 40 s: compiles the two flow strategies
def test_flows_family_runs_tiny(tmp_path):
    argv = ["--mixtures", "1", "--steps", "10", "--walkers", "32", "--lr-final", "0.01"]
    argv += ["--only", "FlowMC,flow-Jarzynski", "--out", str(tmp_path / "f.json")]
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes int and float
        out = _load("flows_family").main(argv)
    assert out["complete"] and out["config"]["lr_final"] == 0.01
    for name in ("FlowMC", "flow-Jarzynski"):
        s = out["summary"][name]
        assert s["runs"] + s["diverged"] == 1 and not s["warnings"]
