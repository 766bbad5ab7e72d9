"""The pictures of KDindex's Figures 3 and 4: their points as CSV, and PNG plots where matplotlib
is installed (`annrepro.plotting`), written as artifacts beside the table's results."""

from __future__ import annotations

import numpy as np
from annrepro.plotting import pyplot_or_note, save_figure, write_points


def write_figure3(ctx, points) -> None:
    """figure3.csv and figure3.png (heat maps of recall@10 over B x W: first line the quantizers,
    second line KDindex, as the paper). points: (dataset, method, B, W, recall@10 fraction)."""
    write_points(ctx, "figure3.csv", ("dataset", "method", "B", "W", "recall@10"), points)
    plt = pyplot_or_note(ctx, "Figure 3")
    if plt is None:
        return
    methods = list(dict.fromkeys(m for _, m, *_ in points))
    kinds = [m for m in methods if not m.startswith("KDindex")]
    Bs = sorted({B for _, _, B, _, _ in points})
    Ws = sorted({W for _, _, _, W, _ in points})
    fig, axes = plt.subplots(2, len(kinds), figsize=(4 * len(kinds), 7), squeeze=False)
    for j, kind in enumerate(kinds):
        for i, method in enumerate((kind, f"KDindex ({kind})")):
            grid = np.full((len(Bs), len(Ws)), np.nan)
            for _, m, B, W, r in points:
                if m == method:
                    grid[Bs.index(B), Ws.index(W)] = 100 * r
            ax = axes[i][j]
            ax.imshow(grid, cmap="Blues", vmin=0, vmax=100)
            ax.set_xticks(range(len(Ws)), [str(w) for w in Ws])
            ax.set_yticks(range(len(Bs)), [str(b) for b in Bs])
            if i == 1:
                ax.set_xlabel("W")
            ax.set_ylabel("B")
            ax.set_title(method)
            for (bi, wi), v in np.ndenumerate(grid):
                ax.text(wi, bi, f"{v:.1f}", ha="center", va="center", fontsize=8)
    fig.tight_layout()
    save_figure(fig, ctx.artifact("figure3.png"))


def write_figure4(ctx, points) -> None:
    """figure4.csv and figure4.png (recall@10 against latency, log scale, one panel per data
    set). points: (dataset, method, setting, recall@10 fraction, latency ms)."""
    header = ("dataset", "method", "setting", "recall@10", "latency_ms")
    write_points(ctx, "figure4.csv", header, points)
    plt = pyplot_or_note(ctx, "Figure 4")
    if plt is None:
        return
    names = list(dict.fromkeys(d for d, *_ in points))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for method in dict.fromkeys(m for d, m, *_ in points if d == name):
            pts = [(ms, r) for d, m, _, r, ms in points if d == name and m == method]
            ax.plot([x for x, _ in pts], [100 * y for _, y in pts], marker="o", label=method)
        ax.set_xscale("log")
        ax.set_xlabel("latency per query (ms)")
        ax.set_ylabel("Recall@10 (%)")
        ax.set_title(f"{name} ({ctx.scale})")
        ax.legend()
    save_figure(fig, ctx.artifact("figure4.png"))
