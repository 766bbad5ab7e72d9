"""`results/REPORT.md`: every table run so far, beside the paper, with claim verdicts.

For each scale that has results, one summary line per table, then per table: the data sets that
produced the numbers (and what they stand in for), the parameters, and a table
published | ours | signed delta | status. Recall columns show a 95 % Wilson interval computed from
the number of queries (with 100 queries one query is one point of recall).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..atomic import atomic_write_text
from ..metrics import binomial_ci
from ..paths import results_root
from .compare import Comparison, compare_run
from .runner import load_run
from .spec import SCALES, find_specs

__all__ = ["write_report", "collect"]

log = logging.getLogger(__name__)


def _fmt(v, digits=4):
    if v is None:
        return "–"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    return f"{v:.{digits}g}" if a < 0.01 and v != 0 else f"{v:.2f}"


def _ci(comp: Comparison, cell) -> str:
    """The cell's 95 % interval (see the module docstring), or ""."""
    if cell.measured is None:
        return ""
    stored = comp.run.intervals.get((cell.dataset, cell.row, cell.column))
    if stored is not None:
        return f" [{stored[0]:.1f}, {stored[1]:.1f}]"
    col = comp.spec.columns[cell.column]
    binary = col.unit == "%" and cell.column.startswith("1-recall@")  # 0/1 per query
    info = comp.run.provenance.get("datasets", {}).get(cell.dataset)
    if not binary or cell.measured_std is not None or not info:  # a mean over seeds is not 0/1
        return ""
    lo, hi = binomial_ci(cell.measured / 100, info["nq"])
    return f" [{100 * lo:.1f}, {100 * hi:.1f}]"


def collect(pattern: str = "*", scales=SCALES, root: Path | None = None) -> list[Comparison]:
    """The comparisons of the tables matching pattern that have a run at one of scales."""
    out = []
    for spec in find_specs(pattern):
        for scale in scales:
            run = load_run(spec, scale, (root or results_root()) / scale)
            if run is not None:
                out.append(compare_run(spec, run))
    return out


def _artifact_md(paths, base: Path | None) -> list[str]:
    """Figures embedded, other artifacts linked, relative to the report where possible."""
    L = []
    for a in paths:
        p = Path(a)
        if not p.exists():
            continue
        try:
            rel = p.relative_to(base).as_posix() if base is not None else str(p)
        except ValueError:
            rel = str(p)
        L.append(f"![{p.name}]({rel})" if p.suffix == ".png" else f"- file: [{p.name}]({rel})")
    return L


def _table_md(comp: Comparison, base: Path | None = None) -> list[str]:
    spec, run = comp.spec, comp.run
    L = [f"### {spec.id} [{run.scale}]: {spec.title} ({spec.source})", ""]
    L.append(f"`{comp.summary_line()}`")
    L.append("")
    prov = run.provenance
    for name, info in prov.get("datasets", {}).items():
        L.append(
            f"- **{name}** ← `{info['name']}` ({info['scale']}): nb={info['nb']:,}, "
            f"nq={info['nq']:,}, nt={info['nt']:,}, d={info['d']}, {info['metric']}"
            + (" (learn set = base)" if info.get("learn_is_base") else "")
            + (f"; stands in for {info['stands_in_for']}" if info.get("stands_in_for") else "")
        )
    L.append(
        f"- seed {prov.get('seed')}, {prov.get('threads')} threads, wall {prov.get('wall_s')} s, "
        f"commit `{prov.get('git_commit', '?')[:12]}`, on {_machine(prov)}"
    )
    for n in prov.get("notes", []):
        L.append(f"- note: {n}")
    arts = _artifact_md(prov.get("artifacts", []), base)
    if arts:
        L += [""] + arts
    if spec.notes:
        L += [
            "",
            "<details><summary>protocol notes (from the spec)</summary>",
            "",
            spec.notes.strip(),
            "",
            "</details>",
        ]
    if run.error:
        L += ["", f"**ERROR**: {run.error}"]
    if run.failed_rerun:
        f = run.failed_rerun
        L += [
            "",
            f"**The latest rerun failed** ({f.get('started', '?')}, commit "
            f"`{str(f.get('git_commit', '?'))[:12]}`): {f.get('error')}. The numbers below are "
            f"the earlier good run's ({prov.get('started', '?')}).",
        ]
    if prov.get("pending"):
        L += ["", f"*Not produced*: {prov['pending']}."]
    if spec.raw.get("table", {}).get("layout") == "wide":
        return L + _wide_md(comp)
    L += [
        "",
        "| data set | row | column | published | ours | Δ (ours − paper) | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in comp.cells:
        unit = spec.columns[c.column].unit
        pub = c.published_text or "–"
        if c.published_std is not None:
            pub += f" ± {c.published_std:g}"
        ours = _fmt(c.measured) + _ci(comp, c)
        if c.measured_std is not None:
            ours += f" ± {_fmt(c.measured_std)}"
        if c.measured is not None and unit and unit != "%":
            ours += f" {unit}"
        delta = "" if c.delta is None else f"{c.delta:+.3g}"
        if spec.columns[c.column].compare == "ratio" and c.delta is not None:
            delta += " (ratio)"
        status = c.status if not c.note else f"{c.status} ¹"
        L.append(f"| {c.dataset} | {c.row} | {c.column} | {pub} | {ours} | {delta} | {status} |")
    notes = [(c.dataset, c.row, c.column, c.note) for c in comp.cells if c.note]
    if notes:
        L += ["", "¹ notes:"]
        L += [f"- {d} / {r} / {col}: {n}" for d, r, col, n in notes]
    if comp.claims:
        L += ["", "| claim | ours | paper's own numbers | detail |", "|---|---|---|---|"]
        for cr in comp.claims:
            flag = " ⚠ the paper's table does not support this" if cr.paper == "fails" else ""
            L.append(f"| {cr.claim.text} | **{cr.ours}** | {cr.paper}{flag} | {cr.detail} |")
    L.append("")
    return L


def _ours(comp: Comparison, c) -> str:
    unit = comp.spec.columns[c.column].unit
    out = _fmt(c.measured) + _ci(comp, c)
    if c.measured_std is not None:
        out += f" ± {_fmt(c.measured_std)}"
    if c.measured is not None and unit and unit != "%":
        out += f" {unit}"
    return out


def _wide_md(comp: Comparison) -> list[str]:
    """A table of our own numbers (`layout = "wide"` in the spec, no published cells): one
    Markdown table per data set, a row per method, a column per measured column."""
    cols = list(comp.spec.columns)
    L = []
    for ds in dict.fromkeys(c.dataset for c in comp.cells):
        cells = {(c.row, c.column): c for c in comp.cells if c.dataset == ds}
        L += ["", f"**{ds}**", "", "| row | " + " | ".join(cols) + " |"]
        L.append("|---|" + "---|" * len(cols))
        for row in dict.fromkeys(r for r, _ in cells):
            vals = [_ours(comp, cells[(row, c)]) if (row, c) in cells else "–" for c in cols]
            L.append(f"| {row} | " + " | ".join(vals) + " |")
    L.append("")
    return L


def _scale_run(spec, scale, root):
    """(run, where) of a table at a scale: this results folder's run, else the committed
    reference (results-reference/), else (None, "")."""
    from ..reference import load_reference

    run = load_run(spec, scale, root / scale)
    if run is not None and not run.error:
        return run, "results"
    ref = load_reference(spec, scale)
    return (ref, "reference") if ref is not None and not ref.error else (None, "")


def _trends(specs, root) -> dict:
    """{"<table>:<claim id>": "<trend> (<ladder> at <scale>, `commit`)"} from the ladders'
    trends.json (this results folder first, then results-reference/), marked *stale* when the
    ladder run was made by other code or spec than HEAD's."""
    import json

    from ..reference import is_stale, reference_root

    out = {}
    for spec in specs:
        if not spec.raw.get("ladders"):
            continue
        for scale in ("small", "medium", "full"):
            run, where = _scale_run(spec, scale, root)
            if run is None:
                continue
            base = root / scale if where == "results" else reference_root() / scale
            path = base / spec.id / "trends.json"
            if not path.is_file():
                continue
            commit = str(run.provenance.get("git_commit", "?"))[:12]
            try:
                stale = " *stale*" if is_stale(spec, run) else ""
            except Exception:  # noqa: BLE001 - the report never fails on a fingerprint
                stale = ""
            for lid, t in json.loads(path.read_text()).items():
                for claim in t.get("claims", []):
                    out.setdefault(claim, f"{t['trend']} ({lid} at {scale}, `{commit}`{stale})")
    return out


def _claims_md(specs, root) -> list[str]:
    """Per claim: the verdict at small and at medium (each with its commit, and whether it is a
    committed reference, stale against HEAD's code), and the trend of the ladder measuring it."""
    from ..reference import is_stale

    trends = _trends(specs, root)
    L = [
        "## Claims across scales",
        "",
        "Per claim: our verdict at `small` and at `medium` (from this results folder, else the "
        "committed `results-reference/`, marked *ref*; *stale* when made by other code than "
        "HEAD's), and the trend of the budget ladder that measures it (`<paper>.ladder`).",
        "",
        "| claim | small | medium | ladder trend |",
        "|---|---|---|---|",
    ]
    for spec in specs:
        if not spec.claims:
            continue
        cols = {}
        for scale in ("small", "medium"):
            run, where = _scale_run(spec, scale, root)
            if run is None:
                cols[scale] = {}
                continue
            tag = f"`{str(run.provenance.get('git_commit', '?'))[:12]}`"
            if where == "reference":
                tag += " ref"
            try:
                if is_stale(spec, run):
                    tag += " *stale*"
            except Exception:  # noqa: BLE001 - the report never fails on a fingerprint
                pass
            cols[scale] = {c.claim.id: f"{c.ours} ({tag})" for c in compare_run(spec, run).claims}
        for claim in spec.claims:
            key = f"{spec.id}:{claim.id}"
            small = cols["small"].get(claim.id, "–")
            medium = cols["medium"].get(claim.id, "–")
            label = f"{spec.id} `{claim.id}`: {claim.text}"
            L.append(f"| {label} | {small} | {medium} | {trends.get(key, '–')} |")
    L.append("")
    return L


def _machine(prov: dict) -> str:
    """The CPU kind a run was made on (vendor | model | SIMD), else faiss's SIMD level."""
    m = prov.get("machine") or {}
    return m.get("kind") or (f"faiss {m['faiss_simd']}" if m.get("faiss_simd") else "?")


def _timing_md(comps: list[Comparison]) -> list[str]:
    """Wall time of each table's last run and their sum, with the threads and CPU each used
    (timings from different CPU kinds do not add up to one machine's time)."""
    L = [
        "| table | wall time | threads | started | commit | machine |",
        "|---|---|---|---|---|---|",
    ]
    total = 0.0
    for c in comps:
        p = c.run.provenance
        wall = float(p.get("wall_s") or 0.0)
        total += wall
        L.append(
            f"| {c.spec.id} | {wall / 60:.1f} min | {p.get('threads', '?')} | "
            f"{p.get('started', '?')} | `{str(p.get('git_commit', '?'))[:12]}` | "
            f"{_machine(p)} |"
        )
    L += [f"| **all** | **{total / 60:.1f} min** | | | | |", ""]
    return L


def write_report(pattern: str = "*", path: Path | None = None, root: Path | None = None) -> Path:
    """Write REPORT.md for every table that has results; returns its path."""
    root = root or results_root()
    comps = collect(pattern, root=root)
    path = path or root / "REPORT.md"
    L = ["# annrepro: regenerated tables beside the published ones", ""]
    L.append(
        "Each table was regenerated by its producer at the scale named in its header: `tiny` is "
        "synthetic data (checks the pipeline, not the paper), `small` uses real stand-in data "
        "sets that are much smaller than the papers' (differences from the paper are expected "
        "and say nothing about the method by themselves), `full` uses the papers' own data. "
        "Timings are measured on this machine and shown as `info`, or compared as ratios to a "
        "baseline row of the same run. Brackets are 95 % intervals over the queries: a "
        "bootstrap of the per-query values, or for a single run's 1-recall the Wilson interval."
    )
    L.append("")
    skipped = [
        f"{c.spec.id} [{c.run.scale}] {name}"
        for c in comps
        for name in c.run.provenance.get("skipped_datasets", {})
    ]
    if skipped:
        L += [f"**Rows skipped for missing data** ({len(skipped)}): " + "; ".join(skipped), ""]
    substituted = [
        f"{c.spec.id} [{c.run.scale}] {name} on {v.get('used')} (for {v.get('wanted')})"
        for c in comps
        for name, v in (c.run.provenance.get("substituted_datasets") or {}).items()
    ]
    if substituted:
        L += [
            f"**Rows measured on substitute data** ({len(substituted)}; the data set the spec "
            "names is not on this machine): " + "; ".join(substituted),
            "",
        ]
    if not comps:
        L.append("No results yet: run `annrepro reproduce` (or `nox -s reproduce`).")
    for scale in SCALES:
        sc = [c for c in comps if c.run.scale == scale]
        if not sc:
            continue
        L += [f"## Scale `{scale}`", "", "```"] + [c.summary_line() for c in sc] + ["```", ""]
        L += _timing_md(sc)
        for c in sc:
            L += _table_md(c, base=path.parent.resolve())
    L += _claims_md(find_specs(pattern), root)
    atomic_write_text(path, "\n".join(L) + "\n")
    return path
