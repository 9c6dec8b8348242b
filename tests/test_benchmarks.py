"""The benchmark scripts behind documented numbers run at a tiny size, and the mutation check's
mutants still apply to the code (each mutated text occurs exactly once where it points)."""

import json
import re
from pathlib import Path

import jax
import numpy as np
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


@pytest.mark.parametrize(
    # bias_study's tiny run takes about 40 s (two compiled settings): with -m slow
    "script",
    ["quickstart_seeds", pytest.param("bias_study", marks=pytest.mark.slow)],
)
def test_benchmark_runs_tiny(script, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    out = tmp_path / "out.json"
    _load(script).main(["--tiny", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["summary"]


# 13 to 18 s on 2 shared cores: compiles the chunk with and without checkpoints
def test_checkpoint_cost_runs_tiny(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    out = _load("checkpoint_cost").main(["--tiny"])
    assert len(out["ratios"]) == 1 and out["ratios"][0] > 0
    assert np.isfinite(out["per_checkpoint_s"]).all()


# 10 s: six compiled fits
def test_feedback_cross_step_runs_tiny(monkeypatch):
    rows = _load("feedback_cross_step").main(["--tiny"])
    assert [r["correction"] for r in rows] == ["off", "on (probe)", "on (exact)"]
    assert all(np.isfinite(r["mean"]) for r in rows)


def test_regenerate_docs_runs_each_command_into_its_log(tmp_path, monkeypatch, capsys):
    """The run loop, on stand-in commands (the docs' own take hours): each gets its numbered
    log with its output, and its exit status is printed."""
    regen = _load("regenerate_docs")
    ok, bad = tmp_path / "ok.py", tmp_path / "bad.py"
    ok.write_text("print('hello from ok')\n")
    bad.write_text("raise SystemExit(3)\n")
    cmds = [("a.md", ["python", str(ok)]), ("b.md", ["python", str(bad), "--flag"])]
    monkeypatch.setattr(regen, "commands", lambda: cmds)
    logs = tmp_path / "logs"
    assert regen.main(["--logs", str(logs)]) == cmds
    assert (logs / "00_ok.log").read_text() == "hello from ok\n"
    assert (logs / "01_bad.log").exists()
    out = capsys.readouterr().out
    assert "ok.py: exit 0" in out and "bad.py --flag: exit 3" in out
    assert regen.main(["--list", "--only", "bad"]) == cmds[1:]


@pytest.mark.slow  # about 2 min: compiles a step per size, the split ones in three subprocesses
def test_scaling_runs_quick(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    argv = ["--quick", "--devices", "2", "--device-repeats", "2", "--out", str(tmp_path / "s")]
    out = _load("scaling").main(argv)
    assert len(out["walkers"]) == 2 and (tmp_path / "s.json").exists()
    assert (tmp_path / "s.png").exists()
    assert [s["walkers"] for s in out["split"]] == [128, 256, 128, 256]
    assert all(s["devices"] == 2 and s["ratio"] > 0 for s in out["split"])
    argv = ["--quick", "--devices", "2", "--only-devices", "--out", str(tmp_path / "d")]
    out = _load("scaling").main(argv)
    assert out["walkers"] == [] and [s["walkers"] for s in out["split"]] == [128, 256]
    assert (tmp_path / "d.json").exists() and not (tmp_path / "d.png").exists()


def test_gpu_check_runs_quick(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    path = tmp_path / "g.json"
    out = _load("gpu_check").main(["--quick", "--no-digits", "--out", str(path)])
    assert out["runs"][0]["steps"] == 20 and json.loads(path.read_text())["diagnose_call"]
    assert 0 <= out["runs"][0]["weight_near_minus_10"] <= 1


@pytest.mark.slow  # about 30 s: compiles the digits example's two strategies
def test_gpu_check_digits_section_runs_quick(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    out = _load("gpu_check").main(["--quick", "--out", str(tmp_path / "g.json")])
    for name in ("Jarzynski", "PCD"):
        assert abs(sum(out["digits"][name]["proportions"]) - 1) < 1e-6


def test_flows_family_arguments_and_mixtures(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = _load("flows_family")
    args = module.parse_args(["--quick", "--only", "flowmc,Flow-Jarzynski"])
    assert (args.mixtures, args.steps, args.out.name) == (2, 300, "flows_family_quick.json")
    names = ["FlowMC", "flow-Jarzynski", "Jarzynski (ULA)", "PCD"]
    assert module.select(names, args.only) == names[:2]
    for i in range(10):
        m = module.draw_mixture(1000 + i)
        assert 3 <= len(m["weights"]) <= 6 and abs(m["weights"].sum() - 1) < 1e-12
        assert m["weights"].min() >= 0.05 and m["weights"].max() <= 0.5
        assert 0.03 <= m["variances"].min() and m["variances"].max() <= 0.1
        gaps = [
            np.linalg.norm(a - b) for j, a in enumerate(m["means"]) for b in m["means"][j + 1 :]
        ]
        assert min(gaps) >= module.MIN_SEP and np.abs(m["means"]).max() <= module.BOX


def test_flows_family_combine_pools_the_runs_of_several_files(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = _load("flows_family")

    def run(mse):
        return {"mse": mse, "lightest_rel_error": -0.1, "wall_s": 1.0}

    files = {"a.json": [1e-4, 3e-4, 5e-4], "b.json": [2e-4, 9e-4]}
    for name, mses in files.items():
        saved = {"runs": {"FlowMC": [run(m) for m in mses]}, "summary": {"FlowMC": {"diverged": 1}}}
        (tmp_path / name).write_text(json.dumps(saved))
    s = module.main(["--combine", *(str(tmp_path / n) for n in files)])["FlowMC"]
    assert (s["runs"], s["diverged"], s["median"], s["worst"]) == (5, 2, 3e-4, 9e-4)
    # numpy's linear interpolation: p90 of [1, 2, 3, 5, 9] e-4 is 5e-4 + 0.6 * 4e-4
    np.testing.assert_allclose(s["p90"], 7.4e-4)
    assert s["meets_bars"] is False  # median 3e-4 > 2e-4


def test_every_command_in_the_docs_names_a_script_and_its_flags():
    """The commands benchmarks/regenerate_docs.py reruns (read from README.md and docs/):
    each script exists and defines every ``--flag`` the docs pass it (a renamed flag or a
    removed script makes the docs stale)."""
    regen = _load("regenerate_docs")
    cmds = regen.commands()
    assert len(cmds) >= 40
    root = BENCHMARKS.parent
    for page, argv in cmds:
        script = root / argv[1]
        assert script.is_file(), (page, argv)
        source = script.read_text()
        # A script that passes the options it does not know to another one names it.
        forwarded = re.search(r'^FORWARDS_TO = "(.+)"', source, re.M)
        if forwarded:
            source += (root / forwarded.group(1)).read_text()
        for flag in (a.split("=")[0] for a in argv[2:] if a.startswith("--")):
            assert f'"{flag}"' in source, (page, " ".join(argv), flag)


def test_digits_family_triples_errors_and_summary(tmp_path, monkeypatch):
    """The family's cases are drawn within their stated ranges, and the relative errors are
    ordered by class position (checked against hand-computed values)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = _load("digits_family")
    for i in range(20):
        t = module.draw_triple(i)
        w = np.sort(t["weights"])
        assert len(set(t["digits"])) == 3 and all(0 <= d <= 9 for d in t["digits"])
        assert abs(w.sum() - 1) < 1e-12 and 0.10 <= w[0] <= 0.20
        assert w[1] >= w[0] + 0.05 - 1e-12 and w[2] > w[1]
    assert module.draw_triple(3) == module.draw_triple(3)  # a fixed list
    target = [0.5, 0.2, 0.3]  # positions: minority 0.2, middle 0.3, majority 0.5
    errs = module.relative_errors([[0.55, 0.1, 0.35], [0.5, 0.3, 0.2]], target)
    np.testing.assert_allclose(errs, [[0.5, 0.05 / 0.3, 0.1], [0.5, 0.1 / 0.3, 0.0]])
    records = [
        {"target": target, "PCD": {"averaged_proportions": [[0.55, 0.1, 0.35]]}},
        {"target": target, "PCD": {"averaged_proportions": [[0.5, 0.3, 0.2]]}},
    ]
    s = module.summarise(records)["PCD, walkers, mean of the last 25%"]
    assert s["runs"] == 2
    np.testing.assert_allclose(s["mean"], [0.5, (0.05 + 0.1) / 0.3 / 2, 0.05])
    # --combine pools the runs of several files into one table.
    files = [tmp_path / f"r{i}.json" for i in (0, 1)]
    for f, r in zip(files, records, strict=True):
        f.write_text(json.dumps({"records": [r]}))
    combined = module.main(["--combine", *map(str, files)])
    assert combined["PCD, walkers, mean of the last 25%"] == s


@pytest.mark.slow  # about 30 s: the digits example twice at 40 steps
def test_digits_family_runs_quick(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.chdir(tmp_path)
    argv = ["--quick", "--out", str(tmp_path / "f.json"), "--lr-final", "0.5"]
    argv += ["--model-chains", "8", "--model-ais", "4"]
    out = _load("digits_family").main(argv)
    assert set(out) >= {"Jarzynski, final walkers", "PCD, walkers, mean of the last 25%"}
    assert "PCD, MALA chains on the model, last record" in out
    saved = json.loads((tmp_path / "f.json").read_text())
    assert saved["complete"]
    assert saved["args"]["example"] == ["--lr-final", "0.5", "--model-chains", "8"]
    assert saved["args"]["model_ais"] == 4
    (last,) = saved["records"][0]["Jarzynski"]["model_last"]  # one seed: one 3-class record
    # proportions, written to 4 decimals: three roundings of at most 0.5e-4 each
    assert len(last) == 3 and abs(sum(last) - 1) <= 1.5e-4
    # The per-class annealing keeps its errors, bases' log Z and arrival matrix, not only
    # the proportions.
    (ais,) = saved["records"][0]["Jarzynski"]["ais"]
    assert ais["proportions"] == saved["records"][0]["Jarzynski"]["ais_proportions"][0]
    assert {"standard_errors", "log_Z", "arrival"} <= set(ais)
    assert np.shape(ais["arrival"]) == (3, 3) and len(ais["standard_errors"]) == 3


@pytest.mark.slow  # about 15 s: one strategy of the digits example, observed, 40 steps
def test_digits_family_reports_one_strategy_and_its_observers(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.chdir(tmp_path)
    argv = ["--quick", "--out", str(tmp_path / "f.json"), "--strategies", "Jarzynski"]
    out = _load("digits_family").main([*argv, "--observers", "8"])
    assert not any(label.startswith("PCD") for label in out)
    assert out["Jarzynski, the model (observers, final)"]["runs"] == 1
    (observed,) = json.loads((tmp_path / "f.json").read_text())["records"][0]["Jarzynski"][
        "observer_proportions"
    ]
    assert len(observed) == 3 and abs(sum(observed) - 1) <= 1e-6


@pytest.mark.slow  # about 20 s each: one strategy of the digits example, observed, 40 steps
@pytest.mark.parametrize("strategy", ["Jarzynski", "PCD"])
def test_digits_observers_runs_quick(strategy, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    argv = ["--quick", "--strategy", strategy, "--out", str(tmp_path / "o.json")]
    out = _load("digits_observers").main([*argv, "--ais-at", "20"])
    saved = json.loads((tmp_path / "o.json").read_text())
    assert saved["rows"] == out["rows"] and [r["step"] for r in out["rows"]] == [10, 20, 30, 40]
    assert saved["args"]["example"][-2:] == ["--observers", "16"]
    for row in out["rows"]:
        for name in ("walkers", "walkers_unweighted", "observers"):
            # proportions, written to 4 decimals: three roundings of at most 0.5e-4 each
            assert len(row[name]) == 3 and abs(sum(row[name]) - 1) <= 1.5e-4, (name, row)
        assert 0 < row["observers_ess"] <= 1
        if strategy == "PCD":  # walkers without weights
            assert row["walkers"] == row["walkers_unweighted"]
        assert ("annealing" in row) == (row["step"] == 20)  # annealed where asked, only there
    (annealed,) = [r["annealing"] for r in out["rows"] if "annealing" in r]
    assert len(annealed) == 3 and abs(sum(annealed) - 1) <= 1.5e-4
    table = _load("digits_observers").main(["--summarise", str(tmp_path / "o.json")])["table"]
    row = out["rows"][-1]
    assert len(table) == 2 + 4 and table[-1].startswith(f"| {strategy}, --steps 40 ")
    assert " / ".join(f"{p:.3f}" for p in row["observers"]) in table[-1]


@pytest.mark.slow  # about 15 s: the first 10 steps of the quick observed run
def test_digits_observers_stops_when_a_fit_is_interrupted(tmp_path, monkeypatch):
    """A Ctrl-C or SIGTERM stops the script (``fit`` returns ``interrupted=True``), keeping the
    rows done and marking the JSON, instead of going on with the next fits."""
    import dataclasses

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = _load("digits_observers")
    fit = module.se.fit

    def interrupted_fit(*args, **kwargs):
        return dataclasses.replace(fit(*args, **kwargs), interrupted=True)

    monkeypatch.setattr(module.se, "fit", interrupted_fit)
    out = module.main(["--quick", "--out", str(tmp_path / "o.json")])
    saved = json.loads((tmp_path / "o.json").read_text())
    assert saved["interrupted"] and [r["step"] for r in saved["rows"]] == [10] == [
        r["step"] for r in out["rows"]
    ]


@pytest.mark.slow  # about 20 s: a 20-step digits run, saved, then annealed again from the file
def test_digits_model_masses_reannealing_a_saved_model_repeats_the_examples_numbers(tmp_path):
    """The energy rebuilt from the saved options and leaves is the trained one: annealed with
    the example's budget and key, it gives the example's ``--model-ais`` numbers exactly."""
    import equinox as eqx

    example = load_script(Path(__file__).parents[1] / "examples" / "digits_proportions.py")
    tiny = ["--steps", "20", "--num-walkers", "16", "--num-anneal", "2", "--seeds", "1"]
    tiny += ["--channels", "2", "2", "2", "--batch-size", "16", "--strategies", "Jarzynski"]
    tiny += ["--model-ais", "6", "--model-ais-walkers", "8", "--save-models", "--no-progress"]
    tiny += ["--average-last", "0"]
    ran = example.main([*tiny, "--out-dir", str(tmp_path)])["Jarzynski"]
    walkers_ran, ran = ran["proportions"][0], ran["ais"][0]
    out = _load("digits_model_masses").main(
        [str(tmp_path), "--steps", "6", "3", "--walkers", "8", "--out", str(tmp_path / "m.json")]
    )
    again = out["runs"]
    # the saved walkers: the example's final proportions; the class means make up the mean
    assert np.allclose(out["walkers"]["proportions"], walkers_ran, atol=1e-12)
    saved = np.load(tmp_path / "walkers_jarzynski_0.npz")
    w = np.exp(saved["log_weights"] - saved["log_weights"].max())
    w /= w.sum()
    skeleton = example.initial(0, example.parse_args(tiny), 8)[0]
    energy = eqx.tree_deserialise_leaves(tmp_path / "energy_jarzynski_0.eqx", skeleton)
    u = np.asarray(jax.vmap(energy)(saved["position"]), np.float64)
    p_c, u_c = out["walkers"]["proportions"], out["walkers"]["mean_energy"]
    present = np.asarray(p_c) > 0
    assert np.isclose(np.dot(np.asarray(p_c)[present], np.asarray(u_c)[present]), w @ u)
    assert again[0]["proportions"] == list(ran["proportions"])
    assert again[0]["log_Z"] == list(ran["log_Z"])
    assert again[1]["proportions"] != again[0]["proportions"]  # another budget, other numbers
    saved = json.loads((tmp_path / "m.json").read_text())
    assert [r["steps"] for r in saved["runs"]] == [6, 3]
    (within,) = _load("digits_model_masses").main(
        [str(tmp_path), "--within", "--steps", "6", "--walkers", "16"]
    )["runs"]
    assert np.allclose(within["arrival"], np.eye(3)) and abs(sum(within["proportions"]) - 1) < 1e-9
    # without --out, the JSON lands beside the model
    default = json.loads((tmp_path / "masses_jarzynski_0_within_6.json").read_text())
    assert default["runs"][0]["proportions"] == within["proportions"]


@pytest.mark.slow  # about 30 s: two 20-step digits runs
def test_digits_param_average_saves_the_examples_model_and_the_mean_of_its_snapshots(tmp_path):
    """The final energy is the example's own model bit for bit (the segments continue the run
    exactly), and the averaged one is the mean of the parameters at steps 10 and 20."""
    import equinox as eqx
    import jax

    import smc_ebm as se

    example = load_script(Path(__file__).parents[1] / "examples" / "digits_proportions.py")
    tiny = ["--steps", "20", "--num-walkers", "16", "--num-anneal", "2", "--seeds", "1"]
    tiny += ["--channels", "2", "2", "2", "--batch-size", "16", "--no-progress"]
    example.main(
        [
            *tiny,
            "--strategies",
            "Jarzynski",
            "--save-models",
            "--average-last",
            "0",
            "--out-dir",
            str(tmp_path / "example"),
        ]
    )
    out = tmp_path / "averaged"
    numbers = _load("digits_param_average").main(
        [*tiny, "--fraction", "0.5", "--every", "10", "--out-dir", str(out)]
    )
    assert numbers["snapshots"] == 2
    args = example.parse_args(tiny)
    data, _ = example.load(args, jax.random.key(0))
    side = int(data.info["shape"][0])
    energy, optimizer, key = example.initial(0, args, side)

    def leaves(path):
        loaded = eqx.tree_deserialise_leaves(path, energy)
        return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(loaded, eqx.is_inexact_array))]

    final = leaves(out / "energy_jarzynski_0.eqx")
    for a, b in zip(final, leaves(tmp_path / "example" / "energy_jarzynski_0.eqx"), strict=True):
        assert np.array_equal(a, b)
    with jax.numpy_dtype_promotion("standard"):
        half = se.fit(
            energy,
            data.samples,
            strategy=example.make_strategy("Jarzynski", args, side * side),
            optimizer=optimizer,
            key=key,
            num_steps=10,
            batch_size=16,
            record_every=10,
            progress=False,
        )
    mid = [np.asarray(x) for x in jax.tree.leaves(eqx.filter(half.energy, eqx.is_inexact_array))]
    averaged = leaves(out / "energy_averaged_0.eqx")
    assert any(not np.array_equal(m, f) for m, f in zip(mid, final, strict=True))
    for avg, m, f in zip(averaged, mid, final, strict=True):
        np.testing.assert_allclose(avg, (m + f) / 2, rtol=1e-6, atol=1e-7)


# About 25 s (26.6 s in a CI run): the exact reference on one case, a tiny run of each setting kind
def test_separated_modes_cases_reference_and_summary(tmp_path, monkeypatch):
    """The family's cases are drawn within their stated ranges with modes far apart; the plain
    reference (Adam on the closed-form gradient) reaches the data's mode shares; a tiny run
    (with the lazy target and equal first counts) reports every setting and --combine pools
    files into the same table."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = _load("separated_modes")
    for i in range(10):
        centres, start, data, shares = module.case(i)
        k = len(centres)
        assert 3 <= k <= 5 and data.shape == (module.N_DATA, module.DIM)
        assert abs(shares.sum() - 1) < 1e-12 and shares.min() > 0.03
        gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1)[np.triu_indices(k, 1)]
        np.testing.assert_allclose(gaps, module.SEP * np.sqrt(2), rtol=1e-6)
    centres, start, data, shares = module.case(0)
    # Adam's noise at the final rate leaves 0.3-2.1% per mode on the ten cases (measured).
    with jax.numpy_dtype_promotion("standard"):
        weights = module.exact_run(start, data, module.parse_args([]))
    assert np.max(np.abs(weights - shares) / shares) < 0.05, (weights, shares)
    out = tmp_path / "s.json"
    argv = ["--cases", "1", "--steps", "30", "--walkers", "64", "--moves", "2"]
    argv += ["--moves-walkers", "32", "--out", str(out)]
    argv += ["--lazy-target", "0.9", "--stratified-start"]  # the options of docs/digits.md
    summ = module.main(argv)
    assert list(summ) == ["walkers 64, moves 1", "walkers 32, moves 2", "exact gradient"]
    assert all(
        np.isfinite(s["model"]) and np.isfinite(s["log_ratio_lightest"]) for s in summ.values()
    )
    assert "walkers" in summ["walkers 64, moves 1"] and "walkers" not in summ["exact gradient"]
    saved = json.loads(out.read_text())
    assert saved["complete"] and len(saved["rows"]) == 1
    assert module.main(["--combine", str(out), str(out)]) == summ
