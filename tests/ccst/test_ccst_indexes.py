"""Helpers of ccst._indexes that need no data: PQ budget choice, NSG/HNSW builders."""

import numpy as np
import pytest
from ccst._indexes import (
    NNDescentParams,
    build_hnsw_flat,
    build_hnsw_sq8,
    build_ivfpq,
    build_nsg_flat,
    nearest_pq_m,
    set_search_params,
)


@pytest.mark.parametrize(
    ("d", "nbytes", "m"),
    [
        (960, 60, 60),  # GIST1M, Table 3
        (960, 30, 30),
        (256, 32, 32),  # Deep1M
        (256, 16, 16),
        (784, 60, 56),  # fmnist-1K stand-in
        (784, 30, 28),
        (64, 60, 64),  # synth-gist-2K
        (64, 30, 32),
        (96, 32, 32),  # deep1b-q96-3K
        (12, 5, 4),  # tie between 4 and 6: the smaller
    ],
)
def test_nearest_pq_m(d, nbytes, m):
    assert nearest_pq_m(d, nbytes) == m


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((300, 16)).astype(np.float32)
    xq = rng.standard_normal((10, 16)).astype(np.float32)
    return xb, xq


def _exact_nn(xb, xq):
    return ((xq[:, None] - xb[None]) ** 2).sum(-1).argmin(1)


def test_nsg_parameters_reach_faiss(blobs):
    xb, xq = blobs
    index = build_nsg_flat(xb, R=16, L=24, C=64, GK=20, nndescent=NNDescentParams(30, 5, 8, 20))
    assert (index.nsg.R, index.nsg.L, index.nsg.C, index.GK) == (16, 24, 64, 20)
    nnd = (index.nndescent_L, index.nndescent_iter, index.nndescent_S, index.nndescent_R)
    assert nnd == (30, 5, 8, 20)
    assert index.build_type == "\x01"
    set_search_params(index, search_L=64)
    _, I = index.search(xq, 1)
    assert (I[:, 0] == _exact_nn(xb, xq)).mean() >= 0.9


def test_nsg_brute_knn(blobs):
    xb, _ = blobs
    index = build_nsg_flat(xb, R=16, L=24, C=64, GK=20, nndescent=None)
    assert index.build_type == "\x00" and index.is_built


def test_hnsw_flat_and_sq8(blobs):
    xb, xq = blobs
    flat = build_hnsw_flat(xb, M=8, ef_construction=40)
    sq = build_hnsw_sq8(xb, xb, M=8, ef_construction=40)
    assert flat.hnsw.efConstruction == 40 and flat.ntotal == sq.ntotal == len(xb)
    for index in (flat, sq):
        set_search_params(index, ef_search=64)
        _, I = index.search(xq, 1)
        assert (I[:, 0] == _exact_nn(xb, xq)).mean() >= 0.9


def test_ivfpq_nprobe_and_code_size(blobs):
    xb, xq = blobs
    index = build_ivfpq(xb, xb, nlist=8, m=4)
    set_search_params(index, nprobe=8)
    assert index.nlist == 8 and index.nprobe == 8 and index.pq.M == 4 and index.code_size == 4
    assert not index.do_polysemous_training
    _, I = index.search(xq, 5)
    assert I.shape == (10, 5) and (I >= 0).all()
