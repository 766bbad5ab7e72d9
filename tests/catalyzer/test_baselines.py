"""Table 1 baselines (catalyzer Sec. 5.3, 5.4): fast smoke tests."""

import numpy as np
import pytest
from catalyzer.baselines import (
    encode_search,
    l2_normalize,
    lsq_index,
    opq_index,
    pca_lattice_search,
)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 32)).astype(np.float32)

    def draw(n):
        return (centres[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, 32))).astype(
            np.float32
        )

    return draw(2000), draw(1000), draw(20)


def _nn(xq, xb):
    d = ((xq[:, None, :] - xb[None, :, :]) ** 2).sum(-1)
    return d.argmin(axis=1)


def test_pca_lattice_64_bits_and_recall(data):
    xt, xb, xq = data
    res = pca_lattice_search(xt, xb, xq, k=100, d_out=24, r2=79)
    assert res.code_bits == 64 and res.I.shape == (20, 100) and res.encode_s >= 0
    hit = (res.I == _nn(xq, xb)[:, None]).any(axis=1)
    assert hit.mean() >= 0.8


def test_pca_lattice_rejects_too_large_d_out(data):
    xt, xb, xq = data
    with pytest.raises(ValueError, match="PCA"):
        pca_lattice_search(xt[:, :16], xb[:, :16], xq[:, :16], k=10, d_out=24)


def test_opq_encode_search_matches_add(data):
    xt, xb, xq = data
    # a small OPQ keeps the test fast; Table 1 uses "OPQ8_64,PQ8np"
    factory = "OPQ2_8,PQ2x4np"
    res = encode_search(opq_index(32, factory, niter=2), xt[:500], xb, xq, 10)
    assert res.code_bits == 8
    ref = opq_index(32, factory, niter=2)
    ref.train(xt[:500])
    ref.add(xb)
    np.testing.assert_array_equal(ref.search(xq, 10)[1], res.I)


def test_lsq_smoke(data):
    xt, xb, xq = data
    index = lsq_index(32, M=2, nbits=4, seed=0, train_iters=1, encode_ils_iters=1)
    res = encode_search(index, xt[:500], xb[:200], xq, 5)
    assert res.code_bits == 8 and res.I.shape == (20, 5)
    assert (res.I >= 0).all() and (res.I < 200).all()


def test_l2_normalize_keeps_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]])
