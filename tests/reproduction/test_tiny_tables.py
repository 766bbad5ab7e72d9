"""Every registered table end to end at the `tiny` scale, against committed snapshots.

The snapshot of a table is our own seeded tiny output (never the paper's numbers): it catches
unintended changes. Timing columns are excluded (they vary run to run). Regenerate after an
intended change with ANNREPRO_UPDATE_SNAPSHOTS=1 and say why in the commit message.
"""

import csv
import io
import math
import os
from pathlib import Path

import pytest
from annrepro.tables import compare_run, find_specs, producers, run_table

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("ANNREPRO_UPDATE_SNAPSHOTS") == "1"
# Tight: tiny runs are single-threaded, seeded, and faiss is pinned to one SIMD level (conftest);
# only floating-point summation order across library builds may move a value.
ABS_TOL = 1e-6


def _tiny_specs():
    out = []
    for spec in find_specs("*"):
        if "tiny" in spec.scales and spec.id in producers(spec.paper):
            out.append(spec)
    return out


SPECS = _tiny_specs()


def _snapshot_text(spec, run) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "row", "column", "measured"])
    for (ds, row, col), (v, _) in sorted(run.measured.items()):
        if not spec.columns[col].is_timing:
            w.writerow([ds, row, col, repr(round(v, 9))])
    return buf.getvalue()


def test_some_tables_are_registered():
    assert SPECS, "no table has a producer and a tiny scale"


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_table_tiny_matches_snapshot(spec, tmp_path):
    run = run_table(spec, "tiny", seed=0, n_threads=1, out_dir=tmp_path, progress=False)
    assert run.error is None, run.error
    assert run.measured, f"{spec.id} produced no cell at tiny scale"
    # files written atomically, provenance complete
    assert (tmp_path / f"{spec.id}.csv").exists()
    prov = run.provenance
    for key in ("git_commit", "versions", "seed", "threads", "scale", "datasets", "wall_s"):
        assert key in prov
    # the comparison and the claims machinery run on it
    comp = compare_run(spec, run)
    assert len(comp.claims) == len(spec.claims)
    assert all(c.ours in ("holds", "fails", "not measured") for c in comp.claims)

    text = _snapshot_text(spec, run)
    snap = SNAPSHOTS / f"{spec.id}.csv"
    if UPDATE or not snap.exists():
        if not UPDATE:
            pytest.fail(f"no snapshot for {spec.id}: run with ANNREPRO_UPDATE_SNAPSHOTS=1")
        snap.write_text(text)
        return
    want = {
        (r["dataset"], r["row"], r["column"]): float(r["measured"])
        for r in csv.DictReader(io.StringIO(snap.read_text()))
    }
    got = {
        (r["dataset"], r["row"], r["column"]): float(r["measured"])
        for r in csv.DictReader(io.StringIO(text))
    }
    assert sorted(got) == sorted(want), "cells differ from the snapshot"
    bad = {k: (got[k], want[k]) for k in want if not math.isclose(got[k], want[k], abs_tol=ABS_TOL)}
    assert not bad, f"{spec.id}: values moved from the snapshot (got, want): {bad}"
