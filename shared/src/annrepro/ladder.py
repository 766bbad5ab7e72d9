"""Budget ladders: how a claim's margin moves as the training budget grows.

A ladder table (`<paper>.ladder`, spec `paper_tables/<paper>/ladder.toml`) holds one or more
ladders, each declared as `[[ladders]]` in the spec:

    [[ladders]]
    id = "lattice-vs-opq-epochs"
    dataset = "BigAnn1M"                 # a paper data set of the spec's scales
    better = "catalyzer24,zn_79"         # annrepro.methods spec strings
    worse = "OPQ8_64,PQ8np"
    column = "1-recall@10"
    budget = "catalyzer.epochs"          # "<plugin>.<setting>", "ntrain" or "nb"
    paper = ["catalyzer.table1", "BigAnn1M", "1-recall@10", "Catalyst+Lattice", "OPQ"]
    claims = ["catalyzer.table1:lattice-vs-opq-bigann"]   # what REPORT.md's claims section links

and the rungs per scale in the parameter `values = { <ladder id> = [8, 16, 32] }` (a scale may
replace the two methods: `methods = { <ladder id> = [better, worse] }`, e.g. narrower codes on
the tiny synthetic data; add settings for one ladder: `settings = { <ladder id> =
["csst.epochs=20"] }`; run it on fewer seeds: `seeds = { <ladder id> = 1 }`, or on its own
number of learn rows: `ntrain_for = { <ladder id> = 10000 }`). `margin = "ratio"`
on a ladder of a time column (e.g. "index_add_s", annrepro.evaluate.run_method's) makes its rows
the ratio worse / better per seed (the better method's speed-up), averaged over the seeds, in
the columns ratio / better_s / worse_s / paper_ratio, its interval a bootstrap over the seeds.
The learn set is cut to its first `ntrain` rows (a parameter) unless the budget is "ntrain";
`base_in_fit = true` on a ladder passes the base to `fit` (KDindex then learns its balanced
codes on the documents it indexes, as in the paper); `train_on = "base"` fits both methods on
the base's first rows instead of the learn set's (CCST, Sec. 4.1: "we take database as training
set"). At each rung both methods run through
`annrepro.evaluate.run_method` (fit on the learn set, add the base, search the queries) with
the budget applied: a setting of the learned method ("catalyzer.epochs":
both methods if both are of that plugin), the learn rows ("ntrain": both methods), or the base
rows ("nb": both methods, ground truth recomputed exactly on that base). The margin is better
minus worse per query and seed; the row's margin is its mean over `n_seeds` seeds and the
queries, and the report's bracket (and the PNG's error bar) a bootstrap 95 % interval that
resamples the seeds and the queries (`annrepro.tables.runner.bootstrap_interval`): it covers the
training's spread from seed to seed as well as the choice of queries. `seed_sd` is the sample
std over the seeds of the per-seed margins. The paper's margin is computed from the paper's own
published cells (`paper`: table, data set, column, better row, worse row), drawn as a line in
the PNG.

Shared and resumable: each run of one method at one rung and seed is a JSON point file beside
the results (`runs/`), keyed by what it depends on (method, data, learn and base rows, the
method's settings with the budget applied, k, seed, and the code of annrepro and the plugin),
not by the ladder: two ladders of a table with the same `better` method, budget and rungs (one
learned method against two baselines) share its fits, a baseline that the budget does not touch
(a faiss index against catalyzer epochs) runs once for all rungs, once per seed where its
training draws at random (k-means, ITQ, rotations, seeded from the run's seed:
annrepro.methods.seed_faiss, so the bracket covers the baseline's draw too) and once for all
seeds where it draws nothing (PCA, HNSW over the vectors). A rerun computes only the missing
runs. With `ANNREPRO_LADDER_JOBS=N` (N > 1; `annrepro reproduce --jobs N` and `annrepro reference
regenerate --jobs N` set it when they run fewer tables than N) the missing runs of the table are
first computed N at a time in worker processes (spawned, each at the table's thread count, the
last rungs first: they are the longest), each saved as it ends; the table is then put together
from the point files. A run's numbers do not depend on the process it ran in (each is seeded on
its own); its times (a ratio ladder's) do see the other workers' load, as two tables run side by
side do.

Trend (a note per ladder): the distance to the paper's margin at the last rung against the
first; "converging toward the paper" when it shrank by more than the intervals' half-widths,
"diverging" when it grew by more, else "flat"; "growing past the paper's margin" when the margin
grew by more than that and ends beyond the paper's (the claim holds more strongly than printed).
A ladder without a paper margin (`paper` omitted: a baseline the paper never ran) reads
"growing", "shrinking" or "flat": the margin's own move between the first and last rung.
"""

from __future__ import annotations

import json

import numpy as np

from .points import cached_point

__all__ = ["run_ladders", "register_ladder", "paper_margin", "trend"]


def register_ladder(paper: str) -> None:
    """Register `run_ladders` as the producer of `<paper>.ladder` (called by the paper's tables
    module, so that the paper's entry point brings its ladder table)."""
    from .tables import register

    register(f"{paper}.ladder")(run_ladders)


def paper_margin(ref, kind: str = "difference") -> float | None:
    """The paper's margin (in the column's published unit) from `[table, data set, column,
    better row, worse row]`, or None when either cell is not printed; kind "ratio": worse /
    better (a ratio ladder's)."""
    from .tables import find_specs

    table, dataset, column, better, worse = ref
    cells = find_specs(table)[0].published()
    b, w = cells.get((dataset, better, column)), cells.get((dataset, worse, column))
    if b is None or w is None or b.published is None or w.published is None:
        return None
    if kind == "ratio":
        return w.published / b.published if b.published else None
    return b.published - w.published


def trend(margins, halfwidths, target) -> str:
    """The ladder's trend: "converging toward the paper", "diverging", "flat" or "growing past
    the paper's margin" (module docstring; the last: the margin grew and ends beyond the
    paper's, on its side). Without a paper margin (a baseline the paper never ran): "growing",
    "shrinking" or "flat", the margin's own move from the first rung to the last."""
    if len(margins) < 2:
        return "one rung"
    first, last = margins[0], margins[-1]
    noise = max(halfwidths[0], halfwidths[-1])
    if target is None:
        if last - first > noise:
            return "growing (no paper margin)"
        if first - last > noise:
            return "shrinking (no paper margin)"
        return "flat (no paper margin)"
    sign = 1.0 if target >= 0 else -1.0
    if sign * (last - first) > noise and sign * (last - target) > noise:
        return "growing past the paper's margin"
    d0, d1 = abs(first - target), abs(last - target)
    if d1 < d0 - noise:
        return "converging toward the paper"
    if d1 > d0 + noise:
        return "diverging"
    return "flat"


def _halfwidth(per_seed_query) -> float:
    """Half the width of the bootstrap 95 % interval (seeds and queries resampled) of the mean
    of a (n_seeds, nq) array: the one the report brackets the row's margin with."""
    from .tables.runner import bootstrap_interval

    lo, hi = bootstrap_interval(per_seed_query)
    return (hi - lo) / 2


def _apply(budget: str, value, settings: dict, spec: str) -> dict:
    from .methods import plugin_name

    out = {p: dict(v) for p, v in settings.items()}
    if "." in budget:
        plugin, name = budget.split(".", 1)
        if plugin_name(spec) == plugin:
            out.setdefault(plugin, {})[name] = value
    return out


def _rung_data(lad, ds, value, ntrain, k):
    """(training rows, base, queries, ground truth) of one rung: the budget cuts the training
    rows ("ntrain") or the base ("nb", ground truth recomputed exactly), else ntrain rows. The
    training rows are the learn set's, or the base's with `train_on = "base"` (CCST's protocol,
    Sec. 4.1: the database as training set; the rung's base when the budget is "nb")."""
    from .groundtruth import cached_knn

    train_on = lad.get("train_on", "learn")
    if train_on not in ("learn", "base"):
        raise ValueError(f"ladder {lad['id']}: train_on = {train_on!r}: 'learn' or 'base'")
    xb, xq = ds.xb, ds.xq
    if lad["budget"] == "nb":
        if int(value) > len(xb):
            raise ValueError(f"ladder {lad['id']}: nb={value} exceeds the {len(xb)} base vectors")
        xb = np.ascontiguousarray(xb[: int(value)], dtype=np.float32)
        gt = cached_knn(np.ascontiguousarray(xq, dtype=np.float32), xb, k, ds.metric)[1]
    else:
        gt = ds.gt(k)
    on_base = train_on == "base" or not getattr(ds, "has_learn", True)
    xt = xb if on_base else ds.xt
    rows = "base" if on_base else "learn"
    if lad["budget"] == "ntrain":
        if int(value) > len(xt):
            raise ValueError(
                f"ladder {lad['id']}: ntrain={value} exceeds the {len(xt)} {rows} rows"
            )
        xt = xt[: int(value)]
    else:
        xt = xt[: int(ntrain if ntrain is not None else len(xt))]
    return xt, xb, xq, gt


def _side_runs(ctx, lad, side, ds, data, value, settings, k, seeds, data_key, plan=None):
    """The ladder's column for one method (`side`) at one rung, (n_seeds, nq) per query or
    (n_seeds, 1) for a column that is one number per run (a time): each (method, rung, seed)
    run from its point file when one exists. With `plan` (a dict): record the missing runs in
    it instead of running them, and return None."""
    from .evaluate import run_method, seed_matters
    from .methods import plugin_name

    xt, xb, xq, gt = data
    spec = lad[side]
    plugin = plugin_name(spec)
    applied = _apply(lad["budget"], value, settings, spec)
    base_in_fit = bool(lad.get("base_in_fit", False))
    wide = seed_matters(spec, ds.metric, xt.shape[1])  # else one run (PCA, HNSW) for every seed
    out = []
    for s in seeds:
        seed = s if wide else 0
        key = [spec, ds.metric, data_key, len(xt), len(xb), k, seed, applied.get(plugin)]
        key.append(base_in_fit)

        args = (spec, ds.metric, xt, xb, xq, gt, k, seed, applied, base_in_fit)

        def run(args=args, key=key):
            if plan is not None:
                plan[json.dumps(key, sort_keys=True, default=str)] = (key, [plugin], args)
                raise _Deferred
            return run_method(*args)

        try:
            res = cached_point(ctx, "runs", key, run, code_of=[plugin])
        except _Deferred:
            continue
        if plan is not None:
            continue
        col = lad["column"]
        v = res[col + ":per_query"] if col + ":per_query" in res else [res[col]]
        out.append(np.asarray(v, dtype=np.float64))
    return None if plan is not None else np.asarray(out)


def run_ladders(spec, ctx) -> list[dict]:
    """Every `[[ladders]]` of the spec at this scale: rows "<ladder id> @ <budget>=<value>"
    with the margin (and the two sides, and the paper's margin), PNG + points CSV per ladder."""
    jobs = point_jobs()
    if jobs > 1:
        missing: dict = {}
        _ladders(spec, ctx, plan=missing)  # what is not on disk yet
        _compute_points(ctx, list(missing.values()), jobs)
    return _ladders(spec, ctx)


def point_jobs() -> int:
    """ANNREPRO_LADDER_JOBS: worker processes for a ladder table's runs (default 1: in process)."""
    import os

    from .errors import AnnreproError

    raw = os.environ.get("ANNREPRO_LADDER_JOBS", "").strip() or "1"
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise AnnreproError(f"ANNREPRO_LADDER_JOBS={raw!r}: a whole number of processes, >= 1")
    return n


class _Deferred(Exception):
    """Raised in place of a missing run while planning (run_ladders with jobs > 1)."""


def _point_worker(args, n_threads):
    """One run_method in a worker process, at the table's thread count."""
    from .evaluate import run_method
    from .threads import set_threads

    set_threads(n_threads)
    return run_method(*args)


def _compute_points(ctx, tasks, jobs: int) -> None:
    """The planned runs (key, code_of, run_method args) in `jobs` spawned processes, the last
    planned first (the ladders' last rungs: the longest), each saved as a point as it ends."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    if not tasks:
        return
    pool = ProcessPoolExecutor(
        min(jobs, len(tasks)), mp_context=multiprocessing.get_context("spawn")
    )
    try:
        futs = {
            pool.submit(_point_worker, a, ctx.threads): (key, code) for key, code, a in tasks[::-1]
        }
        done = ctx.progress(as_completed(futs), total=len(futs), desc=f"runs ({jobs} processes)")
        for fut in done:
            key, code = futs[fut]
            res = fut.result()
            cached_point(ctx, "runs", key, lambda res=res: res, code_of=code)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _ladders(spec, ctx, plan=None) -> list[dict]:
    """run_ladders' rows; with `plan` (a dict), only record the runs that have no point file
    yet (key -> (key, code_of, run_method args)) and return nothing."""
    from .plotting import write_points

    k = int(ctx.param("k"))
    seeds = ctx.seeds()
    settings = {p: _settings(ctx, p) for p in ("catalyzer", "csst", "kdindex")}
    rows, trends = [], {}
    for lad in spec.raw.get("ladders", []):
        values = ctx.param_list("values", lad["id"], default=[])
        if not values:
            ctx.note(f"{lad['id']}: no rungs at {ctx.scale}")
            continue
        name, ds = next(iter(ctx.each_dataset([lad["dataset"]])), (None, None))
        if ds is None:
            continue
        target = None
        if lad.get("paper"):
            target = paper_margin(lad["paper"], lad.get("margin", "difference"))
        sides = ctx.param_list("methods", lad["id"], default=[lad["better"], lad["worse"]])
        lad = {**lad, "better": sides[0], "worse": sides[1]}  # a scale may name other methods
        data_key = ds.content_key() if hasattr(ds, "content_key") else ds.describe()
        margins, halves, sds = [], [], []
        ntrain = ctx.param("ntrain", default=None)
        ntrain = ctx.param("ntrain_for", lad["id"], default=ntrain)  # this ladder's own
        kind = lad.get("margin", "difference")
        if kind not in ("difference", "ratio"):
            raise ValueError(f"ladder {lad['id']}: margin = {kind!r}: 'difference' or 'ratio'")
        ratio = kind == "ratio"
        lad_settings = _ladder_settings(ctx, lad["id"], settings)
        lad_seeds = seeds[: int(ctx.param("seeds", lad["id"], default=len(seeds)))]
        for value in ctx.progress(values, desc=lad["id"]):
            data = _rung_data(lad, ds, value, ntrain, k)
            b, w = (
                _side_runs(
                    ctx, lad, side, ds, data, value, lad_settings, k, lad_seeds, data_key, plan
                )
                for side in ("better", "worse")
            )
            if plan is not None:
                continue
            row = {"dataset": name, "row": f"{lad['id']} @ {lad['budget']}={value}"}
            if ratio and b.shape[1] != 1:
                raise ValueError(
                    f"ladder {lad['id']}: margin = 'ratio' needs a column of one number per run "
                    f"(a time such as index_add_s), not the per-query {lad['column']!r}"
                )
            if ratio:  # a cost column (seconds): how many times the worse method's the better's
                m = w[:, 0] / b[:, 0]  # per seed
                margins.append(float(m.mean()))
                halves.append(_halfwidth(m[:, None]))  # over the seeds
                row.update(ratio=margins[-1], better_s=float(b.mean()), worse_s=float(w.mean()))
            else:
                m = 100 * (b - w)  # (n_seeds, nq), points of the column (not a fraction)
                margins.append(float(m.mean()))
                halves.append(_halfwidth(m))
                row.update(margin=margins[-1], better=float(b.mean()), worse=float(w.mean()))
                row["margin:per_query"] = m.tolist()  # one row per seed: the bracket resamples both
            per_seed = m if ratio else m.mean(axis=1)
            if len(lad_seeds) > 1:
                row["seed_sd"] = float(per_seed.std(ddof=1))
            if target is not None:
                row["paper_ratio" if ratio else "paper_margin"] = target
            rows.append(row)
            sds.append(row.get("seed_sd"))
        if plan is not None:
            continue
        verdict = trend(margins, halves, target)
        trends[lad["id"]] = {
            "trend": verdict,
            "claims": list(lad.get("claims", [])),
            "budget": lad["budget"],
            "rungs": list(values),
            "margins": margins,
            "paper_margin": target,
        }
        if ratio:
            what = f"{lad['worse']} / {lad['better']}"
            paper = "" if target is None else f" (paper's ratio {target:.2f})"
        else:
            what = f"{lad['better']} minus {lad['worse']}"
            paper = "" if target is None else f" (paper's margin {target:+.1f} points)"
        ctx.note(
            f"{lad['id']} ({name}, {what}, {lad['column']}, against {lad['budget']}"
            + ("" if len(lad_seeds) == len(seeds) else f", {len(lad_seeds)} seed(s)")
            + f"): {verdict}{paper}"
        )
        pts = list(zip(values, margins, halves, sds))
        head = [lad["budget"], lad.get("margin", "difference"), "halfwidth_95", "seed_sd"]
        write_points(ctx, f"{lad['id']}.csv", head, pts)
        _plot(ctx, lad, name, values, margins, halves, target)
    if plan is not None:
        return []
    ctx.note(
        f"{len(seeds)} seed(s) per rung; brackets and error bars: bootstrap 95 % over the seeds "
        f"and the queries; threads {ctx.threads}"
    )
    from .atomic import atomic_write_text

    atomic_write_text(ctx.artifact("trends.json"), json.dumps(trends, indent=1) + "\n")
    return rows


def _ladder_settings(ctx, lad_id, settings) -> dict:
    """The table's method settings with this ladder's own on top (scale param `settings = {
    <ladder id> = ["csst.epochs=20"] }`: "<plugin>.<setting>=<value>" items)."""
    from .methods import parse_overrides

    own = parse_overrides(ctx.param_list("settings", lad_id, default=[]))
    out = {p: dict(v) for p, v in settings.items()}
    for plugin, kv in own.items():
        out.setdefault(plugin, {}).update(kv)
    return out


def _settings(ctx, plugin) -> dict:
    from .crosspaper import settings_of

    return settings_of(ctx.param_list(plugin, default=[]))


def _plot(ctx, lad, name, values, margins, halves, target):
    from .plotting import pyplot_or_note, save_figure

    plt = pyplot_or_note(ctx, f"{lad['id']} ladder")
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    ax.errorbar(values, margins, yerr=halves, fmt="o-", capsize=3, label="ours (95 % interval)")
    if target is not None:
        ax.axhline(target, color="k", ls="--", lw=1, label="paper")
    ax.axhline(1 if lad.get("margin") == "ratio" else 0, color="grey", lw=0.5)
    if all(v > 0 for v in values) and max(values) / min(values) > 8:
        ax.set_xscale("log")
    ax.set_xlabel(lad["budget"])
    if lad.get("margin", "difference") == "ratio":
        ax.set_ylabel(f"{lad['column']}: {lad['worse']} / {lad['better']}")
    else:
        ax.set_ylabel(f"{lad['column']}: {lad['better']} minus {lad['worse']} (points)")
    ax.set_title(f"{lad['id']} on {name} ({ctx.scale})", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save_figure(fig, ctx.artifact(f"{lad['id']}.png"))
