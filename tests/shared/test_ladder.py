"""annrepro.ladder: margins per rung, the paper's margin from its own cells, the trend, and
rungs resumed from their point files."""

import numpy as np
import pytest
from annrepro.ladder import paper_margin, run_ladders, trend
from annrepro.tables import find_specs
from annrepro.testing import FakeContext, SyntheticDataset


def test_paper_margin_is_the_difference_of_printed_cells():
    # catalyzer Table 1, BigAnn1M 1-recall@10: Catalyst+Lattice 75.8, OPQ 63.6
    ref = ["catalyzer.table1", "BigAnn1M", "1-recall@10", "Catalyst+Lattice", "OPQ"]
    assert paper_margin(ref) == pytest.approx(75.8 - 63.6)
    assert paper_margin(["catalyzer.table1", "BigAnn1M", "1-recall@10", "nope", "OPQ"]) is None


@pytest.mark.parametrize(
    "margins,halves,target,want",
    [
        ([-10, -2], [1, 1], 5, "converging toward the paper"),
        ([4, -10], [1, 1], 5, "diverging"),
        ([-10, -9], [2, 2], 5, "flat"),
        ([1], [1], 5, "one rung"),
        ([1, 2], [1, 1], None, "no paper margin"),
        ([6, 20], [5, 5], 5.5, "growing past the paper's margin"),
        ([-6, -20], [5, 5], -5.5, "growing past the paper's margin"),
    ],
)
def test_trend(margins, halves, target, want):
    assert trend(margins, halves, target) == want


def test_rungs_are_margins_and_resume_from_points(tmp_path, monkeypatch):
    import annrepro.ladder as ladder

    spec = find_specs("catalyzer.ladder")[0]
    spec.raw = {**spec.raw, "ladders": [{
        "id": "pq", "dataset": "BigAnn1M", "better": "PQ8x4np", "worse": "PQ2x4np",
        "column": "1-recall@10", "budget": "ntrain",
        "paper": ["catalyzer.table1", "BigAnn1M", "1-recall@10", "Catalyst+Lattice", "OPQ"],
    }]}  # fmt: skip
    ds = SyntheticDataset(d=16, nb=300, nq=40, nt=400, seed=2)
    ctx = FakeContext(spec, {"BigAnn1M": ds}, out_dir=tmp_path, n_seeds=1, k=10)
    ctx.params["values"] = {"pq": [200, 400]}
    rows = run_ladders(spec, ctx)
    assert [r["row"] for r in rows] == ["pq @ ntrain=200", "pq @ ntrain=400"]
    for r in rows:
        assert r["margin"] == pytest.approx(100 * (r["better"] - r["worse"]))
        assert np.mean(r["margin:per_query"]) == pytest.approx(r["margin"])
        assert r["paper_margin"] == pytest.approx(12.2)
    assert any("pq (BigAnn1M, PQ8x4np minus PQ2x4np" in n for n in ctx.notes)
    calls = []
    monkeypatch.setattr(ladder, "_rung", lambda *a: calls.append(a))
    again = run_ladders(spec, FakeContext(spec, {"BigAnn1M": ds}, out_dir=tmp_path, n_seeds=1,
                                          k=10, values={"pq": [200, 400]}))  # fmt: skip
    assert calls == [] and [r["margin"] for r in again] == [r["margin"] for r in rows]


def test_ladders_run_on_demand_only():
    from annrepro.cli import _selected

    specs = find_specs("*")
    ids = lambda pattern: {s.id for s in _selected(find_specs(pattern), pattern)}  # noqa: E731
    assert "catalyzer.ladder" not in ids("*") and "catalyzer.ladder" not in ids("catalyzer.*")
    assert {"catalyzer.ladder", "ccst.ladder", "kdindex.ladder"} <= ids("*.ladder")
    assert "kdindex.ladder" in ids("kdindex.ladder")
    assert len(ids("*")) == len(specs) - 3
