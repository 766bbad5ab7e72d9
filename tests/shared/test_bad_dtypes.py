"""Bad input, class ".npy dtypes": only real integer / float arrays are vectors. Complex would
lose its imaginary part in the float32 cast; bool, str, bytes, structured and datetime arrays
are not vectors at all."""

import numpy as np
import pytest
from annrepro.vecio import VectorFileError, mmap_vectors, read_vectors, vectors_shape, write_vectors

BAD = {
    "complex": np.array([[1 + 2j, 3 - 1j]] * 3, dtype=np.complex64),
    "bool": np.ones((3, 2), dtype=bool),
    "str": np.array([["a", "b"]] * 3),
    "bytes": np.array([[b"a", b"b"]] * 3),
    "structured": np.zeros((3, 2), dtype=[("a", "<f4"), ("b", "<i4")]),
    "datetime": np.zeros((3, 2), dtype="datetime64[s]"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_npy_reader_refuses_non_real_dtypes(tmp_path, kind):
    p = tmp_path / f"{kind}.npy"
    np.save(p, BAD[kind])
    pattern = rf"{kind}\.npy: dtype .* is {kind}.*expected a real integer or float array"
    for fn in (read_vectors, mmap_vectors, vectors_shape):
        with pytest.raises(VectorFileError, match=pattern):
            fn(p)


@pytest.mark.parametrize("kind", ["complex", "bool", "str"])
@pytest.mark.parametrize("ext", [".npy", ".fvecs"])
def test_writer_refuses_non_real_dtypes(tmp_path, kind, ext):
    with pytest.raises(VectorFileError, match=rf"refusing to write: dtype .* is {kind}"):
        write_vectors(tmp_path / f"x{ext}", BAD[kind])


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int8", "uint16", "int64"])
def test_real_dtypes_still_read(tmp_path, dtype):
    x = np.arange(12).reshape(4, 3).astype(dtype)
    np.save(tmp_path / "x.npy", x)
    got = read_vectors(tmp_path / "x.npy")
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got, x)
