"""CSST and Link & Code rows of CCST Tables 1-4, and the CSST scale normalisation (ccst.api).

Producers run with the spec's tiny parameters on a fake context over seeded Gaussian blobs; every
returned (dataset, row, column) must exist in the published CSV.
"""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from annrepro.groundtruth import knn_exact
from annrepro.tables.runner import RunMemo
from annrepro.tables.spec import load_spec
from annrepro.testing import FakeContext
from annrepro.threads import threads
from annrepro.vecio import mmap_vectors, write_vectors
from ccst import experiments, tables
from ccst.api import CCST

pytestmark = pytest.mark.usefixtures("warm_torch_optim")

SPECS = Path(__file__).resolve().parents[2] / "paper_tables" / "ccst"


class FakeDataset:
    """Seeded Gaussian blobs. xb/xq/xt: float32 (n, d); xb may be replaced by a uint8 memmap."""

    def __init__(self, name, d, seed, nb=300, nq=20, scale=3.0, xb=None):
        rng = np.random.default_rng(seed)
        centers = rng.standard_normal((8, d)).astype(np.float32) * scale

        def draw(n):
            x = centers[rng.integers(0, 8, n)] + rng.standard_normal((n, d)).astype(np.float32)
            return np.ascontiguousarray(x, dtype=np.float32)

        self.name, self.d, self.metric = name, d, "l2"
        self.xb, self.xq, self.xt = draw(nb), draw(nq), draw(nb)
        if xb is not None:
            self.xb = xb
        self.nb, self.nq = len(self.xb), nq

    def gt(self, k):
        return knn_exact(self.xq, np.asarray(self.xb, dtype=np.float32), k, self.metric)[1]

    def describe(self):
        return f"fake {self.name} {self.d}-d"


DATASETS = {
    "GIST1M": FakeDataset("csst-gist", 40, seed=1),
    "Deep1M": FakeDataset("csst-deep", 32, seed=2),
}


class SharedMemoContext(FakeContext):
    """A FakeContext whose memo is the given RunMemo, shared by several tables as in one run."""

    def __init__(self, spec, datasets, memo, **params):
        super().__init__(spec, datasets, **params)
        self.shared_memo = memo

    def memo(self, key, fn, nbytes=None):
        return self.shared_memo.get(key, fn, nbytes)


def _run(table, datasets=DATASETS, memo=None, **params):
    spec = load_spec(SPECS / f"{table}.toml")
    if memo is None:
        ctx = FakeContext(spec, datasets, **params)
    else:
        ctx = SharedMemoContext(spec, datasets, memo, **params)
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


def test_table1_csst_rows():
    rows, ctx = _run("table1")
    expect = {"HNSW cf=1", "NSG cf=1"} | {
        f"{m} cf={cf}" for m in ("HNSW", "NSG", "Comp") for cf in (2, 4)
    }
    assert {r for _, r in rows} == expect
    assert set(rows[("GIST1M", "Comp cf=4")]) == {"dataset", "row", "compress_s"}
    # searched with full-dimensional vectors: on these blobs the recall stays high
    assert rows[("Deep1M", "HNSW cf=4")]["1-recall@10"] >= 0.9
    assert any("heads so that they divide 10" in n for n in ctx.notes)  # d=40 / 4 = 10


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


def test_table4_rows():
    rows, _ = _run("table4")
    assert {r for _, r in rows} == {"HNSW", "HNSW+SQ8", "CSST+HNSW", "CSST+HNSW+SQ8"}
    assert "qps" not in rows[("GIST1M", "CSST+HNSW")]
    assert rows[("Deep1M", "CSST+HNSW+SQ8")]["1-recall@10"] >= 0.8


def test_table3_csst_and_linkcode_rows():
    rows, ctx = _run("table3")
    budgets = {"GIST1M": (60, 30), "Deep1M": (32, 16)}
    expect = {
        (ds, f"{p}{m} {b}B")
        for ds, bs in budgets.items()
        for b in bs
        for p in ("", "CSST+")
        for m in ("PQ", "L&C")
    } | {("Deep1M", "Catalyst+PQ 16B")}  # catalyst_datasets = ["Deep1M"], 16 B (Table 3)
    assert set(rows) == expect
    assert any("Catalyst 32 -> 8 dims" in n for n in ctx.notes)  # d / pq_compression_factor
    # d=40 compressed 4x: 10 dims; budget 30 B -> 10 sub-quantizers
    assert any("CSST+PQ 30B uses m=10" in n for n in ctx.notes)
    assert any("reconstruction MSE" in n for n in ctx.notes)


def test_table2_memory_mapped_uint8_base(tmp_path):
    rng = np.random.default_rng(3)
    x = np.clip(rng.normal(100, 30, (300, 16)), 0, 255).astype(np.uint8)
    path = tmp_path / "base.u8bin"  # the Bigann-1B format (footnote 4), memory-mapped
    write_vectors(path, x)
    mm = mmap_vectors(path)
    assert isinstance(mm, np.memmap) and mm.dtype == np.uint8
    ds = FakeDataset("csst-bigann-mm", 16, seed=3, xb=mm)
    ds.xq = np.ascontiguousarray(x[:20], dtype=np.float32) + 1.0
    rows, ctx = _run("table2", {"Bigann-1B": ds}, compress_in_memory_mb=0.001, ccst_train_rows=200)
    assert {r for _, r in rows} == {"HNSW cf=1", "Comp cf=2", "HNSW cf=2"}
    assert set(rows[("Bigann-1B", "HNSW cf=2")]) == {"dataset", "row", "build_h", "1-recall@1"}
    assert any("memory-mapped" in n for n in ctx.notes)
    assert any("on 200 database vectors" in n for n in ctx.notes)


# ---------------------------------------------------------------- CSST scale normalisation
TINY = dict(compression_factor=4, depths=(1,), heads=1, epochs=1, batch_size=64, progress=False)


@pytest.fixture(scope="module")
def pixels():
    """0-255 scaled data: pairwise distances in the hundreds, as on fmnist."""
    rng = np.random.default_rng(0)
    return (rng.random((200, 16)) * 255).astype(np.float32)


def _mean_dist(y):
    y = torch.from_numpy(y).double()
    n = len(y)
    return float(torch.cdist(y, y).sum() / (n * (n - 1)))


def _train_mode_ratio(model, x):
    """Mean pairwise output distance over the INRP boundary, batch norms on batch statistics
    (as when the output scale is fitted)."""
    with torch.no_grad():
        y = model.net.train()(torch.from_numpy(x)).numpy()
    return _mean_dist(y) / model.boundary


@pytest.mark.parametrize("scaling", ["output", "boundary"])
def test_output_scale_matches_the_boundary(pixels, scaling):
    # a negligible learning rate: the network keeps its initial weights
    model = CCST(**TINY, input_scaling=scaling, lr=1e-12, scale_sample=200).fit(pixels)
    assert _train_mode_ratio(model, pixels) == pytest.approx(1.0, rel=1e-3)
    # without the scales the output distances are off: the batch norms set the output scale
    # (with the released batch norms or the LayerNorms far below the pixels' distances, 0.003
    # here; with neither 0.57)
    for norm in ("released", "layernorm", "none"):
        unscaled = CCST(**TINY, input_scaling="none", lr=1e-12, norm=norm).fit(pixels)
        ratio = _train_mode_ratio(unscaled, pixels)
        assert ratio < 0.3 if norm != "none" else not 0.7 < ratio < 1.3, (norm, ratio)


def test_scales_survive_save_load_and_bad_values_raise(pixels, tmp_path):
    model = CCST(**TINY, input_scaling="boundary").fit(pixels)
    assert float(model.net.in_scale) == pytest.approx(model.boundary)
    model.save(tmp_path / "m.pt")
    back = CCST.load(tmp_path / "m.pt")
    assert back.input_scaling == "boundary"
    np.testing.assert_array_equal(back.transform(pixels), model.transform(pixels))
    with pytest.raises(ValueError, match="input_scaling"):
        CCST(input_scaling="minmax")
    with pytest.raises(ValueError, match="scale_sample"):
        CCST(scale_sample=1)


def test_transform_into_given_array(pixels):
    model = CCST(**TINY).fit(pixels)
    out = np.zeros((200, 4), dtype=np.float32)
    assert model.transform(pixels, out=out, max_memory_mb=0.001) is out
    np.testing.assert_allclose(out, model.transform(pixels), rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="out must be float32"):
        model.transform(pixels, out=np.zeros((200, 3), dtype=np.float32))


def test_comp_rows_measure_gpu_memory_only_on_a_gpu(monkeypatch):
    """gpu_mem_gb (Tables 1-2 'Comp' rows) is torch's peak GPU memory of the compression (in
    bytes) when CSST runs on CUDA; on the CPU the cell is absent and a note says why."""

    class Model:
        device = "cpu"

        def transform(self, x, max_memory_mb=None, out=None):
            return x[:, :2].copy()

    x = np.ones((5, 4), np.float32)
    ctx = SimpleNamespace(params={}, threads=1, notes=[])
    ctx.note = ctx.notes.append
    _, _, gpu = experiments.compress_measured(ctx, Model(), x)
    assert gpu is None and any("gpu_mem_gb not measured" in n for n in ctx.notes)
    assert "gpu_mem_gb" not in experiments.comp_row("GIST1M", 2, "compress_s", 1.0, gpu)

    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 1.5e9)
    Model.device = "cuda:0"
    _, _, gpu = experiments.compress_measured(ctx, Model(), x)
    assert calls == ["reset"] and gpu == 1.5e9  # bytes: the runner converts to the column's GB
    row = experiments.comp_row("GIST1M", 2, "compress_s", 1.0, gpu)
    assert row == {"dataset": "GIST1M", "row": "Comp cf=2", "compress_s": 1.0, "gpu_mem_gb": gpu}
