"""Optional plotting: figures written as PNG beside a table's results.

matplotlib is an optional dependency (`pip install annrepro[plots]`; the nox reproduce sessions
install it). Without it, `pyplot()` returns None and producers skip the picture with a note: the
points of every figure are always written as CSV, so no number depends on the plot.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from .atomic import atomic_path, atomic_write_text

__all__ = ["pyplot", "pyplot_or_note", "save_figure", "write_points", "log_axis"]


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend, or None if not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write `fig` as PNG at `path` atomically (temporary file + rename) and close it."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    finally:
        pyplot().close(fig)
    return path


def write_points(ctx, name: str, header, points) -> Path:
    """The points of a figure as the CSV artifact `name` of a table run (always written: no
    number depends on the plot). Floats are written with repr (round-trip exact)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for pt in points:
        w.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in pt])
    path = ctx.artifact(name)
    atomic_write_text(path, buf.getvalue())
    return path


def pyplot_or_note(ctx, what: str):
    """pyplot(), or None with a note on the table run that the PNG of `what` is skipped."""
    plt = pyplot()
    if plt is None:
        ctx.note(f"no {what} PNG: matplotlib is not installed (the points are in the CSV artifact)")
    return plt


def log_axis(ax, axis: str, base: int = 10) -> None:
    """A log-scale x or y axis whose ticks read as plain numbers (4, 8, 16 bytes; 1000 q/s)."""
    from matplotlib.ticker import LogLocator, ScalarFormatter

    set_scale = ax.set_xscale if axis == "x" else ax.set_yscale
    set_scale("log", base=base)
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(LogLocator(base=base))
    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    target.set_major_formatter(fmt)
