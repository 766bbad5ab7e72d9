"""Link and Code (ccst.linkcode) against plain HNSW + PQ on the same graph."""

import dataclasses

import numpy as np
import pytest
from annrepro.groundtruth import knn_exact
from annrepro.metrics import one_recall_at
from ccst.linkcode import LinkCode, LinkCodeParams

PARAMS = LinkCodeParams(pq_m=4, hnsw_M=8, ef_construction=64, beta_nsq=4, beta_k=16)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((10, 16)).astype(np.float32) * 2

    def draw(n):
        x = centers[rng.integers(0, 10, n)] + rng.standard_normal((n, 16)).astype(np.float32)
        return np.ascontiguousarray(x, dtype=np.float32)

    xb, xt, xq = draw(600), draw(600), draw(40)
    return xt, xb, xq, knn_exact(xq, xb, 10, "l2")[1]


@pytest.fixture(scope="module")
def fitted(data):
    xt, xb, _, _ = data
    return LinkCode(PARAMS).fit(xt, xb)


def test_refinement_reduces_reconstruction_error(data, fitted):
    _, xb, _, _ = data
    pq_err, lc_err = fitted.reconstruction_errors(xb)
    assert lc_err < 0.9 * pq_err
    assert fitted.codes.shape == (600, 4) and fitted.codes.dtype == np.uint8
    assert fitted.code_size == 8


def test_recall_not_below_plain_hnsw_pq(data, fitted):
    _, _, xq, gt = data
    _, I = fitted.search(xq, 10)
    plain = LinkCode(dataclasses.replace(PARAMS, k_reorder=0))
    plain.index, plain.recons = fitted.index, fitted.recons  # same graph and codes, no re-rank
    _, I0 = plain.search(xq, 10)
    assert set(map(tuple, np.sort(I, 1))) == set(map(tuple, np.sort(I0, 1)))  # same candidates
    assert one_recall_at(I, gt, 1) >= one_recall_at(I0, gt, 1)
    assert one_recall_at(I, gt, 1) > 0.3


def test_refined_reconstruction_matches_its_definition(data, fitted):
    """x^_i on block s = codebook_s[code_is] . [q(x_i); q(neighbours of i)] on that block."""
    i = 7
    ids = fitted._table_ids[i]
    assert ids[0] == i
    for s, (lo, hi) in enumerate(fitted._blocks):
        beta = fitted.codebooks[s][fitted.codes[i, s]]
        expect = beta @ fitted.pq_recons[ids, lo:hi]
        np.testing.assert_allclose(fitted.recons[i, lo:hi], expect, rtol=1e-4, atol=1e-4)


def test_bad_input_raises(data):
    xt, xb, _, _ = data
    with pytest.raises(ValueError, match="must divide"):
        LinkCode(dataclasses.replace(PARAMS, pq_m=5)).fit(xt, xb)
    with pytest.raises(ValueError, match="L2"):
        LinkCode(PARAMS, metric="ip")
    with pytest.raises(ValueError, match="one byte"):
        LinkCodeParams(pq_m=4, beta_k=512)
    with pytest.raises(RuntimeError, match="not fitted"):
        LinkCode(PARAMS).search(xb[:2], 1)
