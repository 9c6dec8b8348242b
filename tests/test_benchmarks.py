"""The benchmark scripts behind documented numbers run at a tiny size, and the mutation check's
mutants still apply to the code (each mutated text occurs exactly once where it points)."""

import json
from pathlib import Path

import pytest
from _scripts import load_script

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    return load_script(BENCHMARKS / f"{name}.py")


def test_every_mutant_applies_to_exactly_one_place():
    import smc_ebm

    package = Path(smc_ebm.__file__).resolve().parent
    for name, (path, old, new, tests) in _load("mutation_check").MUTANTS.items():
        text = (package / Path(path).relative_to("smc_ebm")).read_text()
        assert text.count(old) == 1, f"mutant {name}: its text occurs {text.count(old)} times"
        assert old != new, name
        for test in tests:
            assert (Path(__file__).parent / Path(test).name).exists(), (name, test)


@pytest.mark.parametrize("script", ["quickstart_seeds", "bias_study"])
def test_benchmark_runs_tiny(script, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    out = tmp_path / "out.json"
    _load(script).main(["--tiny", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["summary"]


def test_scaling_runs_quick(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    out = _load("scaling").main(["--quick", "--devices", "0", "--out", str(tmp_path / "s")])
    assert len(out["walkers"]) == 2 and (tmp_path / "s.json").exists()
    assert (tmp_path / "s.png").exists()


def test_gpu_check_runs_quick(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    out = _load("gpu_check").main(["--quick", "--out", str(tmp_path / "g.json")])
    assert out["runs"][0]["steps"] == 20 and (tmp_path / "g.json").exists()
