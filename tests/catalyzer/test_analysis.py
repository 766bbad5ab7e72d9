"""catalyzer.analysis: the Sec. 3.3 uniformity statistic, Figure 7's range search (Appendix C)
in the input and catalyzed spaces, Appendix B's lattice arithmetic."""

from pathlib import Path

import numpy as np
import pytest
from annrepro.datasets import get_dataset
from annrepro.tables import load_spec
from annrepro.testing import FakeContext
from catalyzer.analysis import (
    lattice_arithmetic_rows,
    nn_overlap_probability,
    range_search_at_recall,
    uniformity_rows,
)

SPECS = Path(__file__).resolve().parents[2] / "paper_tables" / "catalyzer"


def test_nn_overlap_probability():
    # Sec. 3.3: P(NN1 of i farther than NN100 of j), i != j
    d1 = np.array([1.0, 2.0, 3.0])
    dn = np.array([1.5, 2.5, 3.5])
    # pairs: i=1 (2.0) > dn[0] (1.5); i=2 (3.0) > dn[0], dn[1] -> 3 of 6 ordered pairs
    assert nn_overlap_probability(d1, dn) == pytest.approx(0.5)
    assert nn_overlap_probability(np.ones(4), np.full(4, 2.0)) == 0.0


def test_range_search_at_recall():
    xb = np.array([[0.0], [1.0], [2.0], [3.0]], dtype=np.float32)
    xq = np.array([[0.1], [1.3], [2.5], [3.0], [0.4]], dtype=np.float32)
    nn = np.array([0, 1, 2, 3, 0])  # nearest neighbours: distances 0.1, 0.3, 0.5, 0.0, 0.4
    eps, nres = range_search_at_recall(xq, xb, nn, 0.8)
    assert eps == pytest.approx(0.4)  # 4 of 5 queries have their NN within 0.4
    # within 0.4 (inclusive): q0 -> {0}, q1 -> {1}, q2 -> {}, q3 -> {3}, q4 -> {0}
    assert nres == pytest.approx(4 / 5)


def test_lattice_arithmetic_of_appendix_b():
    rows = lattice_arithmetic_rows(load_spec(SPECS / "text.toml").params_for("tiny"))
    zn, atom = rows
    assert zn["row"] == "Zn d=24 r2=79" and zn["code_bits"] == 64  # 1.73e19 points
    # 8! / (2! 2! 4!) = 420 (Appendix B prints 240), one sign bit per non-zero coordinate
    assert atom["row"] == "atom (2 2 1 1 0 0 0 0) d=8 r2=10"
    assert (atom["n_permutations"], atom["n_sign_bits"]) == (420, 4)


class _WarpCatalyzer:
    """A stand-in catalyzer: a fixed non-linear map onto the sphere that changes neighbours."""

    def transform(self, x):
        y = np.sign(x) * np.abs(x) ** 3
        return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)


def test_range_search_radius_comes_from_original_space_neighbours():
    """Appendix C: epsilon and the recall are measured on the nearest neighbours in the ORIGINAL
    space, also in the catalyzed space (not on neighbours recomputed after the catalyzer)."""
    import faiss

    spec = load_spec(SPECS / "text.toml")
    ds = get_dataset(spec.datasets("tiny")["Deep1M"])
    ctx = FakeContext(spec, {"Deep1M": ds})
    fake = _WarpCatalyzer()
    rows, hist = uniformity_rows(ctx, "Deep1M", ds, fake)
    rows = {r["row"]: r for r in rows}
    xq, xb = np.ascontiguousarray(ds.xq), np.ascontiguousarray(ds.xb)
    nn = faiss.knn(xq, xb, 1)[1][:, 0]  # true nearest neighbours, original space
    yq, yb = fake.transform(xq), fake.transform(xb)
    assert (faiss.knn(yq, yb, 1)[1][:, 0] != nn).any()  # the warp moves some neighbours
    target = float(ctx.params["target_recall"])
    d1 = np.linalg.norm(yq - yb[nn], axis=1)
    eps = float(np.quantile(d1.astype(np.float64), target, method="inverted_cdf"))
    out = rows["Catalyzer output"]
    assert out["epsilon"] == pytest.approx(eps, rel=1e-6)
    d_all = np.linalg.norm(yq[:, None, :] - yb[None], axis=2)
    assert out["results_per_query"] == pytest.approx((d_all <= eps * (1 + 1e-6)).sum(1).mean())
    # at that radius the original nearest neighbour is found for >= target of the queries
    assert (d1 <= eps).mean() >= target
    # Figure 3's histograms are the distances of each space's own 1st / n_rank-th neighbours
    assert [h[2] for h in hist] == ["input space", "Catalyzer output"]
    n_rank = int(ctx.params["n_rank"])
    d_sorted = np.sort(d_all, axis=1)
    np.testing.assert_allclose(hist[1][3], d_sorted[:, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(hist[1][4], d_sorted[:, n_rank - 1], rtol=1e-4, atol=1e-5)
    assert out["p_nn1_gt_nn100"] == pytest.approx(nn_overlap_probability(hist[1][3], hist[1][4]))


def test_uniformity_needs_l2_data():
    from annrepro.testing import SyntheticDataset

    ds = SyntheticDataset(metric="ip")
    ctx = FakeContext(load_spec(SPECS / "text.toml"), {"Deep1M": ds})
    with pytest.raises(ValueError, match="Deep1M: the Sec. 3.3 statistic is defined for L2"):
        uniformity_rows(ctx, "Deep1M", ds, _WarpCatalyzer())
