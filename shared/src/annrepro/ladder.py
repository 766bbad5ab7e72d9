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
the tiny synthetic data). The learn set
is cut to its first `ntrain` rows (a parameter) unless the budget is "ntrain"; `base_in_fit =
true` on a ladder passes the base to `fit` (KDindex then learns its balanced codes on the
documents it indexes, as in the paper). At each rung
both methods run through `annrepro.crosspaper.run_method` (fit on the learn set, add the base,
search the queries) with the budget applied: a setting of the learned method ("catalyzer.epochs":
both methods if both are of that plugin), the learn rows ("ntrain": both methods), or the base
rows ("nb": both methods, ground truth recomputed exactly on that base). The margin is better
minus worse per query, averaged over `n_seeds` seeds: its bootstrap interval over the queries
is the report's bracket. The paper's margin is computed from the paper's own published cells
(`paper`: table, data set, column, better row, worse row), drawn as a line in the PNG.

Resumable: each finished rung is a JSON point file beside the results, keyed by everything the
rung depends on (ladder, rung, settings, data, seed and the code of annrepro and the plugins);
a rerun recomputes only the missing rungs.

Trend (a note per ladder): the distance to the paper's margin at the last rung against the
first; "converging toward the paper" when it shrank by more than the intervals' half-widths,
"diverging" when it grew by more, else "flat"; "growing past the paper's margin" when the margin
grew by more than that and ends beyond the paper's (the claim holds more strongly than printed).
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


def paper_margin(ref) -> float | None:
    """The paper's margin (in the column's published unit) from `[table, data set, column,
    better row, worse row]`, or None when either cell is not printed."""
    from .tables import find_specs

    table, dataset, column, better, worse = ref
    cells = find_specs(table)[0].published()
    b, w = cells.get((dataset, better, column)), cells.get((dataset, worse, column))
    if b is None or w is None or b.published is None or w.published is None:
        return None
    return b.published - w.published


def trend(margins, halfwidths, target) -> str:
    """The ladder's trend: "converging toward the paper", "diverging", "flat" or "growing past
    the paper's margin" (module docstring; the last: the margin grew and ends beyond the
    paper's, on its side)."""
    if target is None or len(margins) < 2:
        return "no paper margin" if target is None else "one rung"
    first, last = margins[0], margins[-1]
    noise = max(halfwidths[0], halfwidths[-1])
    sign = 1.0 if target >= 0 else -1.0
    if sign * (last - first) > noise and sign * (last - target) > noise:
        return "growing past the paper's margin"
    d0, d1 = abs(first - target), abs(last - target)
    if d1 < d0 - noise:
        return "converging toward the paper"
    if d1 > d0 + noise:
        return "diverging"
    return "flat"


def _halfwidth(per_query, seed=0, n_boot=1000) -> float:
    """Half the width of a seeded bootstrap 95 % interval of the mean of per_query."""
    v = np.asarray(per_query, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(hi - lo) / 2


def _apply(budget: str, value, settings: dict, spec: str) -> dict:
    from .methods import plugin_name

    out = {p: dict(v) for p, v in settings.items()}
    if "." in budget:
        plugin, name = budget.split(".", 1)
        if plugin_name(spec) == plugin:
            out.setdefault(plugin, {})[name] = value
    return out


def _rung(ctx, lad, ds, value, settings, k, seeds):
    """{'better', 'worse', 'margin', and their per-query means over seeds} of one rung."""
    from .evaluate import run_method
    from .groundtruth import cached_knn

    xt = ds.xt if getattr(ds, "has_learn", True) else ds.xb
    xb, xq = ds.xb, ds.xq
    if lad["budget"] == "ntrain":
        if int(value) > len(xt):
            raise ValueError(f"ladder {lad['id']}: ntrain={value} exceeds the {len(xt)} learn rows")
        xt = xt[: int(value)]
    else:
        xt = xt[: int(ctx.param("ntrain", default=len(xt)))]
    if lad["budget"] == "nb":
        if int(value) > len(xb):
            raise ValueError(f"ladder {lad['id']}: nb={value} exceeds the {len(xb)} base vectors")
        xb = np.ascontiguousarray(xb[: int(value)], dtype=np.float32)
        gt = cached_knn(np.ascontiguousarray(xq, dtype=np.float32), xb, k, ds.metric)[1]
    else:
        gt = ds.gt(k)
    col = lad["column"]
    per = {"better": [], "worse": []}
    for s in seeds:
        for side in per:
            spec = lad[side]
            res = run_method(
                spec,
                ds.metric,
                xt,
                xb,
                xq,
                gt,
                k,
                s,
                _apply(lad["budget"], value, settings, spec),
                base_in_fit=bool(lad.get("base_in_fit", False)),
            )
            per[side].append(res[col + ":per_query"])
    b = np.mean(per["better"], axis=0)
    w = np.mean(per["worse"], axis=0)
    return {"better": b.tolist(), "worse": w.tolist(), "margin": (b - w).tolist()}


def run_ladders(spec, ctx) -> list[dict]:
    """Every `[[ladders]]` of the spec at this scale: rows "<ladder id> @ <budget>=<value>"
    with the margin (and the two sides, and the paper's margin), PNG + points CSV per ladder."""
    from .methods import plugin_name
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
        target = paper_margin(lad["paper"]) if lad.get("paper") else None
        sides = ctx.param_list("methods", lad["id"], default=[lad["better"], lad["worse"]])
        lad = {**lad, "better": sides[0], "worse": sides[1]}  # a scale may name other methods
        plugins = {plugin_name(lad["better"]), plugin_name(lad["worse"])}
        data_key = ds.content_key() if hasattr(ds, "content_key") else ds.describe()
        margins, halves = [], []
        for value in ctx.progress(values, desc=lad["id"]):
            key = [lad, value, settings, data_key, seeds, k, ctx.param("ntrain", default=None)]
            point = cached_point(
                ctx,
                "points",
                key,
                lambda: _rung(ctx, lad, ds, value, settings, k, seeds),  # noqa: B023
                code_of=plugins,
            )
            col = lad["column"]
            m = float(np.mean(point["margin"]))
            margins.append(100 * m)
            halves.append(100 * _halfwidth(point["margin"]))
            row = {  # margins in points of the column (a difference: not a fraction in [0, 1])
                "dataset": name,
                "row": f"{lad['id']} @ {lad['budget']}={value}",
                "margin": 100 * m,
                "margin:per_query": (100 * np.asarray(point["margin"])).tolist(),
                "better": float(np.mean(point["better"])),
                "worse": float(np.mean(point["worse"])),
            }
            if target is not None:
                row["paper_margin"] = target
            rows.append(row)
        verdict = trend(margins, halves, target)
        trends[lad["id"]] = {
            "trend": verdict,
            "claims": list(lad.get("claims", [])),
            "budget": lad["budget"],
            "rungs": list(values),
            "margins": margins,
            "paper_margin": target,
        }
        ctx.note(
            f"{lad['id']} ({name}, {lad['better']} minus {lad['worse']}, {col}, against "
            f"{lad['budget']}): {verdict}"
            + ("" if target is None else f" (paper's margin {target:+.1f} points)")
        )
        pts = [(v, mm, h) for v, mm, h in zip(values, margins, halves)]
        write_points(ctx, f"{lad['id']}.csv", [lad["budget"], "margin", "halfwidth_95"], pts)
        _plot(ctx, lad, name, values, margins, halves, target)
    ctx.note(f"{len(seeds)} seed(s) per rung; threads {ctx.threads}")
    from .atomic import atomic_write_text

    atomic_write_text(ctx.artifact("trends.json"), json.dumps(trends, indent=1) + "\n")
    return rows


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
    ax.axhline(0, color="grey", lw=0.5)
    if all(v > 0 for v in values) and max(values) / min(values) > 8:
        ax.set_xscale("log")
    ax.set_xlabel(lad["budget"])
    ax.set_ylabel(f"{lad['column']}: {lad['better']} minus {lad['worse']} (points)")
    ax.set_title(f"{lad['id']} on {name} ({ctx.scale})", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save_figure(fig, ctx.artifact(f"{lad['id']}.png"))
