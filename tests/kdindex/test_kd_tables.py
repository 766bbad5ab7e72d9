"""KDindex rows of the KDindex tables (Tables 2-5, 8): teacher labels, training variants and the
producers run end to end at the tiny scale (synthetic stand-ins, a few seconds each)."""

import warnings

import numpy as np
import pytest
from annrepro.groundtruth import knn_exact
from annrepro.tables import find_specs, run_table
from annrepro.testing import FakeContext
from kdindex import tables
from kdindex.train import TrainConfig


class _Data:
    """A minimal stand-in for annrepro's Dataset (the base doubles as training queries)."""

    def __init__(self, metric="l2", nb=400, nq=20, d=8, seed=0):
        rng = np.random.default_rng(seed)
        self.name, self.metric = f"fake-{metric}-{nb}-{d}", metric
        self.xb = rng.standard_normal((nb, d)).astype(np.float32)
        self.xq = rng.standard_normal((nq, d)).astype(np.float32)
        self.xt = self.xb
        self.nb, self.nq, self.nt, self.d, self.has_learn = nb, nq, nb, d, False

    def gt(self, k):
        return knn_exact(self.xq, self.xb, k, self.metric)[1]


def _ctx(params):
    return FakeContext(None, **params)  # the producers' real Context (seeds, param, note, ...)


KD_PARAMS = dict(
    B=2,
    W=16,
    k=10,
    n_seeds=2,
    nprobe=4,
    n_train=300,
    opq_niter=2,
    aq_beam=1,
    aq_refine=False,
    K=10,
    M=16,
    efConstruction=40,
    efSearch=64,
    n_train_queries=60,
    epochs=1,
    patience=1,
    init_max_rounds=1,
)


@pytest.fixture(autouse=True)
def _quiet_sinkhorn():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SinkhornWarning on tiny, unbalanced problems
        yield


def test_teacher_labels_shape_cap_and_cache():
    tables._LABEL_CACHE.clear()
    ds = _Data("l2", nb=300)
    ctx = _ctx(KD_PARAMS)
    xt, labels = tables.teacher_labels(ctx, "SIFT1M", ds)
    assert xt.dtype == np.float32 and xt.shape == (60, ds.d)
    assert labels.dtype == np.int64 and labels.shape == (60, 10)
    # the teacher's top-10 of a training query that is a base vector starts with itself
    assert (labels[:, 0] == np.arange(60)).mean() > 0.9
    again = tables.teacher_labels(ctx, "SIFT1M", ds)
    assert again[1] is labels  # cached
    # a list of K (Table 4) asks the teacher for the largest
    _, l100 = tables.teacher_labels(_ctx(dict(KD_PARAMS, K=[5, 20])), "SIFT1M", ds)
    assert l100.shape == (60, 20)
    tables._LABEL_CACHE.clear()


def test_teacher_labels_bad_input():
    ds = _Data("l2", nb=300)
    with pytest.raises(ValueError, match="efSearch"):
        tables.teacher_labels(_ctx(dict(KD_PARAMS, K=100)), "SIFT1M", ds)
    with pytest.raises(ValueError, match="no training query"):
        tables.teacher_labels(_ctx(dict(KD_PARAMS, n_train_queries=0)), "SIFT1M", ds)


def test_train_config_variants():
    p = dict(KD_PARAMS, lr=0.05, batch_size=32)
    full = tables.train_config(p, seed=3)
    assert (full.lr, full.batch_size, full.epochs, full.seed) == (0.05, 32, 1, 3)
    assert tables.train_config(p, 0, "initialization").epochs == 0
    assert tables.train_config(p, 0, "no_distillation").distill_weight == 0
    nb = tables.train_config(p, 0, "no_balance")
    assert not (nb.init_balance or nb.batch_balance or nb.balance_index)
    assert tables.train_config(p, 0, loss="lambdarank").loss == "lambdarank"
    with pytest.raises(ValueError, match="variant"):
        tables.train_config(p, 0, "bogus")
    with pytest.raises(ValueError, match="Sinkhorn"):
        TrainConfig(sinkhorn_method="exact")


def test_evaluate_kdindex_beats_scrambled_codes():
    """The trained index's codes must carry the neighbourhoods: the same index with its codes
    permuted across documents (a degenerate index of the same size) must score far lower."""
    from annrepro.metrics import recall_at
    from kdindex.api import KDIndex

    ds = _Data("l2", nb=400, d=8)
    ctx = _ctx(KD_PARAMS)
    xt, labels = tables.teacher_labels(ctx, "SIFT1M", ds)
    r = tables.evaluate_kdindex("PQ", ds, xt, labels, 0, KD_PARAMS)
    assert 0 < r["recall@10"] <= 1 and r["memory_bytes"] > 0 and r["train_s"] > 0
    index = KDIndex("PQ", "l2", B=2, W=16, K=10, config=tables.train_config(KD_PARAMS, 0))
    index.fit(ds.xb, xt, labels=labels)
    good = recall_at(index.search(ds.xq, 10)[1], ds.gt(10), 10)
    index.codes = index.codes[np.random.default_rng(0).permutation(ds.nb)]
    index.norms2 = None
    bad = recall_at(index.search(ds.xq, 10)[1], ds.gt(10), 10)
    assert good > 2 * bad
    tables._LABEL_CACHE.clear()


def _run(table):
    tables._KD_CACHE.clear()
    run = run_table(find_specs(table)[0], "tiny", n_threads=1, write=False, progress=False)
    assert run.error is None, run.provenance.get("traceback") or run.error
    return run.measured


def _cells(measured, row_pred):
    return {k: v for k, v in measured.items() if row_pred(k[1])}


@pytest.mark.slow
def test_table2_kdindex_rows_tiny():
    m = _run("kdindex.table2")
    kd = _cells(m, lambda r: r.startswith("KDindex"))
    rows = {(d, r) for d, r, _ in kd}
    assert rows == {
        (d, f"KDindex ({k})")
        for d in ("SIFT1M", "GIST1M", "MSMARCO-Doc", "MSMARCO-Passage")
        for k in ("PQ", "OPQ", "AQ")
    }
    for (d, r, c), (mean, std) in kd.items():
        assert 0 < mean / 100 <= 1 and std is not None and std >= 0, (d, r, c)


@pytest.mark.slow
def test_table3_kdindex_row_tiny():
    m = _run("kdindex.table3")
    for d in ("SIFT1M", "GIST1M", "MSMARCO-Doc"):
        kd = m[(d, "KDindex", "memory_gb")][0]
        aq = m[(d, "AQ", "memory_gb")][0]
        hnsw = m[(d, "HNSW", "memory_gb")][0]
        assert kd == pytest.approx(aq)  # the student's layout (Sec. 3.6)
        assert m[(d, "KDindex", "compression_ratio")][0] == pytest.approx(hnsw / kd)
        assert hnsw / kd > 1


@pytest.mark.slow
def test_tables_4_5_8_tiny():
    m4 = _run("kdindex.table4")
    assert {r for _, r, _ in m4} == {f"K={k}" for k in (5, 10, 20, 50, 100)}
    m5 = _run("kdindex.table5")
    rows5 = {r for _, r, _ in m5}
    for k in ("PQ", "OPQ", "AQ"):
        for v in ("", " initialization", " w/o distillation", " w/o balance"):
            assert f"KDindex ({k}){v}" in rows5
    m8 = _run("kdindex.table8")
    assert {r for _, r, _ in m8} == {
        "Lambdarank loss",
        "Weighted KL loss",
        "Distributed-based loss",
    }
    for m in (m4, m5, m8):
        for key, (mean, _) in m.items():
            assert 0 <= mean / 100 <= 1, key


@pytest.mark.slow
def test_figure4_tiny_points_and_artifacts(tmp_path):
    tables._KD_CACHE.clear()
    spec = find_specs("kdindex.figure4")[0]
    run = run_table(spec, "tiny", n_threads=1, out_dir=tmp_path, write=False, progress=False)
    assert run.error is None, run.provenance.get("traceback") or run.error
    m = run.measured
    for d in ("SIFT1M", "GIST1M"):
        for method in ("KDindex (AQ)", "AQ"):
            for npb in (1, 2, 4, 16):
                r = m[(d, f"{method} nprobe={npb}", "recall@10")][0] / 100
                assert 0 < r <= 1
                assert m[(d, f"{method} nprobe={npb}", "latency")][0] > 0
        assert m[(d, "HNSW ef=40", "recall@10")][0] > 90  # the teacher is near exact at tiny
    csv = tmp_path / "kdindex.figure4" / "figure4.csv"
    lines = csv.read_text().splitlines()
    assert lines[0] == "dataset,method,setting,recall@10,latency_ms"
    assert len(lines) == 1 + 2 * (2 * 4 + 2)


@pytest.mark.slow
def test_figure3_tiny_grid_and_artifacts(tmp_path):
    spec = find_specs("kdindex.figure3")[0]
    run = run_table(spec, "tiny", n_threads=1, out_dir=tmp_path, write=False, progress=False)
    assert run.error is None, run.provenance.get("traceback") or run.error
    m = run.measured
    for kind in ("PQ", "OPQ", "AQ"):
        for method in (kind, f"KDindex ({kind})"):
            small = m[("SIFT1M", f"{method} B=2 W=8", "recall@10")][0]
            large = m[("SIFT1M", f"{method} B=4 W=16", "recall@10")][0]
            assert 0 < small < large <= 100  # 16-bit codes beat 6-bit codes
    lines = (tmp_path / "kdindex.figure3" / "figure3.csv").read_text().splitlines()
    assert lines[0] == "dataset,method,B,W,recall@10" and len(lines) == 1 + 3 * 2 * 4
    from annrepro.plotting import pyplot

    png = tmp_path / "kdindex.figure3" / "figure3.png"
    assert png.exists() == (pyplot() is not None)


def test_paired_t_test_hand_value_and_note():
    # differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t = 0.2 / (0.1 / sqrt 3) = 3.4641
    t, p = tables.paired_t_test([0.6, 0.7, 0.8], [0.5, 0.5, 0.5])
    assert t == pytest.approx(3.4641016, rel=1e-6)
    assert p == pytest.approx(0.0741799, rel=1e-4)  # two-sided, 2 degrees of freedom
    with pytest.raises(ValueError, match="two or more pairs"):
        tables.paired_t_test([0.5], [0.4])
    runs = lambda *v: {s: {"recall@10": x} for s, x in enumerate(v)}  # noqa: E731
    per_seed = {
        "PQ": runs(0.50, 0.52, 0.51),
        "AQ": runs(0.60, 0.61, 0.62),
        "KDindex (PQ)": runs(0.55, 0.56, 0.57),
        "KDindex (AQ)": runs(0.70, 0.72, 0.71),
    }
    note = tables.paired_t_test_note("SIFT1M", _Data(), per_seed, "recall@10")
    assert "best KDindex KDindex (AQ) (71.00) vs strongest baseline AQ (61.00)" in note
    assert "significant at 0.05" in note and "not significant" not in note
    per_seed["KDindex (AQ)"] = runs(0.70)
    assert "fewer than two common seeds" in tables.paired_t_test_note(
        "SIFT1M", _Data(), per_seed, "recall@10"
    )
