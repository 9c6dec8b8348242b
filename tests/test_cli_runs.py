"""smc-ebm fit then smc-ebm report: run directory, load_run, self-contained HTML, plots."""

import base64
import re
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import smc_ebm as se
from smc_ebm import plots, runs
from smc_ebm.cli import main

TINY = """
name = "tiny"
seed = 0
steps = 30
record_every = 5

[dataset]
name = "two_mode_teacher"
n = 300
dim = 2
a = -3.0
b = 3.0

[energy]
name = "GaussianMixture"
num_modes = 2
scale = 0.5

[strategy]
name = "Jarzynski"
num_walkers = 128
step_size = 0.1
resampling = { name = "ESSResampling", threshold = 0.8 }

[optimizer.per_field]
logits = { name = "sgd", learning_rate = 0.1 }
means = { name = "sgd", learning_rate = 0.05 }

[diagnostics]
num_chains = 16
num_steps = 20

[sample]
num_walkers = 128
num_steps = 20
num_runs = 4
"""

FIGURES = ["training.png", "mode_weights.png", "density.png", "trace.png", "rank.png"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cfg = root / "tiny.toml"
    cfg.write_text(TINY)
    out = root / "run"
    assert main(["fit", str(cfg), "--out", str(out), "--no-progress"]) == 0
    return out


def test_fit_writes_the_run_directory(run_dir):
    for name in [
        "config.toml",
        "run.json",
        "history.npz",
        "walkers.npz",
        "energy.eqx",
        "diagnostics.csv",
        "samples.npy",
    ]:
        assert (run_dir / name).is_file(), name
    for name in FIGURES:
        data = (run_dir / "figures" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name


def test_load_run_gives_energy_and_history(run_dir):
    run = se.load_run(run_dir)
    assert isinstance(run.energy, se.energies.GaussianMixture)
    # The deserialised energy is the trained one: its exact log Z matches the value
    # computed from the trained module before it was written.
    assert float(run.energy.log_partition()) == pytest.approx(run.meta["exact_log_Z"], rel=1e-6)
    assert set(run.history) >= {"step", "ess", "log_Z", "cross_entropy", "kl", "weight_0"}
    np.testing.assert_array_equal(run.history["step"], 5 * np.arange(6))
    assert run.walkers.shape == (128, 2) and run.log_weights.shape == (128,)
    assert run.summary["steps"] == 30 and run.summary["strategy"] == "Jarzynski"
    assert run.diagnostics["num_chains"] == 16 and run.diagnostics["max_rhat"] >= 1.0
    assert list(run.diagnostics_table.columns) == [
        "mean",
        "sd",
        "mcse_mean",
        "mcse_sd",
        "ess_bulk",
        "ess_tail",
        "r_hat",
    ]
    assert run.sample["num_walkers"] == 128 and run.sample["log_Z_se"] > 0
    assert [p.name for p in run.figures] == FIGURES


def test_report_is_self_contained_with_the_figures(run_dir, capsys):
    assert main(["report", str(run_dir)]) == 0
    assert "report written" in capsys.readouterr().out
    text = (run_dir / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == len(FIGURES)
    for img, name in zip(images, FIGURES, strict=True):
        assert base64.b64decode(img) == (run_dir / "figures" / name).read_bytes()
    # Nothing is fetched from elsewhere.
    assert "http://" not in text and "https://" not in text and "<script" not in text
    for needle in ("Summary", "Max R-hat", "log Z", "Generation", 'name = "tiny"', "weight_0"):
        assert needle in text


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium installed")
    report = run_dir / "report.html"
    if not report.exists():
        main(["report", str(run_dir)])
    png = tmp_path / "shot.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={png}",
            "--window-size=1200,3000",
            report.resolve().as_uri(),
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--dump-dom", report.resolve().as_uri()],
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    ).stdout
    assert dom.count("<img") == len(FIGURES)


def test_existing_run_is_not_overwritten(run_dir, capsys):
    cfg = run_dir / "config.toml"
    assert main(["fit", str(cfg), "--out", str(run_dir), "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_yaml_config_reads_like_toml(tmp_path):
    pytest.importorskip("yaml")
    toml_cfg = tmp_path / "a.toml"
    toml_cfg.write_text(TINY)
    yaml_cfg = tmp_path / "a.yaml"
    yaml_cfg.write_text(
        "name: tiny\nseed: 0\nsteps: 30\nrecord_every: 5\n"
        "dataset: {name: two_mode_teacher, n: 300, dim: 2, a: -3.0, b: 3.0}\n"
        "energy: {name: GaussianMixture, num_modes: 2, scale: 0.5}\n"
        "strategy:\n  name: Jarzynski\n  num_walkers: 128\n  step_size: 0.1\n"
        "  resampling: {name: ESSResampling, threshold: 0.8}\n"
        "optimizer:\n  per_field:\n    logits: {name: sgd, learning_rate: 0.1}\n"
        "    means: {name: sgd, learning_rate: 0.05}\n"
        "diagnostics: {num_chains: 16, num_steps: 20}\n"
        "sample: {num_walkers: 128, num_steps: 20, num_runs: 4}\n"
    )
    a = runs.validate_config(runs.read_config(toml_cfg))
    b = runs.validate_config(runs.read_config(yaml_cfg))
    a.pop("_base_dir"), b.pop("_base_dir")
    assert a == b


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("steps = 30\n", ""), "steps"),
        (lambda t: "bogus = 1\n" + t, "unknown keys"),
        (lambda t: t.replace('name = "Jarzynski"', 'name = "Nope"'), "unknown strategy"),
        (lambda t: t.replace('name = "GaussianMixture"', 'name = "Nope"'), "unknown energy"),
        (lambda t: t.replace("num_walkers = 128", "n_walkerz = 128", 1), r"\[strategy\]"),
        (lambda t: t.replace("num_chains = 16", "n_chainz = 16"), r"\[diagnostics\]"),
    ],
)
def test_bad_configs_are_rejected(tmp_path, edit, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(edit(TINY))
    with pytest.raises(ValueError, match=message):
        c = runs.validate_config(runs.read_config(cfg))
        runs.build_strategy(c["strategy"])
        runs.build_energy(c["energy"], 2, key=jax.random.key(0))


def test_cli_reports_bad_config(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(TINY.replace("steps = 30\n", ""))
    assert main(["fit", str(cfg), "--out", str(tmp_path / "r")]) == 2
    assert "steps" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_image_grid_and_projected_density(tmp_path):
    imgs = np.random.default_rng(0).uniform(size=(10, 12))
    fig = plots.plot_image_grid(imgs, (3, 4), path=tmp_path / "grid.png")
    assert len(fig.axes) == 12  # 4 columns x 3 rows for 10 images
    assert (tmp_path / "grid.png").stat().st_size > 0
    g = se.energies.Gaussian.standard(3)
    x = np.asarray(g.sample(jax.random.key(0), 50))
    plots.plot_density_2d(g, data=x, walkers=x, log_weights=jnp.zeros(50), path=tmp_path / "d.png")
    assert (tmp_path / "d.png").stat().st_size > 0
    with pytest.raises(ValueError, match="shape"):
        plots.plot_image_grid(imgs, (5, 5))


def test_a_failed_run_is_written_as_failed_and_exits_1(tmp_path, capsys):
    """A step size that diverges: the last finite state is written, marked failed, and the
    diagnostics, samples and figures are skipped."""
    import json

    cfg = tmp_path / "bad.toml"
    cfg.write_text(TINY.replace("step_size = 0.1", "step_size = 1e30"))
    out = tmp_path / "run"
    assert main(["fit", str(cfg), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "training failed: non-finite" in err and "Traceback" not in err
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "failed" and meta["steps_done"] < 30
    assert meta["error"]["step"] == meta["steps_done"] and meta["error"]["quantity"]
    # The last finite state is the checkpoint too; a failed run is not resumed.
    manifest = json.loads((out / "checkpoint" / "manifest.json").read_text())
    assert manifest["step"] == meta["steps_done"]
    assert main(["fit", str(cfg), "--out", str(out), "--resume"]) == 2
    assert meta["diagnostics"] is None and meta["sample"] is None and meta["figures"] == []
    for name in ("history.npz", "walkers.npz", "energy.eqx"):
        assert (out / name).is_file(), name
    walkers = np.load(out / "walkers.npz")["position"]
    assert np.all(np.isfinite(walkers))
    assert runs.load_run(out).meta["status"] == "failed"


def test_diagnostics_and_sampling_that_diverge_are_said_not_fatal(tmp_path, capsys):
    """Training completes; ULA chains at h = 1e3 diverge in diagnose and in sample: the run is
    written complete, run.json and the report say what failed, and no outputs are faked."""
    import json

    cfg = tmp_path / "div.toml"
    text = TINY.replace("num_chains = 16\n", 'num_chains = 16\nkernel = "ula"\nstep_size = 1e3\n')
    text = text.replace(
        "num_walkers = 128\nnum_steps = 20\n",
        "num_walkers = 128\nnum_steps = 20\nstep_size = 1e3\n",
    )
    cfg.write_text(text)
    out = tmp_path / "run"
    assert main(["fit", str(cfg), "--out", str(out), "--no-progress"]) == 0
    assert "non-finite" in capsys.readouterr().out
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "complete"
    assert "non-finite" in meta["diagnostics"]["error"] and "non-finite" in meta["sample"]["error"]
    assert not (out / "diagnostics.csv").exists() and not (out / "samples.npy").exists()
    report = se.diagnostics.write_report(out).read_text()
    assert report.count("non-finite") >= 2


def test_an_interrupted_run_is_written_as_interrupted_and_exits_130(tmp_path, capsys, monkeypatch):
    """SIGINT during `smc-ebm fit` (sent at the first progress report): the steps done are
    written, the run is marked interrupted, nothing else runs, and the exit code is 130."""
    import json
    import os
    import signal

    from smc_ebm import _live

    sent = []

    def at(self, step):
        if not sent:
            sent.append(step)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(_live.Progress, "at", at)
    cfg = tmp_path / "long.toml"
    cfg.write_text(TINY.replace("steps = 30", "steps = 3000000").replace('"tiny"', '"long"'))
    out = tmp_path / "run"
    assert main(["fit", str(cfg), "--out", str(out)]) == 130
    assert "interrupted after" in capsys.readouterr().err
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "interrupted" and 0 <= meta["steps_done"] < 3000000
    assert meta["diagnostics"] is None and meta["sample"] is None and meta["figures"] == []
    assert not (out / "figures").exists() and not (out / "samples.npy").exists()
    manifest = json.loads((out / "checkpoint" / "manifest.json").read_text())
    assert manifest["step"] == meta["steps_done"]  # the checkpoint is kept


def test_an_interrupted_run_resumes_to_the_straight_run_bitwise(tmp_path, monkeypatch):
    """`smc-ebm fit --resume` continues an interrupted run from the run directory's
    checkpoint; the run it writes equals the uninterrupted one bitwise."""
    import json
    import os
    import signal

    from smc_ebm import _live

    cfg = tmp_path / "mid.toml"
    text = TINY.replace("steps = 30", "steps = 3000").replace('"tiny"', '"mid"')
    cfg.write_text(text.replace("[diagnostics]", "[diagnostics]\nenabled = false"))
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    assert main(["fit", str(cfg), "--out", str(straight), "--no-progress"]) == 0
    sent = []

    def at(self, step):
        if not sent:
            sent.append(step)
            os.kill(os.getpid(), signal.SIGINT)

    with monkeypatch.context() as m:
        m.setattr(_live.Progress, "at", at)
        assert main(["fit", str(cfg), "--out", str(cut)]) == 130
    meta = json.loads((cut / "run.json").read_text())
    assert meta["status"] == "interrupted" and meta["steps_done"] < 3000
    assert main(["fit", str(cfg), "--out", str(cut), "--no-progress", "--resume"]) == 0
    assert json.loads((cut / "run.json").read_text())["status"] == "complete"
    for name in ("walkers.npz", "history.npz"):
        a, b = np.load(straight / name), np.load(cut / name)
        assert set(a.files) == set(b.files)
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}:{k}")
    # A complete run is not resumed.
    assert main(["fit", str(cfg), "--out", str(cut), "--resume"]) == 2
