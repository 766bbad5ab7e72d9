"""Compare a run with the published table: per-cell verdicts and claim verdicts.

Cell statuses:
- `within tol` / `off`: judged by the column's rule (abs, rel, or ratio to a baseline row);
- `info`: shown, never judged (timings measured on other hardware, statistics of stand-ins);
- `not measured`: published but not produced (yet);
- `extra`: produced but not printed in the paper.

Claims get `holds`, `fails` or `not measured`, on our numbers and on the published ones (a claim
that fails on the paper's own table is flagged: the text says more than the table shows).
"""

from __future__ import annotations

from dataclasses import dataclass

from .runner import TableRun
from .spec import Claim, TableSpec

__all__ = ["CellResult", "ClaimResult", "Comparison", "compare_run", "claim_verdict"]

WITHIN, OFF, INFO, NOT_MEASURED, EXTRA = "within tol", "off", "info", "not measured", "extra"


@dataclass
class CellResult:
    """One table cell: the published and measured values, their difference and status."""

    dataset: str
    row: str
    column: str
    published: float | None
    published_text: str
    published_std: float | None
    measured: float | None
    measured_std: float | None
    delta: float | None
    status: str
    note: str = ""


@dataclass
class ClaimResult:
    """A claim's verdict on our numbers and on the paper's own."""

    claim: Claim
    ours: str
    paper: str
    detail: str


@dataclass
class Comparison:
    """A table run compared with its spec: cells, claims and the summary line."""

    spec: TableSpec
    run: TableRun
    cells: list[CellResult]
    claims: list[ClaimResult]

    def counts(self) -> dict:
        c = {}
        for cell in self.cells:
            c[cell.status] = c.get(cell.status, 0) + 1
        return c

    def summary_line(self) -> str:
        c = self.counts()
        n = len(self.cells)
        held = sum(r.ours == "holds" for r in self.claims)
        judged = sum(r.ours != "not measured" for r in self.claims)
        parts = [f"{self.spec.id} [{self.run.scale}] {n} cells"]
        for key in (WITHIN, OFF, INFO, NOT_MEASURED, EXTRA):
            if c.get(key):
                parts.append(f"{c[key]} {key}")
        if self.claims:
            if judged:
                extra = len(self.claims) - judged
                parts.append(
                    f"claims {held}/{judged} hold" + (f" ({extra} not measured)" if extra else "")
                )
            else:
                parts.append(f"{len(self.claims)} claims not measured")
        if self.run.provenance.get("pending"):
            parts.append("no producer yet")
        if self.run.error:
            parts.append(f"ERROR: {self.run.error}")
        return " · ".join(parts)


def _judge(col, pub, meas, pub_base, meas_base):
    """Return (status, delta) for one cell."""
    if col.compare == "info":
        return INFO, meas - pub
    if col.compare == "ratio":
        if not pub_base or not meas_base or (pub == pub_base and meas == meas_base):
            # the baseline row itself (ratio 1 = 1 by construction) is shown, not judged
            return INFO, None
        r_pub, r_meas = pub / pub_base, meas / meas_base
        delta = r_meas - r_pub
        ok = abs(delta) <= col.tol * abs(r_pub)
        return (WITHIN if ok else OFF), delta
    delta = meas - pub
    if col.compare == "rel":
        ok = abs(delta) <= col.tol * abs(pub)
    else:
        ok = abs(delta) <= col.tol
    return (WITHIN if ok else OFF), delta


def claim_verdict(claim: Claim, values: dict, higher_is_better: bool) -> tuple[str, str]:
    """Verdict of a claim on `values[(dataset, row, column)] -> number (published unit)`."""
    b = values.get((claim.dataset, claim.better, claim.column))
    w = values.get((claim.dataset, claim.worse, claim.column))
    if b is None or w is None:
        return "not measured", ""
    if claim.ratio is not None:
        num, den = (b, w) if higher_is_better else (w, b)
        if den <= 0:
            return "fails", f"ratio undefined ({num:g}/{den:g})"
        r = num / den
        return (
            "holds" if r >= claim.ratio else "fails"
        ), f"ratio {r:.2f} (needs >= {claim.ratio:g})"
    gap = (b - w) if higher_is_better else (w - b)
    ok = gap > claim.margin
    return (
        "holds" if ok else "fails"
    ), f"{claim.better} {b:.4g} vs {claim.worse} {w:.4g}: gap {gap:+.4g} (needs > {claim.margin:g})"


def _cell(c, measured, status, delta=None, note=None) -> CellResult:
    """A published cell `c` with its measurement `(value, std)` or None."""
    mv, ms = measured if measured is not None else (None, None)
    return CellResult(
        c.dataset,
        c.row,
        c.column,
        c.published,
        c.published_text,
        c.std,
        mv,
        ms,
        delta,
        status,
        c.note if note is None else note,
    )


def compare_run(spec: TableSpec, run: TableRun) -> Comparison:
    """Compare a table run with its spec's published cells and claims."""
    pub = spec.published()
    meas = run.measured
    cells = []
    for key, c in pub.items():
        col = spec.columns[c.column]
        m = meas.get(key)

        if m is None:
            cells.append(_cell(c, None, NOT_MEASURED))
        elif c.published is None:
            cells.append(_cell(c, m, EXTRA, note=c.note or "not printed in the paper"))
        else:
            pub_base = meas_base = None
            if col.compare == "ratio":
                bkey = (c.dataset, col.baseline_row, c.column)
                pub_base = pub[bkey].published if bkey in pub else None
                meas_base = meas.get(bkey, (None,))[0]
            status, delta = _judge(col, c.published, m[0], pub_base, meas_base)
            cells.append(_cell(c, m, status, delta))
    for key, m in meas.items():
        if key not in pub:
            cells.append(
                CellResult(
                    *key, None, "", None, m[0], m[1], None, EXTRA, "not in the paper's table"
                )
            )

    claims = []
    ours = {k: v[0] for k, v in meas.items()}
    paper = {k: c.published for k, c in pub.items() if c.published is not None}
    for cl in spec.claims:
        hib = spec.columns[cl.column].higher_is_better
        v_ours, d_ours = claim_verdict(cl, ours, hib)
        v_pap, d_pap = claim_verdict(cl, paper, hib)
        if run.scale not in cl.scales and v_ours != "not measured":
            d_ours = f"(not claimed at {run.scale}) {d_ours}"
        claims.append(ClaimResult(cl, v_ours, v_pap, d_ours or d_pap))
    return Comparison(spec, run, cells, claims)
