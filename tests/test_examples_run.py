"""Every example runs end to end at a tiny size, as a user would start it (a subprocess).

The tiny sizes only check that each script's code path works (arguments, training, the
printed table, the files it writes); the examples' numbers are measured at full size by the
commands in docs/. Each takes 10-40 s on 2 cores (a Python start, JAX's import and the
compilation of every strategy the example trains). The four cheapest (about 100 s together
on 2 cores beside another worker) run in the default suite; the flow and posterior examples
and the dual restart sweep (whose strategy the dual comparison also trains; about 130 s
together) run with the slow tests.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

TINY = {
    "dual_primal_vs_dual": "--dim 3 --width 8 --n-data 200 --num-test 200 --num-walkers 32 "
    "--steps-primal 40 --steps-dual 20 --record-every 10 --teachers bimodal",
    "dual_restart_sweep": "--dim 3 --width 8 --n-data 200 --num-test 200 --num-walkers 32 "
    "--steps 40 --record-every 10",
    "flowmc_density": "--steps 20 --walkers 32 --sets eight_gaussians --out {tmp}/density.png",
    "flowmc_highdim": "--dims 4 --steps 20 --walkers 32 --chain-steps 10",
    "gmm_teacher_student": "--dim 3 --n-data 500 --steps 40 --seeds 1 --record-every 10",
    "numpyro_ggm": "--dim 2 --n-data 200 --num-walkers 64 --steps 40 --out {tmp}",
    "numpyro_posterior": "--num-walkers 64 --num-runs 2 --dim 2 --nuts-draws 50 --out {tmp}",
    "score_matching_vs_jarzynski": "--dim 2 --n-data 200 --num-walkers 64 --steps 40 "
    "--record-every 10",
}
OUT_DIR = {
    "dual_primal_vs_dual",
    "dual_restart_sweep",
    "gmm_teacher_student",
    "score_matching_vs_jarzynski",
}  # these take --out-dir
PRINTS_ONLY = {"flowmc_highdim"}  # its printed table is its whole output


SLOW = {"dual_restart_sweep", "flowmc_density", "flowmc_highdim", "numpyro_posterior"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(TINY)]
)
def test_example_runs_at_a_tiny_size(name, tmp_path):
    args = TINY[name].format(tmp=tmp_path).split() + ["--no-progress"]
    if name in OUT_DIR:
        args += ["--out-dir", str(tmp_path)]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip(), "the example printed nothing"
    if name not in PRINTS_ONLY:
        assert any(tmp_path.rglob("*")), "the example wrote nothing into its output folder"
