"""Bad input, class "values not finite after the cast to float32": a float64 beyond float32's
range passes `isfinite` and becomes inf in every consumer; readers and writers check after
the cast."""

import numpy as np
import pytest
from annrepro.vecio import VectorFileError, read_vectors, write_vectors


def _x(n=6, d=4, dtype=np.float64):
    return np.random.default_rng(0).standard_normal((n, d)).astype(dtype)


def test_reader_refuses_float64_beyond_float32(tmp_path):
    x = _x()
    x[3, 1] = 1e39  # finite as float64, inf as float32
    p = tmp_path / "big.npy"
    np.save(p, x)
    with pytest.raises(
        VectorFileError, match=r"big\.npy: row 3 contains 1e\+39, beyond the float32"
    ):
        read_vectors(p)
    np.testing.assert_array_equal(read_vectors(p, 0, 3), x[:3])  # rows before it are fine


@pytest.mark.parametrize("ext", [".fvecs", ".fbin", ".npy"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -1e39])
def test_writer_refuses_what_readers_refuse(tmp_path, ext, bad):
    x = _x()
    x[2, 0] = bad
    p = tmp_path / f"x{ext}"
    with pytest.raises(VectorFileError, match=rf"x\{ext}: refusing to write: row 2 contains"):
        write_vectors(p, x)
    assert not p.exists()


def test_writer_names_the_range_of_an_integer_format(tmp_path):
    with pytest.raises(VectorFileError, match=r"do not fit int32 \(range .*2\.2e\+10"):
        write_vectors(tmp_path / "x.ivecs", np.full((2, 3), 2.2e10))


def test_as_float32_checks_after_the_cast():
    from annrepro.errors import InputError
    from annrepro.validate import as_float32

    x = _x()
    np.testing.assert_array_equal(as_float32(x), x.astype(np.float32))
    x[5, 3] = -4e38
    with pytest.raises(InputError, match="base: row 5 contains -4e\\+38, beyond the float32"):
        as_float32(x, "base")
    with pytest.raises(InputError, match="complex"):
        as_float32(np.ones((2, 2), np.complex64))


def test_ground_truth_refuses_float64_overflow():
    from annrepro.groundtruth import GroundTruthError, knn_exact

    xq, xb = _x(3, 4), _x(20, 4)
    xq[1, 2] = 1e39
    with pytest.raises(GroundTruthError, match="query row 1 contains NaN or inf .*float32"):
        knn_exact(xq, xb, 2)
