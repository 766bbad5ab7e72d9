"""Posting-list search (KDindex Sec. 2.2, 3.4, App. D)."""

import numpy as np
import pytest
from annrepro.groundtruth import knn_exact
from kdindex.posting import PostingListIndex, posting_list_sizes
from kdindex.quantizers import train_quantizer


def _setup(kind, metric, nb=600, nq=20, d=12, seed=0):
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((nb, d)).astype(np.float32)
    xq = rng.standard_normal((nq, d)).astype(np.float32)
    q = train_quantizer(kind, xb, B=3, W=16, seed=0, opq_niter=2, aq_beam=1, aq_refine=False)
    return xb, xq, PostingListIndex(q, metric, xb=xb)


@pytest.mark.parametrize("kind", ["PQ", "OPQ", "AQ"])
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_all_lists_probed_is_exhaustive_asymmetric_search(kind, metric):
    xb, xq, index = _setup(kind, metric)
    D, I, ncand = index.search(xq, 10, nprobe=16, return_ncand=True, base_batch=128)
    assert (ncand == len(xb)).all()
    rec = index.quantizer.decode(index.codes)
    De, _ = knn_exact(index.quantizer.transform(xq), rec, 10, metric)
    np.testing.assert_allclose(D, De, rtol=1e-4, atol=1e-3)


def test_probed_candidates_only():
    xb, xq, index = _setup("PQ", "l2")
    q = index.quantizer
    nprobe = 2
    D, I, ncand = index.search(xq, 5, nprobe=nprobe, return_ncand=True, base_batch=100)
    scores = q.codeword_scores(q.transform(xq), "l2")
    top = np.argsort(-scores, axis=2)[:, :, :nprobe]  # no ties on random data
    for i in range(len(xq)):
        cand = np.zeros(len(xb), bool)
        for b in range(q.B):
            cand |= np.isin(index.codes[:, b], top[i, b])
        assert ncand[i] == cand.sum()
        assert cand[I[i][I[i] >= 0]].all()
        # the results are the best candidates by asymmetric distance
        rec = q.decode(index.codes[cand])
        d = ((q.transform(xq[i : i + 1]) - rec) ** 2).sum(1)
        np.testing.assert_allclose(np.sort(d)[:5], D[i], rtol=1e-4, atol=1e-4)


def test_fewer_candidates_than_k_pad_with_minus_one():
    xb, xq, index = _setup("PQ", "ip", nb=40)
    _, I = index.search(xq, 40, nprobe=1)
    assert (I == -1).any()
    assert all(len(set(r[r >= 0])) == (r >= 0).sum() for r in I)


def test_list_sizes_and_arguments():
    codes = np.array([[0, 1], [0, 2], [3, 1]])
    np.testing.assert_array_equal(posting_list_sizes(codes, 4), [[2, 0, 0, 1], [0, 2, 1, 0]])
    xb, xq, index = _setup("PQ", "l2", nb=100)
    assert index.list_sizes().sum(axis=1).tolist() == [100] * 3
    with pytest.raises(ValueError):
        index.search(xq, 5, nprobe=0)
    with pytest.raises(ValueError):
        PostingListIndex(index.quantizer, "l2")  # neither xb nor codes


@pytest.mark.parametrize("kind", ["PQ", "OPQ", "AQ"])
@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("nprobe", [1, 3, 16])
def test_list_scan_equals_dense_search(kind, metric, nprobe):
    """search_lists (per query, candidates only) = search (dense, masked), up to float ties."""
    xb, xq, index = _setup(kind, metric)
    D, I, n = index.search(xq, 10, nprobe, return_ncand=True, base_batch=128)
    Dl, Il, nl = index.search_lists(xq, 10, nprobe, return_ncand=True)
    np.testing.assert_array_equal(nl, n)
    np.testing.assert_allclose(Dl, D, rtol=1e-4, atol=1e-3)
    # ids may differ only among equal scores (many documents share a code here): each returned
    # id really has the returned score, and each row has no repeated id
    q = index.quantizer
    rec, xt = q.decode(index.codes), q.transform(xq)
    if metric == "ip":
        S = np.einsum("qd,qkd->qk", xt, rec[Il])
    else:
        S = ((xt[:, None, :] - rec[Il]) ** 2).sum(2)
    np.testing.assert_allclose(S, Dl, rtol=1e-4, atol=1e-3)
    assert all(len(set(r)) == len(r) for r in Il)
    top = np.argsort(-q.codeword_scores(xt, metric), axis=2)[:, :, :nprobe]
    for i in range(len(xq)):  # every id lies in a probed list
        codes = index.codes[Il[i]]
        assert np.any([np.isin(codes[:, b], top[i, b]) for b in range(q.B)], axis=0).all()
    with pytest.raises(ValueError, match="nprobe"):
        index.search_lists(xq, 10, 0)


def test_list_scan_pads_with_minus_one():
    xb, xq, index = _setup("PQ", "ip", nb=40)
    _, I = index.search_lists(xq, 40, nprobe=1)
    assert (I == -1).any()
    assert all(len(set(r[r >= 0])) == (r >= 0).sum() for r in I)
