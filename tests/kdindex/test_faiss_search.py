"""Search through faiss's own indexes (kdindex.faiss_search) equals the numpy oracle (Sec. 3.4)."""

import faiss
import numpy as np
import pytest
from kdindex.api import KDIndex
from kdindex.faiss_search import (
    InvertedFiles,
    flat_index,
    merge_unique,
    pack_codes,
    select_probes,
)
from kdindex.posting import PostingListIndex
from kdindex.quantizers import train_quantizer
from kdindex.student import reconstruction_norms2


def _quantizer(kind, W, d=12, nb=600, seed=0):
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((nb, d)).astype(np.float32)
    B = 3 if kind != "PQ" else 5  # PQ: 12 -> 15 dimensions, zero padded
    q = train_quantizer(kind, xb, B=B, W=W, seed=0, opq_niter=2, aq_beam=1, aq_refine=False)
    return q, xb, rng.standard_normal((20, d)).astype(np.float32)


_CACHE: dict = {}


def _index(kind, W, metric):
    key = (kind, W)
    if key not in _CACHE:
        _CACHE[key] = _quantizer(kind, W)
    q, xb, xq = _CACHE[key]
    return PostingListIndex(q, metric, xb=xb), xq


def _assert_same_search(index, xq, D, I, Do, Io, nprobe):
    """faiss (D, I) vs numpy oracle (Do, Io): the same distances, ids that really have them,
    distinct ids, each in a probed list: so the same top-k up to exact ties."""
    np.testing.assert_array_equal(I >= 0, Io >= 0)
    np.testing.assert_allclose(D, Do, rtol=1e-5, atol=1e-5)
    q = index.quantizer
    xt = q.transform(xq)
    rec = q.decode(index.codes)
    found = I >= 0
    if index.metric == "ip":
        S = np.einsum("qd,qkd->qk", xt, rec[I])
    else:
        S = ((xt[:, None, :] - rec[I]) ** 2).sum(2)
    np.testing.assert_allclose(S[found], D[found], rtol=1e-5, atol=1e-5)
    assert all(len(set(r[r >= 0])) == (r >= 0).sum() for r in I)
    top = select_probes(q.codeword_scores(xt, index.metric), nprobe)
    for i in range(len(xq)):
        codes = index.codes[I[i][found[i]]]
        assert np.any([np.isin(codes[:, b], top[i, b]) for b in range(q.B)], axis=0).all()


@pytest.mark.parametrize("kind", ["PQ", "OPQ", "AQ"])
@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("W", [16, 256])
@pytest.mark.parametrize("nprobe", [1, 3, "W"])
def test_faiss_equals_numpy_oracle(kind, metric, W, nprobe):
    nprobe = W if nprobe == "W" else nprobe
    index, xq = _index(kind, W, metric)
    D, I, n = index.search(xq, 10, nprobe, return_ncand=True, method="faiss")
    Do, Io, no = index.search(xq, 10, nprobe, return_ncand=True, method="numpy")
    np.testing.assert_array_equal(n, no)
    _assert_same_search(index, xq, D, I, Do, Io, nprobe)
    if nprobe == W:  # exhaustive: faiss's flat index (IndexPQ / IndexResidualQuantizer)
        assert isinstance(index._faiss_flat, faiss.Index) and index._faiss_lists is None
    else:  # one faiss inverted file per codebook, lists = codewords
        assert len(index._faiss_lists.files) == index.quantizer.B
        assert all(f.nlist == W and not f.by_residual for f in index._faiss_lists.files)


def test_default_search_goes_through_faiss():
    index, xq = _index("AQ", 16, "l2")
    index.search(xq, 5, 2)
    assert index._faiss_lists is not None and index._faiss_flat is None
    index.search(xq, 5, 16)
    assert isinstance(index._faiss_flat, faiss.IndexResidualQuantizer)


@pytest.mark.parametrize("kind", ["PQ", "OPQ", "AQ"])
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_kdindex_search_faiss_equals_numpy(kind, metric):
    q, xb, xq = _quantizer(kind, 16, seed=1)
    kd = KDIndex(kind, metric, B=q.B, W=q.W)
    kd.quantizer, kd.codes = q, q.encode(xb)
    kd.norms2 = reconstruction_norms2(q, kd.codes)
    pl = PostingListIndex(q, metric, codes=kd.codes)
    for nprobe in (None, 2):
        D, I = kd.search(xq, 10, nprobe)
        Do, Io = kd.search(xq, 10, nprobe, method="numpy")
        _assert_same_search(pl, xq, D, I, Do, Io, q.W if nprobe is None else nprobe)
    held = kd.posting_lists()
    assert kd.posting_lists() is held  # faiss indexes kept between searches
    kd.codes = kd.codes.copy()
    assert kd.posting_lists() is not held  # new codes: rebuilt
    with pytest.raises(ValueError, match="method"):
        kd.search(xq, 10, method="torch")


def test_opq_and_padding_through_pretransform():
    q, xb, xq = _quantizer("OPQ", 16)
    codes = q.encode(xb)
    fi = flat_index(q, codes, "l2")
    assert isinstance(fi, faiss.IndexPreTransform) and fi.d == q.d_in
    qp, xbp, _ = _quantizer("PQ", 16)
    assert qp.d_out == 15 and flat_index(qp, qp.encode(xbp), "ip").d == 12


def test_pack_codes_is_faiss_layout():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 12)).astype(np.float32)
    for nbits in (4, 8, 5):
        pq = faiss.ProductQuantizer(12, 3, nbits)
        pq.cp.min_points_per_centroid = 1
        pq.train(x)
        want = pq.compute_codes(x)
        cb = faiss.vector_to_array(pq.centroids).reshape(3, 1 << nbits, 4)
        codes = np.stack(
            [
                faiss.knn(np.ascontiguousarray(x[:, 4 * b : 4 * b + 4]), cb[b], 1)[1][:, 0]
                for b in range(3)
            ],
            axis=1,
        )
        np.testing.assert_array_equal(pack_codes(codes, nbits), want)
    with pytest.raises(ValueError, match="codes must lie"):
        pack_codes(np.array([[16, 0]]), 4)


def test_merge_unique_drops_repeats_and_pads():
    D = np.array([[1.0, 0.5, 1.0, 3.0], [2.0, 2.0, np.inf, np.inf]], dtype=np.float32)
    I = np.array([[7, 3, 7, 9], [4, 4, -1, -1]])
    Dm, Im = merge_unique(D, I, 3, "l2")
    np.testing.assert_array_equal(Im, [[3, 7, 9], [4, -1, -1]])
    np.testing.assert_array_equal(Dm, [[0.5, 1.0, 3.0], [2.0, np.inf, np.inf]])
    Dm, Im = merge_unique(D, I, 2, "ip")
    np.testing.assert_array_equal(Im, [[9, 7], [4, -1]])
    assert Dm[1, 1] == -np.inf


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_fewer_candidates_than_k_pad(metric):
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((40, 8)).astype(np.float32)
    q = train_quantizer("PQ", xb, B=2, W=16, seed=0)
    index = PostingListIndex(q, metric, xb=xb)
    for nprobe in (1, 16):
        D, I = index.search(xb[:5], 50, nprobe, method="faiss")
        assert (I == -1).any() and np.isinf(D[I == -1]).all()
        assert all(len(set(r[r >= 0])) == (r >= 0).sum() for r in I)
        Do, Io = index.search(xb[:5], 50, nprobe, method="numpy")
        np.testing.assert_array_equal(I >= 0, Io >= 0)


def test_inverted_files_hold_every_document_once_per_codebook():
    q, xb, _ = _quantizer("PQ", 16)
    codes = q.encode(xb)
    files = InvertedFiles(q, codes, "l2")
    for b, ivf in enumerate(files.files):
        sizes = [ivf.invlists.list_size(w) for w in range(16)]
        np.testing.assert_array_equal(sizes, np.bincount(codes[:, b], minlength=16))


def test_bad_method_and_non_codebook_quantizer():
    index, xq = _index("PQ", 16, "l2")
    with pytest.raises(ValueError, match="method"):
        index.search(xq, 5, 2, method="gpu")

    class Decoding:  # only transform / decode / codeword_scores, like PQ-VAE's adapter
        B, W = index.quantizer.B, index.quantizer.W

        def transform(self, x):
            return index.quantizer.transform(x)

        def decode(self, codes):
            return index.quantizer.decode(codes)

        def codeword_scores(self, xt, metric):
            return index.quantizer.codeword_scores(xt, metric)

    other = PostingListIndex(Decoding(), "l2", codes=index.codes)
    assert not other.faiss_searchable
    D, I = other.search(xq, 5, 2)  # auto: numpy
    np.testing.assert_allclose(D, index.search(xq, 5, 2)[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="numpy"):
        other.search(xq, 5, 2, method="faiss")
    with pytest.raises(ValueError, match=r"\(n, 12\)"):
        index.search(xq[:, :6], 5, 16, method="faiss")


@pytest.mark.parametrize(
    "metric, modes", [("l2", ["float", "aq"]), ("ip", ["lifted", "float", "aq"])]
)
@pytest.mark.parametrize("nprobe", [1, 3])
def test_every_aq_layout_equals_the_numpy_oracle(metric, modes, nprobe):
    """AQ posting lists: the lifted IndexIVFPQ (inner product), the float reconstructions in an
    IndexIVFFlat (L2 by default) and faiss's AQ inverted file all give the oracle's search."""
    index, xq = _index("AQ", 16, metric)
    Do, Io = index.search(xq, 10, nprobe, method="numpy")
    q = index.quantizer
    xt = q.transform(xq)
    probes = select_probes(q.codeword_scores(xt, metric), nprobe)
    for mode in modes:
        files = InvertedFiles(q, index.codes, metric, mode=mode)
        assert files.mode == mode
        D, I = files.search(xt, 10, probes)
        _assert_same_search(index, xq, D, I, Do, Io, nprobe)


def test_default_aq_layouts_and_the_float_budget():
    index, _ = _index("AQ", 16, "l2")
    q, codes = index.quantizer, index.codes
    assert InvertedFiles(q, codes, "l2").mode == "float"
    assert InvertedFiles(q, codes, "l2", max_float_bytes=0).mode == "aq"
    assert InvertedFiles(q, codes, "ip").mode == "lifted"
    with pytest.raises(ValueError, match="lifted"):
        InvertedFiles(q, codes, "l2", mode="lifted")
