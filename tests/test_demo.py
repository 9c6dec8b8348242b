"""``smc-ebm demo`` ends with a verdict read from its numbers."""

import math

from smc_ebm import cli
from smc_ebm._demo import DemoRun, verdict


def _run(name, weight, fraction=0.25):
    nan = math.nan
    return DemoRun(name, weight, nan, nan, 1.0, {}, data_fraction=fraction)


def test_the_verdict_follows_the_numbers():
    lines = verdict([_run("A", 0.27), _run("B", 0.001), _run("C", 0.45), _run("D", 0.995)])
    assert lines[0].startswith("A keeps both modes and finds the weight: 0.020 above")
    assert lines[1] == "B loses a mode (weight 0.001)."
    assert lines[2].startswith("C keeps both modes but is biased: 0.200 above")
    assert lines[3].startswith("D loses a mode")
    assert "slightly negative" in lines[-1]


def test_quick_demo_prints_a_table_and_a_verdict(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert cli.main(["demo", "--quick", "--no-progress", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "weight (data 0." in text and out.exists()
    assert "Jarzynski keeps both modes" in text  # at this seed and size (measured: 0.056 below)
    assert "PCD loses a mode" in text
