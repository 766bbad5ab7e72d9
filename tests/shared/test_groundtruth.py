"""Exact ground truth: chunking, metrics, caching, shipped-ground-truth checks, bad input."""

import numpy as np
import pytest
from annrepro.groundtruth import GroundTruthError, cached_knn, check_groundtruth, knn_exact


def _xy(nq=20, nb=300, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((nq, d)).astype(np.float32), rng.standard_normal((nb, d)).astype(
        np.float32
    )


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_chunked_equals_numpy(metric):
    xq, xb = _xy()
    D, I = knn_exact(xq, xb, 10, metric, base_chunk=37, query_chunk=6)
    if metric == "l2":
        ref = ((xq[:, None] - xb[None]) ** 2).sum(-1)
        order = np.argsort(ref, axis=1)[:, :10]
    else:
        ref = xq @ xb.T
        order = np.argsort(-ref, axis=1)[:, :10]
    np.testing.assert_array_equal(I, order)
    np.testing.assert_allclose(D, np.take_along_axis(ref, order, 1), rtol=1e-4, atol=1e-4)


def test_uint8_memmap_base(tmp_path):
    rng = np.random.default_rng(1)
    xb = rng.integers(0, 255, (200, 16)).astype(np.uint8)
    mm = np.lib.format.open_memmap(tmp_path / "b.npy", mode="w+", dtype=np.uint8, shape=xb.shape)
    mm[:] = xb
    xq = xb[:5].astype(np.float32)
    _, I = knn_exact(xq, mm, 1, base_chunk=64)
    np.testing.assert_array_equal(I[:, 0], np.arange(5))


def test_bad_inputs():
    xq, xb = _xy()
    with pytest.raises(GroundTruthError, match="query dimension 7 differs from base dimension 8"):
        knn_exact(xq[:, :7], xb, 1)
    with pytest.raises(GroundTruthError, match="k=301 must be between 1 and the base size 300"):
        knn_exact(xq, xb, 301)
    xb2 = xb.copy()
    xb2[123, 0] = np.nan
    with pytest.raises(GroundTruthError, match="base row 123 contains NaN"):
        knn_exact(xq, xb2, 1, base_chunk=50)
    with pytest.raises(GroundTruthError, match="unknown metric"):
        knn_exact(xq, xb, 1, "cosine")


def test_cache_serves_smaller_k(tmp_path, monkeypatch):
    monkeypatch.setenv("ANNREPRO_CACHE", str(tmp_path))
    xq, xb = _xy()
    D, I = cached_knn(xq, xb, 10)
    assert len(list((tmp_path / "groundtruth").glob("*.npz"))) == 1
    D5, I5 = cached_knn(xq, xb, 5)
    np.testing.assert_array_equal(I5, I[:, :5])
    assert len(list((tmp_path / "groundtruth").glob("*.npz"))) == 1


def test_check_shipped_accepts_tie_reordering_and_rejects_wrong():
    xq, xb = _xy(nb=50)
    xb[7] = xb[3]  # an exact tie
    xq[0] = xb[3] + 1e-3
    _, I = knn_exact(xq, xb, 5)
    gt = I.copy()
    row = list(gt[0])
    i3, i7 = row.index(3), row.index(7)
    gt[0, i3], gt[0, i7] = 7, 3  # swap the tied ids
    check_groundtruth(gt, xq, xb)
    wrong = I.copy()
    # a wrong last neighbour (farther than the true 5th, so the row stays nearest first)
    wrong[2, -1] = (set(range(50)) - set(I[2])).pop()
    with pytest.raises(GroundTruthError, match="query 2 does not list its exact top-5"):
        check_groundtruth(wrong, xq, xb)
    # a wrong first neighbour breaks the order before the exact comparison is reached
    wrong = I.copy()
    wrong[2, 0] = I[2, -1]
    wrong[2, -1] = I[2, 0]
    with pytest.raises(GroundTruthError, match="query 2 is not ordered nearest first"):
        check_groundtruth(wrong, xq, xb)
    with pytest.raises(GroundTruthError, match="outside \\[0, 50\\)"):
        check_groundtruth(I + 1000, xq, xb)
