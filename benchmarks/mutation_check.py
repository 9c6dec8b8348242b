"""Mutation check: plausible bugs in the SMC core must make the default test suite fail.

Each mutant is one textual change to the package (a 10% error in a term of the Jarzynski
increment, a wrong sign, a missing reset, ...). For each, the package is copied to a temporary
folder, the change applied, and the default suite's relevant test files run against the copy
(``-x``: the first failure kills the mutant; a test file of the default suite failing is enough to
make the default suite fail). The unmutated copy is run first as a control (it must pass). The
script prints, per mutant, killed (a test failed), SURVIVED, or BROKEN (an import or collection
error, which does not count as a kill), the test that killed it and the time, then the score.

    python benchmarks/mutation_check.py                  # all mutants (about 20-40 min on 2 cores)
    python benchmarks/mutation_check.py --only ais_sign  # one mutant
    python benchmarks/mutation_check.py --list
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (file, original text, mutated text, test files to run, most likely killer first)
MUTANTS = {
    "jarzynski_energy_term": (
        "smc_ebm/smc/_weights.py",
        "return u_old - u_new + 0.5 * row_sum(s * t)",
        "return 1.1 * u_old - u_new + 0.5 * row_sum(s * t)",
        ["tests/test_weights.py", "tests/test_strategies.py"],
    ),
    "jarzynski_cross_term": (
        "smc_ebm/smc/_weights.py",
        "return u_old - u_new + 0.5 * row_sum(s * t)",
        "return u_old - u_new + 0.55 * row_sum(s * t)",
        ["tests/test_weights.py", "tests/test_strategies.py"],
    ),
    "jarzynski_step_term": (
        "smc_ebm/smc/_weights.py",
        "t = (x_new - x_old) + (0.5 * step_size) * (g_old - g_new)",
        "t = (x_new - x_old) + (0.45 * step_size) * (g_old - g_new)",
        ["tests/test_weights.py", "tests/test_strategies.py"],
    ),
    "jarzynski_displacement_term": (
        "smc_ebm/smc/_weights.py",
        "t = (x_new - x_old) + (0.5 * step_size) * (g_old - g_new)",
        "t = 1.1 * (x_new - x_old) + (0.5 * step_size) * (g_old - g_new)",
        ["tests/test_weights.py", "tests/test_strategies.py"],
    ),
    "ais_sign": (
        "smc_ebm/smc/_weights.py",
        "    return u_old - u_new\n",
        "    return u_new - u_old\n",
        ["tests/test_weights.py", "tests/test_flowmc.py", "tests/test_sample.py"],
    ),
    "schedule_off_by_one": (
        "smc_ebm/smc/_resampling.py",
        "return (step >= self.start) & (jnp.mod(step - self.start, self.every) == 0)",
        "return (step >= self.start) & (jnp.mod(step + 1 - self.start, self.every) == 0)",
        ["tests/test_resampling.py", "tests/test_strategies.py", "tests/test_weights.py"],
    ),
    "ess_start_off_by_one": (
        "smc_ebm/smc/_resampling.py",
        "return (ess < c) & (step >= self.start)",
        "return (ess < c) & (step > self.start)",
        ["tests/test_resampling.py", "tests/test_strategies.py", "tests/test_weights.py"],
    ),
    "no_weight_reset": (
        "smc_ebm/smc/_resampling.py",
        "            jnp.zeros_like(log_weights),\n",
        "            log_weights,\n",
        ["tests/test_resampling.py", "tests/test_weights.py", "tests/test_strategies.py"],
    ),
    "unnormalised_ess": (
        "smc_ebm/smc/_resampling.py",
        "return jnp.exp(log_ess(log_weights) - math.log(log_weights.shape[0]))",
        "return jnp.exp(log_ess(log_weights))",
        ["tests/test_resampling.py", "tests/test_weights.py", "tests/test_strategies.py"],
    ),
    "feedback_sign_jarzynski": (
        "smc_ebm/strategies/_feedback.py",
        "return updates, new_opt, walkers.log_weights + corr",
        "return updates, new_opt, walkers.log_weights - corr",
        ["tests/test_feedback.py"],
    ),
    # FlowJarzynski shares Jarzynski's rule; this flips it for the flow strategy only (the
    # rule's output is put back into the flow state as a - corr instead of a + corr).
    "feedback_sign_flow_jarzynski": (
        "smc_ebm/strategies/_flowmc.py",
        "return rule.through(lambda s: s.walkers, lambda s, w: s._replace(walkers=w))",
        "return rule.through(lambda s: s.walkers, lambda s, w: s._replace(walkers=w._replace("
        "log_weights=2 * s.walkers.log_weights - w.log_weights)))",
        ["tests/test_feedback.py", "tests/test_flowmc.py"],
    ),
    "ula_noise_mismatch": (
        "smc_ebm/kernels/_langevin.py",
        "return x - step_size * grad + jnp.sqrt(2.0 * step_size) * noise",
        "return x - step_size * grad + jnp.sqrt(2.1 * step_size) * noise",
        ["tests/test_weights.py", "tests/test_strategies.py"],
    ),
}


def run_mutant(name: str, timeout: float) -> tuple[str, str, float]:
    path, old, new, tests = MUTANTS[name]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copytree(ROOT / "smc_ebm", tmp / "smc_ebm")
        shutil.copytree(ROOT / "tests", tmp / "tests")
        # Some tests build their settings with a benchmark's or an example's code.
        for folder in ("benchmarks", "examples"):
            shutil.copytree(ROOT / folder, tmp / folder, ignore=shutil.ignore_patterns("results"))
        shutil.copy(ROOT / "pyproject.toml", tmp / "pyproject.toml")
        if path is not None:
            target = tmp / path
            text = target.read_text()
            if text.count(old) != 1:
                return "ERROR", f"the text to mutate occurs {text.count(old)} times in {path}", 0.0
            target.write_text(text.replace(old, new))
        env = {**os.environ, "PYTHONPATH": str(tmp)}
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
        t0 = time.perf_counter()
        try:
            out = subprocess.run(
                cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return "TIMEOUT", "", time.perf_counter() - t0
        seconds = time.perf_counter() - t0
        failed = [line for line in out.stdout.splitlines() if line.startswith("FAILED")]
        if out.returncode == 0:
            return "SURVIVED", "", seconds
        if not failed:
            # A collection or import error is not a test that caught the bug.
            return "BROKEN", out.stdout[-300:].replace("\n", " | "), seconds
        return "killed", failed[0][7:], seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=list(MUTANTS))
    p.add_argument("--list", action="store_true")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per mutant")
    args = p.parse_args(argv)
    if args.list:
        for name, (path, old, new, _) in MUTANTS.items():
            print(f"{name}: {path}: {old.strip()!r} -> {new.strip()!r}")
        return 0
    names = args.only or list(MUTANTS)
    # Control: the unmutated copy must pass the same test files, or no kill means anything.
    every_test = sorted({t for *_, tests in MUTANTS.values() for t in tests})
    MUTANTS["(control: no mutation)"] = (None, "", "", every_test)
    status, test, seconds = run_mutant("(control: no mutation)", args.timeout)
    print(f"{'(control: no mutation)':32} {status:9} {seconds:7.1f} s  {test}", flush=True)
    if status != "SURVIVED":
        print("the unmutated package fails its tests; fix that first")
        return 2
    results = {}
    for name in names:
        status, test, seconds = run_mutant(name, args.timeout)
        results[name] = status
        print(f"{name:32} {status:9} {seconds:7.1f} s  {test}", flush=True)
    killed = sum(s == "killed" for s in results.values())
    print(f"mutation score: {killed}/{len(results)} killed")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
