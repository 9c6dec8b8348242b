"""smc-ebm fit checks before training (config, names, run directories), --overwrite, the
checksums that load_run verifies, and the report's refusal of files outside the run."""

import json
import shutil

import numpy as np
import pytest

from smc_ebm import runs
from smc_ebm.cli import main

QUICK = """
name = "quick"
seed = 1
steps = 20
record_every = 5

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

[optimizer]
name = "sgd"
learning_rate = 0.05

[diagnostics]
enabled = false
"""


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    """A complete run with samples, and its config file."""
    root = tmp_path_factory.mktemp("checks")
    cfg = root / "quick.toml"
    cfg.write_text(QUICK + "\n[sample]\nnum_walkers = 64\nnum_steps = 10\nnum_runs = 2\n")
    out = root / "run"
    assert main(["fit", str(cfg), "--out", str(out), "--no-progress"]) == 0
    return out, cfg


def _copy(run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(run, out)
    return out


def test_every_bad_value_path_and_file_is_named_before_training(tmp_path, capsys):
    text = (
        QUICK.replace("steps = 20", "steps = -3")
        .replace("seed = 1", 'seed = "one"')
        .replace("record_every = 5", "record_every = 0\nchunk_size = 2.5")
        .replace('name = "two_mode_teacher"\nn = 200', 'name = "file"\npath = "nowhere.npy"')
        .replace("\na = -3.0\nb = 3.0", "")
        .replace('name = "Jarzynski"', 'name = "Jarzinsky"')
        .replace('name = "sgd"', 'name = "sgdd"')
        .replace("enabled = false", "enabled = false\nn_chainz = 3")
    )
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    out = tmp_path / "run"
    assert main(["fit", str(cfg), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    for needle in (
        "`steps` must be >= 1",
        "`seed` must be an integer",
        "`record_every` must be >= 1",
        "`chunk_size` must be an integer",
        "nowhere.npy",
        "Jarzinsky",
        "sgdd",
        "n_chainz",
    ):
        assert needle in err, needle
    assert "Traceback" not in err
    assert not out.exists()  # nothing written


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs", "a/b", "..", "a\\\\b", ""])
def test_run_names_that_leave_the_runs_folder_are_refused(tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(QUICK.replace('name = "quick"', f'name = "{name}"'))
    assert main(["fit", str(cfg), "--no-progress"]) == 2
    assert "plain folder name" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


def test_out_into_a_folder_that_is_not_a_run_is_refused(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(QUICK)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    for extra in ([], ["--overwrite"]):
        assert main(["fit", str(cfg), "--out", str(folder), "--no-progress", *extra]) == 2
        assert "holds no run" in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == ["thesis.tex"]
    (folder / "run.json").write_text('{"some": "other tool"}')  # not a run either
    assert main(["fit", str(cfg), "--out", str(folder), "--overwrite"]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["run.json", "thesis.tex"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["fit", str(cfg), "--out", str(afile)]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["fit", str(cfg), "--out", str(tmp_path / "r"), "--resume", "--overwrite"]) == 2
    assert main(["fit", "--resume", str(folder)]) == 2
    assert "no run to resume" in capsys.readouterr().err


def test_overwrite_replaces_the_run_completely(done_run, tmp_path):
    run, cfg = done_run
    out = _copy(run, tmp_path)
    (out / "notes.txt").write_text("stale")
    assert main(["report", str(out)]) == 0
    assert (out / "samples.npy").is_file() and (out / "report.html").is_file()
    plain = tmp_path / "plain.toml"  # no [sample] this time
    plain.write_text(QUICK.replace("seed = 1", "seed = 2"))
    assert main(["fit", str(plain), "--out", str(out), "--no-progress", "--overwrite"]) == 0
    names = {p.name for p in out.iterdir()}
    assert not names & {"notes.txt", "samples.npy", "report.html"}, names
    assert (out / "config.toml").read_text() == plain.read_text()
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["seed"] == 2 and meta["sample"] is None
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    files -= {"run.json", ".lock"}
    files = {f for f in files if not f.startswith("checkpoint/")}
    assert files == set(meta["files"]), files ^ set(meta["files"])
    runs.load_run(out)


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("energy.eqx", "truncate"),
        ("walkers.npz", "truncate"),
        ("history.npz", "flip"),
        ("samples.npy", "delete"),
        ("figures/training.png", "flip"),
    ],
)
def test_load_run_names_a_damaged_file(done_run, tmp_path, name, damage):
    run, _ = done_run
    out = _copy(run, tmp_path)
    path = out / name
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:-10] + bytes([data[-10] ^ 1]) + data[-9:])
    else:
        path.unlink()
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        runs.load_run(out)
    assert main(["report", str(out)]) == 2


def test_load_run_without_checksums_still_names_a_truncated_file(done_run, tmp_path):
    run, _ = done_run
    out = _copy(run, tmp_path)
    meta = json.loads((out / "run.json").read_text())
    del meta["files"]
    (out / "run.json").write_text(json.dumps(meta))
    data = (out / "walkers.npz").read_bytes()
    (out / "walkers.npz").write_bytes(data[:100])
    with pytest.raises(ValueError, match=r"walkers\.npz"):
        runs.load_run(out)
    (out / "run.json").write_text(json.dumps(meta)[:50])
    with pytest.raises(ValueError, match=r"run\.json"):
        runs.load_run(out)


def test_report_embeds_no_file_from_outside_the_run(done_run, tmp_path):
    run, _ = done_run
    out = _copy(run, tmp_path)
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\nSECRET")
    (out / "figures" / "link.png").symlink_to(secret)
    meta = json.loads((out / "run.json").read_text())
    meta["figures"] += [str(secret), "../secret.png", "figures/link.png"]
    (out / "run.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="outside the run directory"):
        assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    import base64

    assert base64.b64encode(b"SECRET").decode()[:6] not in html
    assert html.count("<img") == len(json.loads((run / "run.json").read_text())["figures"])


def test_a_run_killed_before_it_finished_is_not_loaded_but_resumed(done_run, tmp_path, capsys):
    run, cfg = done_run
    out = _copy(run, tmp_path)
    meta = json.loads((out / "run.json").read_text())
    meta["status"] = "running"
    (out / "run.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unfinished run"):
        runs.load_run(out)
    # The same config is accepted with --resume; another is refused, naming what differs.
    other = tmp_path / "other.toml"
    other.write_text(QUICK.replace("learning_rate = 0.05", "learning_rate = 0.5"))
    assert main(["fit", str(other), "--out", str(out), "--resume"]) == 2
    assert "optimizer.learning_rate" in capsys.readouterr().err
    assert main(["fit", "--resume", str(out), "--no-progress"]) == 0
    a, b = np.load(run / "walkers.npz"), np.load(out / "walkers.npz")
    np.testing.assert_array_equal(a["position"], b["position"])


def test_ctrl_c_after_training_is_interrupted_and_resume_writes_the_rest(
    done_run, tmp_path, monkeypatch, capsys
):
    """Ctrl-C while the figures are drawn: the trained state is kept (run.json interrupted,
    all the steps done, the checkpoint at the end), exit 130, and --resume finishes the run
    without training again."""
    from smc_ebm import plots

    run, cfg = done_run
    out = tmp_path / "run"

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(plots, "figure_set", stop)
        assert main(["fit", str(cfg), "--out", str(out), "--no-progress"]) == 130
    assert "--resume" in capsys.readouterr().err
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "interrupted" and meta["steps_done"] == 20
    assert meta["figures"] == [] and meta["sample"] is None
    assert json.loads((out / "checkpoint" / "manifest.json").read_text())["step"] == 20
    assert main(["fit", "--resume", str(out), "--no-progress"]) == 0
    for name in ("walkers.npz", "samples.npy", "energy.eqx"):
        assert (out / name).read_bytes() == (run / name).read_bytes(), name
    assert json.loads((out / "run.json").read_text())["resumed_at"] == [20]
