"""``smc-ebm report``: a self-contained HTML page of a run directory.

Everything is inside the one file: the figures as base64 PNG ``data:`` URIs, the tables as
HTML, the config as text, inline CSS, no scripts and no external resources, so the page
opens in any browser, offline, and can be mailed or archived as is.
"""

from __future__ import annotations

import base64
import html
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.88em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
.verdict { padding: 0.6em 0.9em; border-radius: 4px; margin: 0.8em 0; }
.good { background: #e6f4ea; } .warn { background: #fff4e5; } .bad { background: #fde8e8; }
"""

_CAPTIONS = {
    "training.png": "Training curves: cross-entropy (or KL), ESS with resampling marks, log Z.",
    "mode_weights.png": "Mode weights over training (dotted: the teacher's weights).",
    "density.png": "Model density with the data (grey) and the final walkers (red, area "
    "proportional to weight).",
    "samples.png": "Final walkers as images.",
    "trace.png": "Trace of independent chains under the trained energy (worst coordinate).",
    "rank.png": "Rank plot of the same chains: flat histograms when the chains agree.",
}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return "—"
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(rows: list[tuple[str, Any]], header: tuple[str, str] = ("quantity", "value")) -> str:
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in rows)
    return f"<table><tr><th>{header[0]}</th><th>{header[1]}</th></tr>{body}</table>"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cap = _CAPTIONS.get(path.name, path.stem)
    return (
        f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(cap)}</figcaption></figure>"
    )


def _verdict(diag: dict | None) -> str:
    if not diag:
        return '<p class="verdict warn">No diagnostics were run for this run.</p>'
    if "error" in diag:
        return f'<p class="verdict bad">The diagnostics failed: {html.escape(diag["error"])}</p>'
    r = diag["max_rhat"]
    if r < 1.01:
        cls, text = "good", "the independent chains agree (max R-hat below 1.01)."
    elif r < 1.1:
        cls, text = "warn", "the chains roughly agree (max R-hat below 1.1, above 1.01)."
    else:
        cls, text = (
            "bad",
            "the chains disagree (max R-hat above 1.1): local moves do not mix under the "
            "trained energy, so persistent walkers moved by them could not represent it "
            "without weights.",
        )
    return f'<p class="verdict {cls}">Max R-hat {r:.3f}: {text}</p>'


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the HTML report of a run directory.

    Args:
        run_dir: a directory written by ``smc-ebm fit``.
        out: the HTML file (default ``RUN_DIR/report.html``).

    Returns:
        The path written.
    """
    from smc_ebm.runs import load_run

    run = load_run(run_dir)
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report.html"
    run.figures = _inside_only(run.figures, run_dir)
    if not any(p.name == "training.png" and p.is_file() for p in run.figures):
        from smc_ebm.plots import plot_training

        path = run_dir / "figures" / "training.png"
        plot_training(run.history, path=path)
        run.figures.insert(0, path)

    name = str(run.config.get("name", run_dir.name))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>smc_ebm run: {html.escape(name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>smc_ebm run: {html.escape(name)}</h1>",
        f"<p>Created {html.escape(str(run.meta.get('created', '?')))}; "
        f"dimension {run.meta.get('dim')}; {run.walkers.shape[0]} walkers.</p>",
        "<h2>Summary</h2>",
        _table(
            [
                (k.replace("_", " "), v)
                for k, v in run.summary.items()
                if k != "metrics" and not isinstance(v, dict)
            ]
            + [(f"metric: {k}", v) for k, v in run.summary.get("metrics", {}).items()]
        ),
    ]
    exact = run.meta.get("exact_log_Z")
    if exact is not None:
        parts.append(f"<p>Exact log Z of the trained energy: {_fmt(float(exact))}.</p>")

    parts.append("<h2>Diagnostics of the negative samples</h2>")
    parts.append(_verdict(run.diagnostics))
    if run.diagnostics:
        parts.append(_table(list(run.diagnostics.items())))
    if run.diagnostics_table is not None:
        t = run.diagnostics_table.sort_values("r_hat", ascending=False).head(20)
        parts.append("<p>Scalars with the largest R-hat (at most 20):</p>")
        parts.append(t.to_html(float_format=lambda v: f"{v:.4g}", border=0))

    if run.sample and "error" in run.sample:
        parts.append("<h2>Generation</h2>")
        parts.append(f'<p class="verdict bad">{html.escape(run.sample["error"])}</p>')
    elif run.sample:
        s = run.sample
        parts.append("<h2>Generation</h2>")
        walkers = s.get("num_walkers", s.get("n"))  # runs written before the renaming: n
        runs_ = s.get("num_runs", s.get("n_runs"))
        line = (
            f"{walkers} samples by weighted annealing in {runs_} independent runs: "
            f"log Z = {_fmt(float(s['log_Z']))} ± {_fmt(float(s['log_Z_se']))} (one standard "
            f"error), ESS {_fmt(float(s['ess']))}."
        )
        if exact is not None:
            z = (float(s["log_Z"]) - float(exact)) / max(float(s["log_Z_se"]), 1e-300)
            line += f" Exact: {_fmt(float(exact))} ({z:+.1f} standard errors)."
        parts.append(f"<p>{line}</p>")

    parts.append("<h2>Figures</h2>")
    parts += [_img(p) for p in run.figures if p.is_file()]

    hist = run.history
    if "step" in hist and len(hist["step"]):
        parts.append("<h2>History (last record)</h2>")
        last = [(k, float(np.asarray(v)[-1])) for k, v in hist.items() if k != "step"]
        parts.append(_table([("step", int(hist["step"][-1])), *last]))

    cfg_files = _inside_only(sorted(run_dir.glob("config.*")), run_dir)
    cfg_text = cfg_files[0].read_text() if cfg_files else str(run.config)
    parts += [
        "<h2>Config</h2>",
        f"<pre>{html.escape(cfg_text, quote=False)}</pre>",
        "</body></html>",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")  # written whole, then renamed into place
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return out


def _inside_only(paths: list[Path], run_dir: Path) -> list[Path]:
    """The paths that lie inside ``run_dir`` (links followed).

    The others are skipped with a warning, so that a report never embeds a file from
    elsewhere (a ``run.json`` edited to name ``/etc/passwd`` as a figure, a link).
    """
    root = run_dir.resolve()
    kept = []
    for p in paths:
        if p.resolve().is_relative_to(root):
            kept.append(p)
        else:
            warnings.warn(
                f"{p} lies outside the run directory {run_dir}: not embedded in the report.",
                stacklevel=3,
            )
    return kept
