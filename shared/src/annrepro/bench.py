"""`annrepro bench`: any method of `annrepro.methods` on any vectors, side by side.

    rows = run_bench(xb, xq, ["catalyzer24,zn_79", "OPQ8_64,PQ8"], k=100, metric="l2", xt=xt)
    write_outputs(rows, "out/", title="my vectors")   # bench.csv, bench.md, two PNG plots

For each method: fit on the learn set (the base when none is given), add the base, search the
queries once to warm up (indexes built lazily are built then), and time a second search of all
queries (`repeats` times, the fastest kept: queries/s). Recalls against the exact ground truth
(given, or computed by faiss and cached). The same queries, ground truth and search call for
every method.

Plots in the style of ann-benchmarks: recall against bytes per vector and recall against
queries/s, the Pareto front (the points no other point beats on both axes) drawn as a line.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .metrics import n_recall_at, one_recall_at

__all__ = ["BenchRow", "run_bench", "pareto_front", "write_outputs", "recall_columns"]

log = logging.getLogger(__name__)


@dataclass
class BenchRow:
    """One method's line of a bench: code size, recalls, speed, training and encoding times."""

    method: str
    bytes_per_vector: float
    recalls: dict  # {"1-recall@1": 0.97, ...}
    queries_per_s: float
    train_s: float
    encode_s: float
    search_threads: int
    describe: dict


def recall_columns(k: int, gt_k: int) -> list[tuple[str, int, int]]:
    """[(name, n, m)] of the recalls a run reports: 1-recall@1/10/100 and 10-recall@10, those
    that k results and gt_k true neighbours allow."""
    cols = [(f"1-recall@{m}", 1, m) for m in (1, 10, 100) if m <= k]
    if k >= 10 and gt_k >= 10:
        cols.append(("10-recall@10", 10, 10))
    return cols


def _recalls(I, gt, k, nb):
    out = {}
    for name, n, m in recall_columns(k, gt.shape[1]):
        out[name] = one_recall_at(I, gt, m, nb) if n == 1 else n_recall_at(I, gt, n, m, nb)
    return out


def run_bench(
    xb,
    xq,
    methods,
    k: int = 100,
    metric: str = "l2",
    xt=None,
    gt=None,
    overrides: dict | None = None,
    repeats: int = 1,
    progress: bool = True,
    on_row=None,
) -> list[BenchRow]:
    """Fit, add and search each method spec; returns one BenchRow per method.

    overrides: {plugin: {setting: value}} for the learned stages (`annrepro.methods.make`);
    on_row: called with each finished row (e.g. to print it)."""
    import faiss

    from .groundtruth import cached_knn
    from .methods import make, plugin_name

    xt = xb if xt is None else xt
    if gt is None:
        _, gt = cached_knn(np.ascontiguousarray(xq, dtype=np.float32), xb, k, metric)
    gt = np.asarray(gt)
    overrides = overrides or {}
    rows = []
    for spec in methods:
        plugin = plugin_name(spec)
        m = make(spec, metric, **overrides.get(plugin, {}))
        log.info("%s: fitting on %d learn vectors", spec, len(xt))
        t0 = time.perf_counter()
        m.fit(xt, xb)
        t1 = time.perf_counter()
        m.add(xb)
        t2 = time.perf_counter()
        m.search(xq[: min(len(xq), 16)], k)  # warm-up: lazily built search structures
        best, I = float("inf"), None
        for _ in range(max(1, int(repeats))):
            t3 = time.perf_counter()
            _, I = m.search(xq, k)
            best = min(best, time.perf_counter() - t3)
        row = BenchRow(
            method=spec,
            bytes_per_vector=m.bytes_per_vector,
            recalls=_recalls(I, gt, k, len(xb)),
            queries_per_s=len(xq) / best if best > 0 else float("inf"),
            train_s=t1 - t0,
            encode_s=t2 - t1,
            search_threads=faiss.omp_get_max_threads(),
            describe=m.describe(),
        )
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def pareto_front(points, larger_x_better: bool) -> list[int]:
    """Indices of the (x, y) points on the Pareto front (y larger is better; x larger is better
    when larger_x_better, else smaller), ordered by x."""
    idx = []
    for i, (x, y) in enumerate(points):
        dominated = False
        for j, (x2, y2) in enumerate(points):
            if j == i:
                continue
            bx = x2 >= x if larger_x_better else x2 <= x
            sx = x2 > x if larger_x_better else x2 < x
            if bx and y2 >= y and (sx or y2 > y):
                dominated = True
                break
        if not dominated:
            idx.append(i)
    return sorted(idx, key=lambda i: points[i][0])


def _csv(rows: list[BenchRow]) -> str:
    names = list(rows[0].recalls) if rows else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "bytes_per_vector", *names, "queries_per_s", "train_s", "encode_s"])
    for r in rows:
        w.writerow(
            [
                r.method,
                repr(r.bytes_per_vector),
                *(repr(r.recalls[n]) for n in names),
                repr(r.queries_per_s),
                repr(r.train_s),
                repr(r.encode_s),
            ]
        )
    return buf.getvalue()


def plot_metric(rows: list[BenchRow]) -> str:
    names = list(rows[0].recalls)
    return "10-recall@10" if "10-recall@10" in names else names[-1]


def _markdown(rows: list[BenchRow], title: str, recall: str) -> str:
    names = list(rows[0].recalls)
    head = ["method", "bytes/vector", *names, "queries/s", "train s", "encode s"]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"`{r.method}`", f"{r.bytes_per_vector:g}"]
        cells += [f"{r.recalls[n]:.4f}" for n in names]
        cells += [f"{r.queries_per_s:.0f}", f"{r.train_s:.1f}", f"{r.encode_s:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for budget in sorted({r.bytes_per_vector for r in rows}):
        at = [r for r in rows if r.bytes_per_vector == budget]
        best = max(at, key=lambda r: r.recalls[recall])
        lines.append(
            f"- {budget:g} bytes/vector: best {recall} is `{best.method}` "
            f"({best.recalls[recall]:.4f}, of {len(at)} method(s) at this budget)."
        )
    threads = sorted({r.search_threads for r in rows})
    lines += ["", f"Search threads: {threads}. Plots: recall_vs_bytes.png, recall_vs_qps.png.", ""]
    return "\n".join(lines)


def _plot(rows, recall, path, x_of, xlabel, larger_x_better, logx, title):
    from .plotting import log_axis, pyplot, save_figure

    plt = pyplot()
    if plt is None:
        return None
    pts = [(x_of(r), r.recalls[recall]) for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for r, (x, y) in zip(rows, pts):
        ax.scatter([x], [y], s=28, zorder=3)
        ax.annotate(r.method, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    front = pareto_front(pts, larger_x_better)
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=1, label="Pareto")
    if logx:
        log_axis(ax, "x", base=2 if "bytes" in xlabel else 10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(recall)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def write_outputs(rows: list[BenchRow], out, title: str = "annrepro bench") -> dict:
    """bench.csv, bench.json (describe() of each method), bench.md and the two PNG plots in
    the folder `out` (each written atomically). Returns {kind: path}."""
    import json

    from .atomic import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recall = plot_metric(rows)
    paths = {"csv": out / "bench.csv", "md": out / "bench.md", "json": out / "bench.json"}
    atomic_write_text(paths["csv"], _csv(rows))
    atomic_write_text(paths["md"], _markdown(rows, title, recall))
    records = [asdict(r) for r in rows]
    atomic_write_text(paths["json"], json.dumps(records, indent=1, default=str) + "\n")
    b = _plot(
        rows,
        recall,
        out / "recall_vs_bytes.png",
        lambda r: r.bytes_per_vector,
        "bytes per vector",
        False,
        True,
        title,
    )
    q = _plot(
        rows,
        recall,
        out / "recall_vs_qps.png",
        lambda r: r.queries_per_s,
        "queries per second",
        True,
        True,
        title,
    )
    if b is not None:
        paths["recall_vs_bytes"], paths["recall_vs_qps"] = b, q
    return paths
