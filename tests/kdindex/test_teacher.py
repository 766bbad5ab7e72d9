"""The hnswlib teacher (KDindex Sec. 3.1, Table 7): labels, distance conventions, memory."""

import numpy as np
import pytest
from annrepro.groundtruth import knn_exact
from kdindex.teacher import HNSWTeacher, hnsw_memory_bytes_estimate


def _data(metric, nb=500, nq=40, d=16, seed=0):
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((nb, d)).astype(np.float32)
    xq = rng.standard_normal((nq, d)).astype(np.float32)
    if metric == "ip":  # varied norms, as in MIPS
        xb *= rng.uniform(0.5, 2.0, (nb, 1)).astype(np.float32)
    return xb, xq


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_labels_equal_exact_knn_on_easy_set(metric):
    xb, xq = _data(metric)
    t = HNSWTeacher(xb.shape[1], metric, M=16, ef_construction=200, ef_search=200, threads=1)
    t.build(xb)
    labels = t.label(xq, K=10)
    D, I = t.search(xq, 10)
    De, Ie = knn_exact(xq, xb, 10, metric)
    assert labels.dtype == np.int64 and labels.shape == (len(xq), 10)
    np.testing.assert_array_equal(labels, Ie)
    np.testing.assert_array_equal(I, Ie)
    # squared L2 distances (ascending) / inner products (descending), like faiss
    np.testing.assert_allclose(D, De, rtol=1e-4, atol=1e-4)


def test_ef_below_k_is_raised_to_k():
    xb, xq = _data("l2", nb=200)
    t = HNSWTeacher(xb.shape[1], "l2", M=8, ef_construction=100, ef_search=2, threads=1)
    t.build(xb)
    _, I = t.search(xq, 20)
    assert I.shape == (len(xq), 20) and (I >= 0).all()


def test_search_before_build_and_bad_metric():
    with pytest.raises(RuntimeError):
        HNSWTeacher(4, "l2").search(np.zeros((1, 4), np.float32), 1)
    with pytest.raises(ValueError):
        HNSWTeacher(4, "cosine")


def test_memory_bytes_matches_layout():
    nb, d, M = 2000, 16, 8
    xb, _ = _data("l2", nb=nb, d=d)
    t = HNSWTeacher(d, "l2", M=M, ef_construction=40, threads=1)
    t.build(xb)
    size = t.memory_bytes()
    # at least the vectors, the level-0 links (2M ids + count) and the labels of every element
    floor = nb * (4 * d + 2 * M * 4 + 4 + 8)
    assert size > floor
    # the expected size (random upper levels) is within 5 %
    assert abs(size - hnsw_memory_bytes_estimate(nb, d, M)) < 0.05 * size
    # deterministic: the same parameters and seed give the same size
    t2 = HNSWTeacher(d, "l2", M=M, ef_construction=40, threads=1)
    t2.build(xb)
    assert t2.memory_bytes() == size


def test_memory_bytes_is_the_saved_file_size(tmp_path):
    xb, _ = _data("l2", nb=300)
    t = HNSWTeacher(xb.shape[1], "l2", M=8, ef_construction=40, threads=1)
    t.build(xb)
    t.index.save_index(str(tmp_path / "index.bin"))
    assert t.memory_bytes() == (tmp_path / "index.bin").stat().st_size
