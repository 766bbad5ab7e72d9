"""The pictures of the catalyzer paper's Figures 5 and 3: their points as CSV, and PNG plots where
matplotlib is installed (`annrepro.plotting`; otherwise a note says so), written as artifacts
beside the table's results."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from annrepro.plotting import pyplot_or_note, save_figure, write_points

from .analysis import nn_overlap_probability


class Figure5Point(NamedTuple):
    """One point of Figure 5 (a row of figure5.csv)."""

    dataset: str  # paper data set name
    stand_in: str  # registry data set used at this scale
    row: str
    method: str  # "Catalyst+Lattice" or "OPQ"
    d_out: int | None  # catalyzer output dimension (None for OPQ)
    r2: int | None  # squared lattice radius (None for OPQ)
    bits: int
    recall: float  # 1-recall@10

    def table_row(self) -> dict:
        """The point as a row of catalyzer.figure5."""
        return {
            "dataset": self.dataset,
            "row": self.row,
            "1-recall@10": self.recall,
            "bits": self.bits,
        }


def write_figure5(ctx, points: list[Figure5Point]) -> None:
    """figure5.csv (every point) and figure5.png: one panel per data set, 1-recall@10 (%) vs bits
    per vector; one curve per d_out (radius varied along the curve) and OPQ."""
    write_points(ctx, "figure5.csv", Figure5Point._fields[:-1] + ("1-recall@10",), points)
    plt = pyplot_or_note(ctx, "Figure 5")
    if plt is None or not points:
        return
    names = list(dict.fromkeys(pt.dataset for pt in points))
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        mine = [pt for pt in points if pt.dataset == name]
        curves = {}
        for pt in mine:
            label = f"{pt.method} d_out={pt.d_out}" if pt.d_out is not None else pt.method
            curves.setdefault(label, []).append((pt.bits, 100 * pt.recall))
        for label, xy in curves.items():
            xy.sort()
            style = dict(color="black", linestyle="--", marker="s") if label == "OPQ" else {}
            ax.plot(*zip(*xy, strict=True), marker=style.pop("marker", "o"), label=label, **style)
        ax.set_xlabel("bits per vector")
        ax.set_ylabel("1-recall@10 (%)")
        ax.set_title(f"{name} ({mine[0].stand_in}, {ctx.scale})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, ctx.artifact("figure5.png"))


def write_figure3(ctx, hist, n_rank: int) -> None:
    """Figure 3 (Sec. 3.3): histograms of the distance of each query to its 1st and to its
    n_rank-th nearest neighbour, input space (left) vs catalyzed space (right).

    hist: (paper name, stand-in, space, d1 float (nq,), d_{n_rank} float (nq,)) per data set and
    space (`analysis.uniformity_rows`). Writes the per-query distances as `figure3.csv` and, with
    matplotlib, `figure3.png` (one row of two panels per data set). The overlap of the two
    histograms is what p_nn1_gt_nn100 measures.
    """
    points = [
        (name, stand_in, space, i, float(a), float(b))
        for name, stand_in, space, d1, dn in hist
        for i, (a, b) in enumerate(zip(d1, dn, strict=True))
    ]
    write_points(
        ctx,
        "figure3.csv",
        ("dataset", "stand_in", "space", "query", "d_nn1", f"d_nn{n_rank}"),
        points,
    )
    plt = pyplot_or_note(ctx, "Figure 3")
    if plt is None or not hist:
        return
    names = list(dict.fromkeys(h[0] for h in hist))
    spaces = ["input space", "Catalyzer output"]
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 3.6 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        for c, space in enumerate(spaces):
            ax = axes[r][c]
            found = [h for h in hist if h[0] == name and h[2] == space]
            if not found:
                ax.set_axis_off()
                continue
            _, stand_in, _, d1, dn = found[0]
            bins = np.linspace(0, float(max(d1.max(), dn.max())) * 1.02, 60)
            ax.hist(d1, bins=bins, alpha=0.6, label="1st nearest neighbour")
            ax.hist(dn, bins=bins, alpha=0.6, label=f"{n_rank}th nearest neighbour")
            ax.set_title(
                f"{name} ({stand_in}): {space}\n"
                f"P(d_nn1 > d_nn{n_rank} of another) = {100 * nn_overlap_probability(d1, dn):.1f}%",
                fontsize=9,
            )
            ax.set_xlabel("L2 distance")
            ax.set_ylabel("queries")
            ax.legend(fontsize=8)
    save_figure(fig, ctx.artifact("figure3.png"))
