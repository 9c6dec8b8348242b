"""The image example runs end to end at 28x28 on a tiny MNIST-format file (the GPU variant's
code path, shrunk so that it runs on a CPU in seconds)."""

import json
import types
from pathlib import Path

import numpy as np
import pytest
from _scripts import load_script

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    return load_script(EXAMPLES / f"{name}.py")


@pytest.mark.slow  # 45-90 s on 2 cores; tests/test_images.py runs the digits fit at 8x8
def test_digits_example_runs_at_28x28_from_mnist_files(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.array([2, 3, 6], np.uint8), 12)
    x = rng.integers(0, 256, (y.size, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=x[:9], y_test=y[:9])
    out = _load("digits_proportions").main(
        [
            "--mnist",
            str(tmp_path / "mnist.npz"),
            "--channels",
            "2",
            "4",
            "--steps",
            "20",
            "--seeds",
            "1",
            "--num-walkers",
            "8",
            "--walker-batch",
            "4",
            "--batch-size",
            "4",
            "--num-anneal",
            "2",
            "--average-last",
            "0.5",
            "--warmup",
            "5",
            "--strategies",
            "Jarzynski",
            "PCD",
            "Unweighted",
            "--baseline-kernel",
            "mala",
            "--walker-grad",
            "all",
            "--feedback-correction",
            "local",
            "--correction-from",
            "0.5",
            "--feedback-estimator",
            "exact",
            "--early-threshold",
            "0.3",
            "--refresh-every",
            "10",
            "--refresh-steps",
            "2",
            "--model-chains",
            "8",
            "--save-models",
            "--model-ais",
            "3",
            "--out-dir",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    numbers = json.loads((tmp_path / "out" / "numbers.json").read_text())
    for name in ("Jarzynski", "PCD", "Unweighted"):
        for key in ("proportions", "averaged_proportions"):
            p = np.asarray(out[name][key])
            assert p.shape == (1, 3) and np.all(p >= 0), (name, key, p)
            np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
        assert numbers[name]["proportions"] == out[name]["proportions"]
    for name in ("PCD", "Unweighted"):  # walkers that keep their slots: how far they travel
        (moves,) = numbers[name]["digit_changes"]
        assert set(moves) == {"first_vs_last", "middle_vs_last", "ever"}
        assert all(0.0 <= v <= 1.0 for v in moves.values())
        assert moves["ever"] >= moves["first_vs_last"]
    assert numbers["Jarzynski"]["digit_changes"] == []
    for name in ("Jarzynski", "PCD", "Unweighted"):  # the trained model's own proportions
        (model,) = numbers[name]["model_proportions"]
        np.testing.assert_allclose(sum(model), 1.0, atol=1e-6)
        (curve,) = numbers[name]["model_curves"]  # 8 MALA steps recorded every step
        assert np.asarray(curve).shape == (8, 3)
        (rhat,) = numbers[name]["model_max_rhat"]
        (acc,) = numbers[name]["model_acceptance"]
        assert np.isfinite(rhat) and 0.0 <= acc <= 1.0
        (ais,) = numbers[name]["ais_proportions"]  # the model's masses, by annealing
        np.testing.assert_allclose(sum(ais), 1.0, atol=1e-6)
        (detail,) = numbers[name]["ais"]
        assert len(detail["log_Z"]) == 3 and len(detail["data_mean_energy"]) == 3
    (ess,) = numbers["Jarzynski"]["ess_curves"]  # one seed: ESS / N at every record
    assert len(ess) == len(numbers["Jarzynski"]["ess_step"]) and all(0 < e <= 1 for e in ess)
    for tag in ("jarzynski_0", "pcd_0", "unweighted_0"):
        assert (tmp_path / "out" / f"energy_{tag}.eqx").stat().st_size > 0
        with np.load(tmp_path / "out" / f"walkers_{tag}.npz") as w:
            assert w["position"].shape == (8, 28 * 28) and w["log_weights"].shape == (8,)
    for figure in ("walkers_by_weight.png", "walkers_pcd.png", "walkers_unweighted.png", "ess.png"):
        assert (tmp_path / "out" / figure).stat().st_size > 0


def test_examples_share_code_through_the_package_not_sys_path():
    """Shared example code lives in ``smc_ebm.recipes``; no script edits ``sys.path``."""
    for path in sorted(EXAMPLES.glob("*.py")):
        assert "sys.path" not in path.read_text(), path.name
    assert not list(EXAMPLES.glob("_*.py"))


def test_no_example_writes_into_the_repository_by_default():
    """Outputs go under outputs/ (ignored by git) unless --out says otherwise; docs/ figures
    are regenerated only on request."""
    ignored = (Path(__file__).resolve().parents[1] / ".gitignore").read_text().split()
    assert "outputs/" in ignored
    for path in sorted(EXAMPLES.glob("*.py")):
        text = path.read_text()
        assert 'default="docs/' not in text and 'default=Path("docs' not in text, path.name
        assert "dual_out" not in text, path.name


def test_an_unwritable_output_folder_stops_an_example_before_its_run(tmp_path, monkeypatch):
    import sys

    import pytest

    from smc_ebm.recipes import output_dir

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit, match="cannot write into the output folder"):
        output_dir(blocker / "sub")
    assert output_dir(tmp_path / "new" / "dir").is_dir()
    example = _load("flowmc_four_gaussians")
    monkeypatch.setattr(sys, "argv", ["flowmc_four_gaussians.py", "--out", str(blocker / "x.png")])
    monkeypatch.setattr(example, "train", lambda *a, **k: pytest.fail("trained before the check"))
    with pytest.raises(SystemExit, match="cannot write"):
        example.main()


def test_the_flow_recipe_stops_a_loop_when_its_fit_is_interrupted(monkeypatch):
    """``fit`` returns ``interrupted=True`` on Ctrl-C or SIGTERM; the recipe that the flow
    examples and ``benchmarks/flows_family.py`` loop over must stop the loop, not record a
    partial run as a finished one."""
    import types

    import smc_ebm as se
    from smc_ebm.recipes import train

    def fit(*args, interrupted, **kwargs):
        return types.SimpleNamespace(interrupted=interrupted, steps=7)

    monkeypatch.setattr(se, "fit", lambda *a, **k: fit(*a, interrupted=False, **k))
    res, _ = train(None, None, None, steps=10, lr=1e-3, batch=4, seed=0, progress=False)
    assert res.steps == 7
    monkeypatch.setattr(se, "fit", lambda *a, **k: fit(*a, interrupted=True, **k))
    with pytest.raises(KeyboardInterrupt, match="step 7"):
        train(None, None, None, steps=10, lr=1e-3, batch=4, seed=0, progress=False)


def test_digits_data_copies_dequantise_the_same_images_again():
    """``--data-copies K``: the drawn images first, bitwise, then K - 1 more dequantisations of
    the same images (the same grey level in every pixel, other noise), labels repeated, so the
    class proportions are unchanged."""
    import jax

    example = load_script(Path(__file__).parents[1] / "examples" / "digits_proportions.py")
    key = jax.random.key(0)
    one, _ = example.load(example.parse_args([]), key)
    three, _ = example.load(example.parse_args(["--data-copies", "3"]), key)
    n = one.samples.shape[0]
    x = np.asarray(three.samples).reshape(3, n, -1)
    assert np.array_equal(x[0], one.samples)
    levels = np.floor((x + 1.0) * 17 / 2)  # x = 2 (v + u) / 17 - 1, u in [0, 1)
    assert np.array_equal(levels[1], levels[0]) and np.array_equal(levels[2], levels[0])
    assert np.mean(x[1] != x[0]) > 0.99 and np.mean(x[2] != x[1]) > 0.99
    assert np.array_equal(three.info["labels"], np.tile(one.info["labels"], 3))
    assert three.info["proportions"] == one.info["proportions"]


def test_digits_model_ais_walkers_sets_the_annealing_size_apart_from_the_training_walkers(
    monkeypatch,
):
    """``--model-ais-walkers`` is the number of annealed walkers per class, ``--num-walkers``
    when absent; the runs split them (at most 8 runs, at least 2 walkers a run)."""
    import smc_ebm as se

    example = load_script(Path(__file__).parents[1] / "examples" / "digits_proportions.py")
    seen = []

    def class_masses(*args, num_walkers, num_runs, **kwargs):
        seen.append((num_walkers, num_runs))
        raise RuntimeError("stop")

    monkeypatch.setattr(se.metrics, "class_masses", class_masses)
    data = types.SimpleNamespace(samples=np.zeros((4, 2)), info={"labels": np.arange(4)})
    for argv in (
        ["--num-walkers", "4096", "--model-ais", "5"],
        ["--num-walkers", "4096", "--model-ais", "5", "--model-ais-walkers", "1024"],
        ["--num-walkers", "4096", "--model-ais", "5", "--model-ais-walkers", "6"],
    ):
        with pytest.raises(RuntimeError, match="stop"):
            example.model_masses(None, None, data, 0, example.parse_args(argv))
    assert seen == [(4096, 8), (1024, 8), (6, 3)]
    with pytest.raises(SystemExit):
        example.parse_args(["--model-ais-walkers", "1"])


def test_digits_refuses_an_option_it_would_ignore_or_out_of_range(capsys):
    """``--adam-b1`` with ``--optimizer sgd`` (SGD has no momentum) and ``--average-last``
    outside [0, 1] stop at parsing with a message naming the option."""
    example = load_script(Path(__file__).parents[1] / "examples" / "digits_proportions.py")
    for argv, name in (
        (["--optimizer", "sgd", "--adam-b1", "0"], "--adam-b1"),
        (["--average-last", "1.5"], "--average-last"),
    ):
        with pytest.raises(SystemExit):
            example.parse_args(argv)
        assert name in capsys.readouterr().err
    assert example.parse_args(["--optimizer", "sgd"]).optimizer == "sgd"


def test_digits_moves_per_step_repeats_mala_and_composes_with_the_adapted_step():
    """``--moves-per-step K`` makes Jarzynski's move K MALA steps (``se.kernels.Repeated``),
    with ``--adapt-step`` around it; ULA cannot be repeated so."""
    import smc_ebm as se

    example = load_script(Path(__file__).parents[1] / "examples" / "digits_proportions.py")
    args = example.parse_args(["--moves-per-step", "3", "--adapt-step", "0.6"])
    strategy = example.make_strategy("Jarzynski", args, 64)
    assert isinstance(strategy, se.strategies.AdaptedStep)
    assert strategy.inner.kernel == se.kernels.Repeated(se.kernels.MALA(args.step_size), 3)
    assert strategy.target_accept == 0.6
    with pytest.raises(SystemExit):
        example.parse_args(["--moves-per-step", "2", "--kernel", "ula"])


def test_digits_optimizer_sgd_is_a_linear_update_and_adam_is_not():
    """``--optimizer sgd``: the update is linear in the gradient (the feedback correction is
    then exact to first order and ``"auto"`` applies it); the default, Adam, is not (``"auto"``
    skips it). SGD follows the same schedule: its first update is ``-lr`` times the gradient."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import smc_ebm as se

    example = load_script(Path(__file__).parents[1] / "examples" / "digits_proportions.py")
    found = {}
    for name in ("adam", "sgd"):
        args = example.parse_args(["--optimizer", name, "--lr", "0.25"])
        energy, optimizer, _ = example.initial(0, args, 8)
        params = eqx.filter(energy, eqx.is_inexact_array)
        with jax.numpy_dtype_promotion("standard"):  # as the example's fit runs
            state = optimizer.init(params)
            rule = se.strategies.FeedbackCorrection("auto").prepare(optimizer, state, params)
            found[name] = rule is not None
            grad = jax.tree.map(lambda p: jnp.full_like(p, 2.0), params)
            updates, _ = optimizer.update(grad, state, params)
        if name == "sgd":
            assert all(np.allclose(u, -0.5) for u in jax.tree.leaves(updates))
    assert found == {"adam": False, "sgd": True}
