"""The comparison none of the three papers made: `annrepro.crosspaper`.

Every method of the three papers and the faiss baselines, on the same vectors, with the same
queries, the same exact ground truth and the same search call (`annrepro.methods`), at a few
bytes per vector. Spec: paper_tables/annrepro/crosspaper.toml (no published numbers: the table
is ours; its notes say how each method is set).

Each cell of a method whose training draws at random is the mean over `n_seeds` runs (seeds
ctx.seeds(), passed as the method's `seed` setting) with the sample std, and per-query recalls
averaged over the runs for the report's bootstrap interval: the networks (catalyzer, CCST,
KDindex) and the faiss baselines that draw (k-means of PQ / OPQ / RQ, ITQ's rotation, LSQ's
codes: their draws seeded from the run's seed, annrepro.methods.seed_faiss, instead of faiss's
fixed seeds, which made every run the same draw). A method that draws nothing (PCA, SQ, HNSW's
graph over SQ codes) runs once. Each run is
kept on disk (`annrepro.points`): a rerun computes only the runs missing. A method that fails
(a spec string its data cannot take, a training error) is a note naming it and the error; the
other methods are still produced.
"""

from __future__ import annotations

from .errors import AnnreproError
from .evaluate import RECALLS, SEEDED, run_method, seed_matters
from .points import cached_point
from .stats import mean_std_row
from .tables.runner import register

__all__ = ["crosspaper", "settings_of", "run_method", "RECALLS"]


def settings_of(items) -> dict:
    """["epochs=8", "preset=released"] -> {"epochs": 8, "preset": "released"} (JSON values)."""
    from .methods import parse_overrides

    return parse_overrides([f"x.{i}" for i in items]).get("x", {})


def _cached_run(ctx, spec, ds, xt, gt, k, seed, settings, data_key):
    """`run_method` of one (method, seed), from its point file when a previous run finished it."""
    from .methods import plugin_name

    plugin = plugin_name(spec)
    key = [spec, ds.metric, data_key, len(xt), k, seed, settings.get(plugin)]

    def run():
        return run_method(spec, ds.metric, xt, ds.xb, ds.xq, gt, k, seed, settings)

    return cached_point(ctx, "runs", key, run, code_of=[plugin])


@register("annrepro.crosspaper")
def crosspaper(spec, ctx):
    """catalyzer, CCST, KDindex and faiss PQ / OPQ / LSQ / RQ / ITQ+LSH / HNSW at 4-16 bytes
    per vector, one protocol: fit on the learn set, add the base, search the queries."""
    k = int(ctx.param("k"))
    rows = []
    for name, ds in ctx.each_dataset(ctx.param_list("datasets")):
        ntrain = int(ctx.param("ntrain"))
        xt = ds.xt[:ntrain] if ds.has_learn else ds.xb[:ntrain]
        if not ds.has_learn:
            ctx.note(f"{name}: {ds.name} has no learn set: methods are trained on the base")
        settings = {p: settings_of(ctx.param_list(p, default=[])) for p in SEEDED}
        per_budget: dict[float, list] = {}
        for spec_str in ctx.progress(ctx.param_list("methods", name), desc=name):
            gt = ds.gt(k)
            data_key = ds.content_key() if hasattr(ds, "content_key") else ds.describe()

            try:
                # a run per seed where the seed draws something (a network, k-means, a
                # rotation: annrepro.methods.seed_faiss); PCA, SQ, HNSW: one run is all runs
                wide = seed_matters(spec_str, ds.metric, xt.shape[1])
                seeds = ctx.seeds() if wide else ctx.seeds(1)
                runs = [
                    _cached_run(ctx, spec_str, ds, xt, gt, k, s, settings, data_key) for s in seeds
                ]
            except (AnnreproError, RuntimeError, ValueError) as e:  # one method, not the table
                ctx.note(f"{name}: {spec_str} not run: {' '.join(str(e).split())[:200]}")
                continue
            cols = [c for c in runs[0] if c in spec.columns and c != "bytes_per_vector"]
            row = mean_std_row(name, spec_str, runs, cols)
            row["bytes_per_vector"] = runs[0]["bytes_per_vector"]  # the same for every seed
            rows.append(row)
            per_budget.setdefault(row["bytes_per_vector"], []).append(row)
        for budget in sorted(per_budget):
            at = per_budget[budget]
            best = max(at, key=lambda r: r["1-recall@10"])
            ctx.note(
                f"{name}: at {budget:g} bytes/vector the best 1-recall@10 is {best['row']} "
                f"({100 * best['1-recall@10']:.1f} %, of {len(at)} method(s))"
            )
        _plots(ctx, name, [r for r in rows if r["dataset"] == name])
    ctx.note(
        f"{len(ctx.seeds())} seed(s) per method whose training draws at random (the networks; "
        f"faiss's k-means, ITQ and rotations seeded from the run's seed), one run of the others "
        f"(PCA, SQ, HNSW); search with "
        f"{ctx.threads} thread(s)"
    )
    return rows


def _plots(ctx, name, rows):
    """recall-vs-bytes and recall-vs-q/s PNGs of one data set, with the Pareto fronts."""
    from .bench import pareto_front
    from .plotting import log_axis, pyplot_or_note, save_figure, write_points

    slug = "".join(c if c.isalnum() else "_" for c in name).strip("_")
    pts = [(r["row"], r["bytes_per_vector"], r["q/s"], r["1-recall@10"]) for r in rows]
    write_points(ctx, f"{slug}_points.csv", ["method", "bytes_per_vector", "qps", "recall"], pts)
    plt = pyplot_or_note(ctx, "cross-paper")
    if plt is None:
        return
    for xi, xlabel, larger, fname in ((1, "bytes per vector", False, "bytes"),
                                      (2, "queries per second", True, "qps")):  # fmt: skip
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        xy = [(p[xi], 100 * p[3]) for p in pts]
        for p, (x, y) in zip(pts, xy):
            ax.scatter([x], [y], s=24, zorder=3)
            ax.annotate(p[0], (x, y), textcoords="offset points", xytext=(3, 2), fontsize=6)
        front = pareto_front(xy, larger)
        ax.plot([xy[i][0] for i in front], [xy[i][1] for i in front], "k--", lw=1, label="Pareto")
        log_axis(ax, "x", base=2 if fname == "bytes" else 10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("1-recall@10 (%)")
        ax.set_title(f"{name} ({ctx.scale})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        save_figure(fig, ctx.artifact(f"{slug}_recall_vs_{fname}.png"))
