"""Sec. 4.2 protocol: graph built on compressed vectors, searched with the full-dimensional ones.

The transplanted index must hold exactly the graph built on the compressed vectors, and every
distance it returns must be the full-dimensional one.
"""

import gc

import faiss
import numpy as np
import pytest
from ccst._indexes import (
    add_in_chunks,
    build_hnsw_flat,
    build_hnsw_flat_built_on,
    build_hnsw_sq8,
    build_hnsw_sq8_built_on,
    build_nsg_flat,
    build_nsg_flat_built_on,
    hnsw_graph,
    nsg_graph,
    set_search_params,
)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((400, 32)).astype(np.float32)
    xq = rng.standard_normal((10, 32)).astype(np.float32)
    # a stand-in "compressor": a fixed random projection to 8 dims
    w = rng.standard_normal((32, 8)).astype(np.float32) / np.sqrt(8)
    return xb, xq, np.ascontiguousarray(xb @ w)


def _sq_dist(xq, xb, I):
    return ((xq[:, None, :] - xb[I]) ** 2).sum(-1)


def test_hnsw_graph_is_the_compressed_one_and_distances_are_full(data):
    xb, xq, xg = data
    ref = build_hnsw_flat(xg, M=8, ef_construction=40)
    index = build_hnsw_flat_built_on(xg, xb, M=8, ef_construction=40)
    gc.collect()  # the graph-side index is gone: the copy must not depend on it
    a, b = hnsw_graph(ref), hnsw_graph(index)
    assert a[:2] == b[:2] and np.array_equal(a[2], b[2]) and np.array_equal(a[3], b[3])
    assert index.d == 32 and index.ntotal == len(xb)
    set_search_params(index, ef_search=64)
    D, I = index.search(xq, 5)
    assert (I >= 0).all()
    np.testing.assert_allclose(D, _sq_dist(xq, xb, I), rtol=1e-4, atol=1e-4)
    # a graph built on the full vectors differs: the test would catch a rebuilt graph
    assert not np.array_equal(hnsw_graph(build_hnsw_flat(xb, 8, 40))[3], b[3])


def test_nsg_graph_is_the_compressed_one_and_distances_are_full(data):
    xb, xq, xg = data
    ref = build_nsg_flat(xg, R=12, L=24, C=64, GK=16, nndescent=None)
    index = build_nsg_flat_built_on(xg, xb, R=12, L=24, C=64, GK=16, nndescent=None)
    gc.collect()
    (ea, ga), (eb, gb) = nsg_graph(ref), nsg_graph(index)
    assert ea == eb and np.array_equal(ga, gb)
    assert index.d == 32 and index.ntotal == len(xb) and index.is_built
    set_search_params(index, search_L=48)
    D, I = index.search(xq, 5)
    assert (I >= 0).all()
    np.testing.assert_allclose(D, _sq_dist(xq, xb, I), rtol=1e-4, atol=1e-4)
    # exact top-1 with full distances is found for most queries on this easy set
    nn = _sq_dist(xq, xb, np.arange(len(xb))[None].repeat(len(xq), 0)).argmin(1)
    assert (I[:, 0] == nn).mean() >= 0.8


def test_hnsw_sq8_built_on(data):
    xb, xq, xg = data
    ref = build_hnsw_sq8(xg, xg, M=8, ef_construction=40)
    index = build_hnsw_sq8_built_on(xg, xg, xb, xb, M=8, ef_construction=40)
    a, b = hnsw_graph(ref), hnsw_graph(index)
    assert np.array_equal(a[3], b[3]) and index.d == 32 and index.ntotal == len(xb)
    set_search_params(index, ef_search=64)
    D, I = index.search(xq, 5)
    # distances are to the 8-bit codes of the full vectors: close to, not equal to, exact ones
    np.testing.assert_allclose(D, _sq_dist(xq, xb, I), rtol=0.05)
    assert isinstance(faiss.downcast_index(index.storage), faiss.IndexScalarQuantizer)


def test_mismatched_rows_raise(data):
    xb, _, xg = data
    with pytest.raises(ValueError, match="same number of rows"):
        build_hnsw_flat_built_on(xg[:10], xb, M=8, ef_construction=40)
    with pytest.raises(ValueError, match="same number of rows"):
        build_nsg_flat_built_on(xg, xb[:10], R=8, L=16, C=32, GK=8, nndescent=None)


def test_add_in_chunks_converts_uint8(tmp_path):
    x = np.random.default_rng(1).integers(0, 255, (100, 8), dtype=np.uint8)
    path = tmp_path / "x.u8"
    x.tofile(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=(100, 8))
    index = faiss.IndexFlatL2(8)
    add_in_chunks(index, mm, chunk=7)
    np.testing.assert_array_equal(index.reconstruct_n(0, 100), x.astype(np.float32))
