"""The CCST table producers (ccst.tables) end to end on small seeded data sets.

Each producer runs with the spec's tiny parameters on `annrepro.testing.FakeContext` over the
spec's data sets, here `SyntheticDataset` Gaussian mixtures, and must return rows whose (dataset,
row, column) keys all exist in the published CSV, with recalls in [0, 1] and positive timings.
The helpers the producers call are tested in test_experiments.py.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
from annrepro.tables.runner import RunMemo
from annrepro.tables.spec import load_spec
from annrepro.testing import FakeContext, SyntheticDataset
from annrepro.threads import threads
from annrepro.vecio import mmap_vectors, write_vectors
from ccst import tables
from ccst.api import CCST

pytestmark = pytest.mark.usefixtures("warm_torch_optim")  # the producers train CCST

SPECS = Path(__file__).resolve().parents[2] / "paper_tables" / "ccst"


def blobs(name: str, d: int, seed: int, **kw) -> SyntheticDataset:
    """8 well separated clusters (spread 1/3 of the centres' scale)."""
    return SyntheticDataset(name, d=d, nb=300, nq=20, seed=seed, spread=1 / 3, **kw)


DATASETS = {
    "GIST1M": blobs("blobs-gist", 40, seed=1),  # 40 is divisible by neither 60 nor 30
    "Deep1M": blobs("blobs-deep", 32, seed=2),
    "Bigann-1B": blobs("blobs-bigann", 16, seed=3),
}

EXPECTED_ROWS = {
    "table1": {f"{m} cf={cf}" for m in ("HNSW", "NSG") for cf in (1, 2, 4)}
    | {"Comp cf=2", "Comp cf=4"},
    "table2": {"HNSW cf=1", "HNSW cf=2", "Comp cf=2"},
    "table3": {f"{m} {b}B" for m in ("PQ", "CSST+PQ", "L&C", "CSST+L&C") for b in (60, 30, 32, 16)}
    | {"Catalyst+PQ 16B"},
    "table4": {"HNSW", "HNSW+SQ8", "CSST+HNSW", "CSST+HNSW+SQ8"},
    "table5": {
        f"{m}+{s}" for m in ("SRP", "CSST", "MLP", "VAE", "Catalyst") for s in ("HNSW", "brute")
    },
}


def _run(table, datasets=None, memo=None, **params):
    """Run producer `table` on the spec's data sets (from `datasets`, default DATASETS) and check
    its rows against the published CSV; returns ({(dataset, row): row}, ctx)."""
    spec = load_spec(SPECS / f"{table}.toml")
    datasets = {n: (datasets or DATASETS)[n] for n in spec.datasets("tiny")}
    ctx = FakeContext(spec, datasets, memo=memo, **params)  # a shared memo: tables of one run
    with threads(1):
        rows = getattr(tables, table)(spec, ctx)
    published = spec.published()
    for r in rows:
        for column, value in r.items():
            if column in ("dataset", "row"):
                continue
            assert (r["dataset"], r["row"], column) in published, (r["row"], column)
            assert np.isfinite(value)
            if spec.columns[column].unit == "%":
                assert 0.0 <= value <= 1.0
            else:
                assert value > 0
    return {(r["dataset"], r["row"]): r for r in rows}, ctx


@pytest.mark.parametrize("table", sorted(EXPECTED_ROWS))
def test_producer_returns_published_keys(table):
    rows, _ = _run(table)
    assert {row for _, row in rows} == EXPECTED_ROWS[table]


def test_table1_csst_rows():
    rows, ctx = _run("table1")
    assert set(rows[("GIST1M", "Comp cf=4")]) == {"dataset", "row", "compress_s"}
    # searched with full-dimensional vectors: on these blobs the recall stays high
    assert rows[("Deep1M", "HNSW cf=4")]["1-recall@10"] >= 0.9
    assert any("heads so that they divide 10" in n for n in ctx.notes)  # d=40 / 4 = 10
    assert any("gpu_mem_gb not measured" in n for n in ctx.notes)


def test_models_are_trained_once_per_dataset_and_factor(monkeypatch):
    memo = RunMemo()
    fits = []
    real_fit = CCST.fit
    monkeypatch.setattr(
        CCST, "fit", lambda self, x, **kw: fits.append(x.shape) or real_fit(self, x)
    )
    _run("table1", memo=memo)
    _, ctx = _run("table4", memo=memo)
    assert len(fits) == 4  # (GIST1M, Deep1M) x (2, 4); Table 4 reuses the cf=4 models
    assert sum("reused" in n for n in ctx.notes) == 2
    _run("table4", memo=memo, ccst_epochs=2)  # other settings: trained anew
    assert len(fits) == 6


def test_table2_memory_mapped_uint8_base(tmp_path):
    rng = np.random.default_rng(3)
    x = np.clip(rng.normal(100, 30, (300, 16)), 0, 255).astype(np.uint8)
    path = tmp_path / "base.u8bin"  # the Bigann-1B format (footnote 4), memory-mapped
    write_vectors(path, x)
    mm = mmap_vectors(path)
    assert isinstance(mm, np.memmap) and mm.dtype == np.uint8
    ds = blobs("blobs-bigann-mm", 16, seed=3, xb=mm)
    ds.xq = np.ascontiguousarray(x[:20], dtype=np.float32) + 1.0
    rows, ctx = _run("table2", {"Bigann-1B": ds}, compress_in_memory_mb=0.001, ccst_train_rows=200)
    assert set(rows[("Bigann-1B", "HNSW cf=2")]) == {"dataset", "row", "build_h", "1-recall@1"}
    assert any("memory-mapped" in n for n in ctx.notes)
    assert any("on 200 database vectors" in n for n in ctx.notes)


def test_table3_csst_linkcode_and_catalyst_rows():
    _, ctx = _run("table3")
    assert any("Catalyst 32 -> 8 dims" in n for n in ctx.notes)  # d / pq_compression_factor
    assert any("reconstruction MSE" in n for n in ctx.notes)
    # d=40: 60 B -> m=40; 30 B -> m=20 (tie between 20 and 40: the smaller); Deep d=32 unchanged
    assert any("GIST1M (blobs-gist, d=40): PQ 60B uses m=40" in n for n in ctx.notes)
    assert any("GIST1M (blobs-gist, d=40): PQ 30B uses m=20" in n for n in ctx.notes)
    assert not any(n.startswith("Deep1M") and ": PQ " in n for n in ctx.notes)
    # d=40 compressed 4x: 10 dims; budget 30 B -> 10 sub-quantizers
    assert any("CSST+PQ 30B uses m=10" in n for n in ctx.notes)
    assert not any("gpu_mem_gb" in n for n in ctx.notes)  # no such column in Table 3


def test_table4_rows():
    rows, _ = _run("table4")
    assert "qps" not in rows[("GIST1M", "HNSW")]
    assert "qps" not in rows[("GIST1M", "CSST+HNSW")]
    assert rows[("Deep1M", "CSST+HNSW+SQ8")]["1-recall@10"] >= 0.8


def test_table5_srp_recalls_are_monotone_in_k():
    rows, _ = _run("table5")
    for ds in ("GIST1M", "Deep1M"):
        brute = rows[(ds, "SRP+brute")]
        assert brute["1-recall@1"] <= brute["1-recall@5"] <= brute["1-recall@10"]


def test_table5_without_catalyzer_skips_only_catalyst(monkeypatch):
    """The whole producer runs without the optional package: every row but Catalyst's."""
    monkeypatch.setitem(sys.modules, "catalyzer", None)  # `import catalyzer` now fails
    rows, ctx = _run("table5")
    methods = ("SRP", "MLP", "VAE", "CSST")
    want = {
        (ds, f"{m}+{s}") for ds in ("GIST1M", "Deep1M") for m in methods for s in ("HNSW", "brute")
    }
    assert set(rows) == want
    assert any(
        "Deep1M: Catalyst rows not measured: catalyzer not installed" in n for n in ctx.notes
    )
