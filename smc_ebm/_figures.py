"""Figures on an Agg canvas, and saving them: shared by the plot modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def new_figure(figsize: tuple[float, float] = (6.4, 4.0)) -> Any:
    """A ``Figure`` attached to an Agg canvas, with constrained layout."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Any, path: str | Path | None, dpi: int = 110) -> Any:
    """Save ``fig`` as ``path`` (parents created) when ``path`` is given; return ``fig``."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    return fig
