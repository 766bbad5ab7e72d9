"""PQ / OPQ / AQ as arrays (KDindex Sec. 2.2, 4.1; Table 3 memory accounting)."""

import numpy as np
import pytest
from kdindex.quantizers import (
    KINDS,
    CodebookQuantizer,
    pad_dim,
    quantizer_memory_bytes,
    train_quantizer,
)


def _x(n=1000, d=16, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_codes_and_decode_match_faiss(kind):
    x = _x()
    q = train_quantizer(kind, x, B=4, W=16, seed=1, opq_niter=3, aq_beam=1, aq_refine=False)
    codes = q.encode(x[:200])
    assert codes.shape == (200, 4) and codes.dtype == np.int32
    assert codes.min() >= 0 and codes.max() < 16
    raw = q.faiss_quantizer.compute_codes(q.transform(x[:200]))
    np.testing.assert_allclose(q.decode(codes), q.faiss_quantizer.decode(raw), atol=1e-5)
    # quantization error well below the data's variance
    err = ((q.transform(x[:200]) - q.decode(codes)) ** 2).sum(1).mean()
    assert err < 0.9 * (x[:200] ** 2).sum(1).mean()


def test_pad_dim_and_zero_padding_keep_geometry():
    assert pad_dim(100, 8) == 104 and pad_dim(128, 8) == 128
    x = _x(d=10)
    q = train_quantizer("PQ", x, B=4, W=16, seed=0)
    assert (q.d_in, q.d_out) == (10, 12)
    xt = q.transform(x[:5])
    np.testing.assert_array_equal(xt[:, :10], x[:5])
    assert not xt[:, 10:].any()


def test_opq_rotation_is_orthonormal():
    q = train_quantizer("OPQ", _x(), B=4, W=16, seed=0, opq_niter=3)
    R = q.rotation
    np.testing.assert_allclose(R @ R.T, np.eye(16), atol=1e-4)


def test_greedy_assignment_without_faiss_object():
    x = _x()
    q = train_quantizer("PQ", x, B=4, W=16, seed=0)
    bare = CodebookQuantizer("PQ", q.d_in, q.d_out, q.codebooks)
    np.testing.assert_array_equal(bare.encode(x[:100]), q.encode(x[:100]))


def test_codeword_scores_are_similarities():
    rng = np.random.default_rng(3)
    cb = rng.standard_normal((2, 4, 3)).astype(np.float32)
    xq = rng.standard_normal((5, 6)).astype(np.float32)
    pq = CodebookQuantizer("PQ", 6, 6, cb)
    s = pq.codeword_scores(xq, "l2")
    want = -((xq[:, None, 3:6] - cb[1][None]) ** 2).sum(-1)
    np.testing.assert_allclose(s[:, 1], want, rtol=1e-5, atol=1e-5)
    aq = CodebookQuantizer("AQ", 6, 6, rng.standard_normal((2, 4, 6)).astype(np.float32))
    np.testing.assert_allclose(
        aq.codeword_scores(xq, "ip")[:, 0], xq @ aq.codebooks[0].T, rtol=1e-5
    )


def test_memory_accounting():
    # PQ8 x 8 bits over 1M SIFT vectors: 8 B codes per vector + a 256 x 128 float codebook
    m = quantizer_memory_bytes("PQ", 1_000_000, 128)
    assert m == {
        "codes": 8_000_000,
        "codebooks": 256 * 128 * 4,
        "rotation": 0,
        "total": 8_000_000 + 131_072,
    }
    assert quantizer_memory_bytes("OPQ", 10, 128)["rotation"] == 128 * 128 * 4
    assert quantizer_memory_bytes("AQ", 10, 128)["codebooks"] == 8 * 256 * 128 * 4
    assert quantizer_memory_bytes("PQ", 3, 16, B=4, W=16)["codes"] == 6  # 4-bit codes packed
    x = _x(d=10)
    for kind in KINDS:
        q = train_quantizer(kind, x, B=4, W=16, seed=0, opq_niter=2, aq_beam=1, aq_refine=False)
        assert q.memory_bytes(777) == quantizer_memory_bytes(kind, 777, 10, B=4, W=16)


def test_bad_arguments():
    with pytest.raises(ValueError):
        train_quantizer("LSH", _x())
    with pytest.raises(ValueError):
        train_quantizer("PQ", _x(), W=100)
    with pytest.raises(ValueError):
        CodebookQuantizer("PQ", 6, 6, np.zeros((4, 16, 2), np.float32))  # 4 x 2 != 6


def test_aq_equal_codebooks_give_equal_codes():
    """KDindex (AQ) and the AQ baseline encode with one encoder: faiss's residual beam search
    at the same beam. The same codebooks, handed to a learned index (no faiss object attached)
    or to the trained baseline, give the same codes; beam search beats greedy assignment."""
    from kdindex.student import Student

    x = _x(800, 12)
    base = train_quantizer("AQ", x, B=3, W=16, seed=0, aq_beam=4, aq_refine=False)
    assert base.aq_beam == 4
    learned = Student.from_quantizer(base, x).to_quantizer()  # what KDIndex.fit keeps
    assert learned.faiss_quantizer is None and learned.aq_beam == 4
    np.testing.assert_array_equal(learned.encode(x), base.encode(x))
    bare = CodebookQuantizer("AQ", 12, 12, base.codebooks.copy(), aq_beam=4)
    np.testing.assert_array_equal(bare.encode(x), base.encode(x))
    # the beam matters: beam 1 is greedy residual assignment, with a larger error
    greedy = CodebookQuantizer("AQ", 12, 12, base.codebooks.copy(), aq_beam=1)
    cg, cb = greedy.encode(x), base.encode(x)
    assert (cg != cb).any(axis=1).mean() > 0.05

    def err(c):
        return float(((x - base.decode(c)) ** 2).sum(1).mean())

    assert err(cb) < err(cg)
    with pytest.raises(ValueError, match="aq_beam"):
        CodebookQuantizer("AQ", 12, 12, base.codebooks.copy(), aq_beam=0)


def test_a_quantizer_trained_twice_is_trained_once_and_handed_out_as_copies(monkeypatch):
    """`train_quantizer` keeps its results (same vectors and settings: no second faiss run);
    each caller gets its own arrays; other data or another seed trains anew."""
    from kdindex import quantizers as qmod

    monkeypatch.setattr(qmod, "_TRAINED", qmod.OrderedDict())
    calls = []
    real = qmod._train_faiss
    monkeypatch.setattr(qmod, "_train_faiss", lambda *a: calls.append(a[0]) or real(*a))
    x = np.random.default_rng(0).standard_normal((600, 16)).astype(np.float32)
    a = qmod.train_quantizer("OPQ", x, B=4, W=16, seed=0, opq_niter=2)
    b = qmod.train_quantizer("OPQ", x.copy(), B=4, W=16, seed=0, opq_niter=2)
    assert calls == ["OPQ"]
    np.testing.assert_array_equal(a.codebooks, b.codebooks)
    np.testing.assert_array_equal(a.encode(x), b.encode(x))
    a.codebooks[:] = 0
    a.rotation[:] = 0
    c = qmod.train_quantizer("OPQ", x, B=4, W=16, seed=0, opq_niter=2)
    np.testing.assert_array_equal(b.codebooks, c.codebooks)
    np.testing.assert_array_equal(b.rotation, c.rotation)
    qmod.train_quantizer("OPQ", x, B=4, W=16, seed=1, opq_niter=2)
    qmod.train_quantizer("OPQ", x[:500], B=4, W=16, seed=0, opq_niter=2)
    assert calls == ["OPQ"] * 3
