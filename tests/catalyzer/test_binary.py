"""LSH / ITQ / sign binary codes of Table 2 (catalyzer Sec. 5.4): fast smoke tests."""

import numpy as np
import pytest
from catalyzer.binary import hamming_knn, itq_index, lsh_index, sign_index


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    xt = rng.standard_normal((1000, 16)).astype(np.float32)
    xb = rng.standard_normal((500, 16)).astype(np.float32)
    xq = (xb[:20] + 0.05 * rng.standard_normal((20, 16))).astype(np.float32)
    return xt, xb, xq


def _codes(index, x):
    return index.sa_encode(x)


@pytest.mark.parametrize("nbits", [8, 16, 32])
def test_lsh_code_size_and_sign(data, nbits):
    xt, xb, _ = data
    index = lsh_index(16, nbits, seed=1)
    index.train(xt)
    codes = _codes(index, xb)
    assert codes.shape == (500, nbits // 8) and codes.dtype == np.uint8
    # a bit is the sign of a projection: negating a vector flips every bit
    np.testing.assert_array_equal(_codes(index, -xb[:10]), ~codes[:10])


def test_lsh_seeds_differ_and_repeat(data):
    xt, xb, _ = data
    a, b, c = (lsh_index(16, 16, seed=s) for s in (1, 1, 2))
    for idx in (a, b, c):
        idx.train(xt)
    np.testing.assert_array_equal(_codes(a, xb), _codes(b, xb))
    assert (_codes(a, xb) != _codes(c, xb)).any()


def test_lsh_finds_near_duplicates(data):
    xt, xb, xq = data
    I = hamming_knn(lsh_index(16, 32, seed=0), xt, xb, xq, 10)
    assert I.shape == (20, 10)
    assert (I == np.arange(20)[:, None]).any(axis=1).mean() >= 0.9


def test_itq_finds_near_duplicates_and_is_seeded(data):
    xt, xb, xq = data
    I1 = hamming_knn(itq_index(16, 16, seed=3), xt, xb, xq, 10)
    I2 = hamming_knn(itq_index(16, 16, seed=3), xt, xb, xq, 10)
    np.testing.assert_array_equal(I1, I2)
    assert (I1 == np.arange(20)[:, None]).any(axis=1).mean() >= 0.9


def test_itq_cannot_exceed_dimension():
    # Table 2 prints n/a for 128-bit ITQ on the 96-d Deep1M
    with pytest.raises(ValueError, match="cannot output"):
        itq_index(96, 128, seed=0)


def test_sign_index_is_sign_of_coordinates():
    x = np.array([[1.0, -2.0, 0.5, -0.1, 3.0, 2.0, -1.0, 1.0]], dtype=np.float32)
    index = sign_index(8)
    code = index.sa_encode(x)
    bits = np.unpackbits(code, bitorder="little")
    np.testing.assert_array_equal(bits, (x[0] > 0).astype(np.uint8))
