"""annrepro.ladder: margins per rung, the paper's margin from its own cells, the trend, runs
resumed from their point files and shared between ladders, and the two-level bootstrap."""

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
        ([1, 5], [1, 1], None, "growing (no paper margin)"),
        ([5, 1], [1, 1], None, "shrinking (no paper margin)"),
        ([1, 2], [1, 1], None, "flat (no paper margin)"),
        ([6, 20], [5, 5], 5.5, "growing past the paper's margin"),
        ([-6, -20], [5, 5], -5.5, "growing past the paper's margin"),
    ],
)
def test_trend(margins, halves, target, want):
    assert trend(margins, halves, target) == want


def test_rungs_are_margins_and_resume_from_points(tmp_path, monkeypatch):
    import annrepro.evaluate as evaluate

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
        assert np.shape(r["margin:per_query"]) == (1, 40)  # one row per seed
        assert r["paper_margin"] == pytest.approx(12.2)
        assert "seed_sd" not in r  # one seed: no spread
    assert any("pq (BigAnn1M, PQ8x4np minus PQ2x4np" in n for n in ctx.notes)
    calls = []
    real = evaluate.run_method
    monkeypatch.setattr(evaluate, "run_method", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = run_ladders(spec, FakeContext(spec, {"BigAnn1M": ds}, out_dir=tmp_path, n_seeds=1,
                                          k=10, values={"pq": [200, 400]}))  # fmt: skip
    assert calls == [] and [r["margin"] for r in again] == [r["margin"] for r in rows]


def test_runs_in_worker_processes_match_the_runs_in_process(tmp_path, monkeypatch):
    """ANNREPRO_LADDER_JOBS=2: the missing runs computed in two spawned processes, saved as
    points, and the table put together from them: the same numbers as in process."""
    import annrepro.evaluate as evaluate

    spec = find_specs("catalyzer.ladder")[0]
    spec.raw = {**spec.raw, "ladders": [{
        "id": "pq", "dataset": "BigAnn1M", "better": "PQ8x4np", "worse": "PQ2x4np",
        "column": "1-recall@10", "budget": "ntrain",
    }]}  # fmt: skip
    ds = SyntheticDataset(d=16, nb=300, nq=40, nt=400, seed=2)

    def table(out, jobs):
        monkeypatch.setenv("ANNREPRO_LADDER_JOBS", str(jobs))
        ctx = FakeContext(spec, {"BigAnn1M": ds}, out_dir=out, n_seeds=1, k=10)
        ctx.params["values"] = {"pq": [200, 400]}
        return run_ladders(spec, ctx)

    alone = table(tmp_path / "one", 1)
    calls = []
    real = evaluate.run_method
    monkeypatch.setattr(evaluate, "run_method", lambda *a, **k: calls.append(a) or real(*a, **k))
    pooled = table(tmp_path / "two", 2)
    assert calls == []  # every run came from a worker's point
    assert len(list((tmp_path / "two").rglob("runs/*.json"))) == 4  # 2 rungs x 2 methods
    for a, b in zip(alone, pooled, strict=True):
        assert a["row"] == b["row"] and a["margin:per_query"] == b["margin:per_query"]


def test_a_bad_ladder_jobs_setting_is_one_clear_error(monkeypatch):
    from annrepro.errors import AnnreproError
    from annrepro.ladder import point_jobs

    monkeypatch.setenv("ANNREPRO_LADDER_JOBS", "two")
    with pytest.raises(AnnreproError, match="ANNREPRO_LADDER_JOBS='two'"):
        point_jobs()
    monkeypatch.delenv("ANNREPRO_LADDER_JOBS")
    assert point_jobs() == 1


def test_ladders_share_the_better_methods_runs(tmp_path, monkeypatch):
    """Two ladders with the same learned side and rungs fit it once per rung and seed; a faiss
    baseline the budget does not touch runs once for every rung: once per seed where its
    training draws (PQ's k-means), once for every seed where it draws nothing (PCA)."""
    import annrepro.evaluate as evaluate

    spec = find_specs("ccst.ladder")[0]
    common = {"dataset": "GIST1M", "better": "csst4x,Flat", "column": "1-recall@1",
              "budget": "csst.epochs"}  # fmt: skip
    spec.raw = {**spec.raw, "ladders": [
        {"id": "a", **common, "worse": "PQ4x4np"}, {"id": "b", **common, "worse": "PCA4,Flat"},
    ]}  # fmt: skip
    ds = SyntheticDataset(d=16, nb=300, nq=30, nt=300, seed=3)
    calls = []
    real = evaluate.run_method
    monkeypatch.setattr(evaluate, "run_method", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    ctx = FakeContext(spec, {"GIST1M": ds}, out_dir=tmp_path, n_seeds=2, k=10)
    ctx.params["values"] = {"a": [1, 2], "b": [1, 2]}
    ctx.params["csst"] = ["depths=[1]", "heads=2", "batch_size=128"]
    rows = run_ladders(spec, ctx)
    assert len(rows) == 4
    # CSST: 2 rungs x 2 seeds, once for both ladders; PQ: once per seed; PCA: once
    assert sorted(calls) == ["PCA4,Flat"] + ["PQ4x4np"] * 2 + ["csst4x,Flat"] * 4
    for r in rows:
        assert np.shape(r["margin:per_query"]) == (2, 30) and r["seed_sd"] >= 0


def test_two_level_bootstrap_covers_the_seed_spread():
    from annrepro.tables.runner import bootstrap_interval

    rng = np.random.default_rng(0)
    q = rng.normal(0, 1, 200)
    same = np.stack([q, q, q])  # three seeds that agree: the queries' interval
    assert bootstrap_interval(same) == pytest.approx(bootstrap_interval(q), abs=0.05)
    apart = np.stack([q - 2, q, q + 2])  # seeds 2 apart: a far wider interval, same centre
    lo, hi = bootstrap_interval(apart)
    qlo, qhi = bootstrap_interval(q)
    assert hi - lo > 5 * (qhi - qlo) and lo < q.mean() < hi
    assert bootstrap_interval(q[None, :]) == bootstrap_interval(q)  # one seed == 1-D
    with pytest.raises(ValueError):
        bootstrap_interval(np.zeros((2, 3, 4)))


def test_ladders_run_on_demand_only():
    from annrepro.cli import _selected

    specs = find_specs("*")
    ids = lambda pattern: {s.id for s in _selected(find_specs(pattern), pattern)}  # noqa: E731
    assert "catalyzer.ladder" not in ids("*") and "catalyzer.ladder" not in ids("catalyzer.*")
    assert {"catalyzer.ladder", "ccst.ladder", "kdindex.ladder"} <= ids("*.ladder")
    assert "kdindex.ladder" in ids("kdindex.ladder")
    assert len(ids("*")) == len(specs) - 3


def test_ratio_ladder_of_a_time_column(tmp_path):
    """margin = "ratio": worse / better of a time per seed, the paper's ratio from its cells;
    a ladder's own learn rows (ntrain_for) and seeds take effect."""
    spec = find_specs("catalyzer.ladder")[0]
    spec.raw = {**spec.raw, "ladders": [{
        "id": "build", "dataset": "BigAnn1M", "better": "PQ2x4np", "worse": "HNSW8",
        "column": "index_add_s", "margin": "ratio", "budget": "nb",
        "paper": ["ccst.table1", "Deep1M", "build_s", "HNSW cf=4", "HNSW cf=1"],
    }]}  # fmt: skip
    ds = SyntheticDataset(d=16, nb=400, nq=20, nt=400, seed=4)
    ctx = FakeContext(spec, {"BigAnn1M": ds}, out_dir=tmp_path, n_seeds=2, k=10)
    ctx.params.update(values={"build": [200, 400]}, ntrain_for={"build": 300}, seeds={"build": 1})
    rows = run_ladders(spec, ctx)
    assert [r["row"] for r in rows] == ["build @ nb=200", "build @ nb=400"]
    for r in rows:
        assert r["ratio"] == pytest.approx(r["worse_s"] / r["better_s"])
        assert r["paper_ratio"] == pytest.approx(300 / 100)
        assert "margin" not in r and "seed_sd" not in r  # one seed for this ladder
    assert any("HNSW8 / PQ2x4np, index_add_s, against nb, 1 seed(s)" in n for n in ctx.notes)
    runs = sorted((tmp_path / "catalyzer.ladder" / "runs").glob("*.json"))
    assert len(runs) == 4  # 2 rungs x 2 methods, one seed


@pytest.mark.parametrize(
    "extra,match",
    [
        ({"margin": "ratios"}, "'difference' or 'ratio'"),
        ({"margin": "ratio"}, "one number per run"),  # 1-recall@10 is per query
    ],
)
def test_a_bad_ladder_is_one_clear_error(tmp_path, extra, match):
    spec = find_specs("catalyzer.ladder")[0]
    spec.raw = {**spec.raw, "ladders": [{
        "id": "bad", "dataset": "BigAnn1M", "better": "PQ2x4np", "worse": "PQ1x4np",
        "column": "1-recall@10", "budget": "ntrain", **extra,
    }]}  # fmt: skip
    ds = SyntheticDataset(d=16, nb=200, nq=10, nt=200, seed=5)
    ctx = FakeContext(spec, {"BigAnn1M": ds}, out_dir=tmp_path, n_seeds=1, k=10)
    ctx.params["values"] = {"bad": [100]}
    with pytest.raises(ValueError, match=match):
        run_ladders(spec, ctx)


def test_train_on_base_fits_on_the_base_rows(tmp_path, monkeypatch):
    """train_on = "base" (CCST's Sec. 4.1) fits both methods on the base's first rows, not the
    learn set's; anything but "learn" / "base" is refused."""
    import annrepro.evaluate as evaluate

    spec = find_specs("ccst.ladder")[0]
    lad = {"id": "b", "dataset": "GIST1M", "better": "PQ2x4np", "worse": "PQ1x4np",
           "column": "1-recall@1", "budget": "ntrain", "train_on": "base"}  # fmt: skip
    spec.raw = {**spec.raw, "ladders": [lad]}
    ds = SyntheticDataset(d=16, nb=300, nq=20, nt=300, seed=6)
    seen = []
    real = evaluate.run_method
    monkeypatch.setattr(evaluate, "run_method", lambda *a, **k: seen.append(a[2]) or real(*a, **k))
    ctx = FakeContext(spec, {"GIST1M": ds}, out_dir=tmp_path, n_seeds=1, k=10)
    ctx.params["values"] = {"b": [200]}
    run_ladders(spec, ctx)
    assert len(seen) == 2 and all(np.array_equal(xt, ds.xb[:200]) for xt in seen)
    spec.raw = {**spec.raw, "ladders": [{**lad, "train_on": "queries"}]}
    with pytest.raises(ValueError, match="'learn' or 'base'"):
        run_ladders(spec, FakeContext(spec, {"GIST1M": ds}, out_dir=tmp_path, n_seeds=1, k=10,
                                      values={"b": [200]}))  # fmt: skip


def test_report_marks_a_stale_ladder_trend(tmp_path, monkeypatch):
    """The claims table's trend names its ladder run's commit, and says *stale* when the run
    was made by other code or spec than HEAD's."""
    import json
    from types import SimpleNamespace

    import annrepro.reference as reference
    import annrepro.tables.report as report

    spec = find_specs("ccst.ladder")[0]
    d = tmp_path / "small" / spec.id
    d.mkdir(parents=True)
    claim = "ccst.table5:csst-beats-srp-brute-deep"
    (d / "trends.json").write_text(json.dumps({"deep": {"trend": "flat", "claims": [claim]}}))
    run = SimpleNamespace(provenance={"git_commit": "abcdef1234567890"})
    monkeypatch.setattr(
        report,
        "_scale_run",
        lambda s, scale, root: (run, "results") if scale == "small" else (None, ""),  # fmt: skip
    )
    for stale, want in ((False, "flat (deep at small, `abcdef123456`)"),
                        (True, "flat (deep at small, `abcdef123456` *stale*)")):  # fmt: skip
        monkeypatch.setattr(reference, "is_stale", lambda s, r, v=stale: v)
        assert report._trends([spec], tmp_path)[claim] == want
