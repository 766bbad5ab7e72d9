"""Smoke tests of the CCST baseline producers on small seeded arrays (no data files needed).

Each producer runs with the spec's tiny parameters on a fake context whose data sets are
synthetic Gaussian blobs, and must return rows whose (dataset, row, column) keys all exist in the
published CSV, with recalls in [0, 1] and positive timings.
"""

from pathlib import Path

import numpy as np
import pytest
from annrepro.groundtruth import knn_exact
from annrepro.tables.spec import load_spec
from annrepro.testing import FakeContext
from annrepro.threads import threads
from ccst import tables  # noqa: E402

pytestmark = pytest.mark.usefixtures("warm_torch_optim")  # table5 trains CCST

SPECS = Path(__file__).resolve().parents[2] / "paper_tables" / "ccst"


class FakeDataset:
    """Seeded Gaussian blobs with the attributes producers use. xb/xq/xt: float32 (n, d)."""

    def __init__(self, name: str, d: int, seed: int, nb: int = 400, nq: int = 20):
        rng = np.random.default_rng(seed)
        centers = rng.standard_normal((8, d)).astype(np.float32) * 3

        def draw(n):
            x = centers[rng.integers(0, 8, n)] + rng.standard_normal((n, d)).astype(np.float32)
            return np.ascontiguousarray(x, dtype=np.float32)

        self.name, self.d, self.metric = name, d, "l2"
        self.xb, self.xq, self.xt = draw(nb), draw(nq), draw(nb)
        self.nb, self.nq = nb, nq

    def gt(self, k: int) -> np.ndarray:
        return knn_exact(self.xq, self.xb, k, self.metric)[1]

    def describe(self) -> str:
        return f"fake {self.name} {self.d}-d"


DATASETS = {
    "GIST1M": FakeDataset("fake-gist", 40, seed=1),  # 40 is divisible by neither 60 nor 30
    "Deep1M": FakeDataset("fake-deep", 32, seed=2),
    "Bigann-1B": FakeDataset("fake-bigann", 16, seed=3),
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


@pytest.mark.parametrize("table", sorted(EXPECTED_ROWS))
def test_producer_returns_published_keys(table):
    spec = load_spec(SPECS / f"{table}.toml")
    ctx = FakeContext(spec, {name: DATASETS[name] for name in spec.datasets("tiny")})
    with threads(1):
        rows = getattr(tables, table)(spec, ctx)
    assert {r["row"] for r in rows} == EXPECTED_ROWS[table]
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


def test_pq_budget_adjustment_is_noted():
    spec = load_spec(SPECS / "table3.toml")
    ctx = FakeContext(spec, {name: DATASETS[name] for name in spec.datasets("tiny")})
    with threads(1):
        tables.table3(spec, ctx)
    # d=40: 60 B -> m=40; 30 B -> m=20 (tie between 20 and 40: the smaller); Deep d=32 unchanged
    assert any("PQ 60B uses m=40" in n for n in ctx.notes)
    assert any("PQ 30B uses m=20" in n for n in ctx.notes)
    assert not any(n.startswith("Deep1M") and ": PQ " in n for n in ctx.notes)


def test_srp_rows_recalls_are_monotone_in_k():
    """SRP rows: 1-recall@k grows with k."""
    spec = load_spec(SPECS / "table5.toml")
    ctx = FakeContext(spec, {name: DATASETS[name] for name in spec.datasets("tiny")})
    with threads(1):
        rows = {(r["dataset"], r["row"]): r for r in tables.table5(spec, ctx)}
    for ds in ("GIST1M", "Deep1M"):
        brute = rows[(ds, "SRP+brute")]
        assert brute["1-recall@1"] <= brute["1-recall@5"] <= brute["1-recall@10"]
