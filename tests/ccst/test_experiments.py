"""The experiments behind the CCST tables (ccst.experiments), on `annrepro.testing.FakeContext`
and `SyntheticDataset`: CSST training and its memo, compression and the 'Comp' rows' units, the
compression factors kept, Table 5's learned baselines and Catalyst rows."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from annrepro.tables import ProducerError
from annrepro.tables.runner import _accept
from annrepro.tables.spec import load_spec
from annrepro.testing import FakeContext, SyntheticDataset
from ccst import experiments
from ccst.model import NORMS

pytestmark = pytest.mark.usefixtures("warm_torch_optim")

SPECS = Path(__file__).resolve().parents[2] / "paper_tables" / "ccst"


def Ctx(table="table5", datasets=None, **overrides):
    return FakeContext(load_spec(SPECS / f"{table}.toml"), datasets, **overrides)


def blobs(d=16, nb=300) -> SyntheticDataset:
    """8 well separated clusters in d dims (spread 1/3 of the centres' scale), 20 queries."""
    return SyntheticDataset("blobs", d=d, nb=nb, nq=20, seed=1, spread=1 / 3)


def _queries(ds):
    return ds.xq, ds.gt(10)


# -- CSST ------------------------------------------------------------------------------------


def test_train_ccst_passes_ccst_norm():
    ds = blobs(nb=60)
    params = dict(ccst_heads=2, ccst_epochs=1)
    for norm in NORMS:
        ctx = Ctx(**params, ccst_norm=norm)
        model = experiments.train_ccst(ctx, "GIST1M", ds, 4)
        assert model.config.norm == norm
        assert any(f"normalisation {norm!r}" in n for n in ctx.notes)
    ctx = Ctx(**params, ccst_pre_norm=True)
    with pytest.raises(ProducerError, match="ccst_pre_norm was replaced by ccst_norm"):
        experiments.train_ccst(ctx, "GIST1M", ds, 4)


def test_train_ccst_is_memoised_on_its_settings():
    ds = blobs(nb=60)
    ctx = Ctx(ccst_heads=2, ccst_epochs=1)
    model = experiments.train_ccst(ctx, "GIST1M", ds, 4)
    assert not any("reused" in n for n in ctx.notes)
    assert experiments.train_ccst(ctx, "Deep1M", ds, 4) is model  # same data and settings
    assert any(n.startswith("Deep1M") and "reused" in n for n in ctx.notes)
    assert experiments.train_ccst(ctx, "GIST1M", ds, 2) is not model
    ctx.params["ccst_lr"] = 2 * float(ctx.params["ccst_lr"])
    assert experiments.train_ccst(ctx, "GIST1M", ds, 4) is not model


def test_csst_factors_keep_the_divisors_of_d():
    ctx = FakeContext(None, compression_factors=[2, 3, 4], compression_factor=4)
    ds = blobs(d=16)
    assert experiments.csst_factors(ctx, "GIST1M", ds, "compression_factors") == [2, 4]
    assert ctx.notes == ["GIST1M (blobs): no CSST cf=3 rows, 3 does not divide d=16"]
    assert experiments.csst_factors(ctx, "GIST1M", ds, "compression_factor") == [4]


class FakeModel:
    """What compress_measured needs of ccst.api.CCST: device and transform."""

    def __init__(self, device):
        self.device = device

    def transform(self, x, max_memory_mb=None, out=None):
        return x[:, :2].copy()


def test_comp_rows_measure_gpu_memory_only_on_a_gpu(monkeypatch):
    """gpu_mem_gb (Tables 1-2 'Comp' rows) is torch's peak GPU memory of the compression (in
    bytes) when CSST runs on CUDA; on the CPU the cell is absent and a note says why."""
    x = np.ones((5, 4), np.float32)
    ctx = FakeContext(None)
    y, seconds, gpu = experiments.compress_measured(ctx, FakeModel("cpu"), x)
    assert y.shape == (5, 2) and seconds >= 0
    assert gpu is None and any("gpu_mem_gb not measured" in n for n in ctx.notes)
    assert "gpu_mem_gb" not in experiments.comp_row("GIST1M", 2, "compress_s", 1.0, gpu)

    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 1.5e9)
    _, _, gpu = experiments.compress_measured(ctx, FakeModel("cuda:0"), x)
    assert calls == ["reset"] and gpu == 1.5e9  # bytes: the runner converts to the column's GB
    row = experiments.comp_row("GIST1M", 2, "compress_s", 1.0, gpu)
    assert row == {"dataset": "GIST1M", "row": "Comp cf=2", "compress_s": 1.0, "gpu_mem_gb": gpu}


def test_values_are_in_their_columns_measured_units(monkeypatch):
    """The rows carry what annrepro.tables.spec.MEASURED_UNITS says for each column (bytes for
    "GB", seconds for "s" and "h", fractions for "%"), and the runner alone converts: the peak GPU
    memory (torch: 1.5e9 bytes) reaches Table 1 as 1.5 GB, not 1.5e-9; Table 2's compression time
    of 7200 s as 2 h."""
    t1, t2 = load_spec(SPECS / "table1.toml"), load_spec(SPECS / "table2.toml")
    assert [t1.columns[c].measured_unit for c in ("gpu_mem_gb", "compress_s")] == ["bytes", "s"]
    assert [t2.columns[c].measured_unit for c in ("compress_h", "build_h")] == ["s", "s"]
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 1_500_000_000)
    x = np.ones((4, 4), np.float32)
    _, _, gpu = experiments.compress_measured(FakeContext(None), FakeModel("cuda:0"), x)
    row = experiments.comp_row("GIST1M", 2, "compress_s", 12.5, gpu)
    measured, _ = _accept(t1, [row])
    assert measured[("GIST1M", "Comp cf=2", "gpu_mem_gb")][0] == pytest.approx(1.5)
    assert measured[("GIST1M", "Comp cf=2", "compress_s")][0] == pytest.approx(12.5)
    hnsw = {"dataset": "Bigann-1B", "row": "HNSW cf=1", "build_s": 1800.0, "1-recall@1": 0.5}
    comp = experiments.comp_row("Bigann-1B", 2, "compress_h", 7200.0, 3e9)
    measured, _ = _accept(t2, [comp, experiments.billion_row(hnsw)])
    assert measured[("Bigann-1B", "Comp cf=2", "compress_h")][0] == pytest.approx(2.0)
    assert measured[("Bigann-1B", "Comp cf=2", "gpu_mem_gb")][0] == pytest.approx(3.0)
    assert measured[("Bigann-1B", "HNSW cf=1", "build_h")][0] == pytest.approx(0.5)
    assert measured[("Bigann-1B", "HNSW cf=1", "1-recall@1")][0] == pytest.approx(50.0)


# -- Table 5: MLP and VAE --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["MLP", "VAE"])
def test_learned_baseline_rows(name):
    ds = blobs()
    xq, gt = _queries(ds)
    ctx = Ctx()
    rows = experiments.learned_baseline_rows(ctx, name, "Deep1M", ds, xq, gt, 4, 10)
    assert [r["row"] for r in rows] == [f"{name}+HNSW", f"{name}+brute"]
    published = ctx.spec.published()
    for r in rows:
        assert r["dataset"] == "Deep1M"
        for col in ("1-recall@1", "1-recall@5", "1-recall@10"):
            assert ("Deep1M", r["row"], col) in published
        assert 0.0 <= r["1-recall@1"] <= r["1-recall@5"] <= r["1-recall@10"] <= 1.0
    assert any(f"{name} 16 -> 4 dims" in n for n in ctx.notes)


def test_mlp_row_follows_ccst_input_scaling():
    ds = blobs()
    ctx = Ctx(ccst_input_scaling="none", mlp_epochs=1)
    experiments.learned_baseline_rows(ctx, "MLP", "Deep1M", ds, *_queries(ds), 4, 10)
    assert any("input scaling 'none' as CSST's" in n for n in ctx.notes), ctx.notes


def test_learned_baseline_params_checked():
    ds = blobs()
    ctx = Ctx()
    del ctx.params["mlp_lr"]
    with pytest.raises(ProducerError, match="mlp_lr"):
        experiments.learned_baseline_rows(ctx, "MLP", "Deep1M", ds, *_queries(ds), 4, 10)
    ctx = Ctx(vae_kl_wieght=1.0)
    with pytest.raises(ProducerError, match="vae_"):
        experiments.learned_baseline_rows(ctx, "VAE", "Deep1M", ds, *_queries(ds), 4, 10)


# -- Table 5: Catalyst -----------------------------------------------------------------------


def test_catalyst_rows_noted_without_catalyzer(monkeypatch):
    monkeypatch.setitem(sys.modules, "catalyzer", None)  # `import catalyzer` now fails
    ds = blobs()
    ctx = Ctx()
    assert experiments.catalyst_rows(ctx, "Deep1M", ds, *_queries(ds), 4, 10) == []
    assert any("not measured: catalyzer not installed" in n for n in ctx.notes), ctx.notes
    ctx.notes.clear()  # the failure is not memoised: a second table notes it again
    assert experiments.catalyze(ctx, "Deep1M", ds, ds.xq, 4) is None
    assert any("not measured: catalyzer not installed" in n for n in ctx.notes), ctx.notes


def test_catalyst_rows_only_on_catalyst_datasets():
    pytest.importorskip("catalyzer")
    ds = blobs()
    xq, gt = _queries(ds)
    ctx = Ctx(catalyst_epochs=2, catalyst_n_val=60, catalyst_n_val_queries=20)
    assert experiments.catalyst_rows(ctx, "GIST1M", ds, xq, gt, 4, 10) == []  # Table 5: Deep1M
    rows = experiments.catalyst_rows(ctx, "Deep1M", ds, xq, gt, 4, 10)
    assert [r["row"] for r in rows] == ["Catalyst+HNSW", "Catalyst+brute"]
    assert all(0.0 <= r["1-recall@10"] <= 1.0 for r in rows)
    assert any("Catalyst 16 -> 4 dims" in n for n in ctx.notes)
    # memoised: Table 3's Catalyst+PQ rows reuse the catalyzed data of the same settings
    out = experiments.catalyze(ctx, "Deep1M", ds, xq, 4)
    assert experiments.catalyze(ctx, "Deep1M", ds, xq, 4) is out
    assert out[0].shape == (300, 4) and out[1].shape == (20, 4)
