"""annrepro.vecio.VectorWriter: a vector file written block by block is the file write_vectors
writes for the whole array, and an interrupted or short write leaves no file at the target."""

import numpy as np
import pytest
from annrepro.vecio import VectorFileError, VectorWriter, read_vectors, write_vectors

EXTS = [".fvecs", ".ivecs", ".bvecs", ".fbin", ".u8bin", ".i8bin", ".ibin", ".npy"]


def _data(ext, n=23, d=5):
    rng = np.random.default_rng(0)
    if ext in (".fvecs", ".fbin", ".npy"):
        return rng.standard_normal((n, d)).astype(np.float32)
    if ext in (".ivecs", ".ibin"):
        return rng.integers(-1000, 1000, (n, d)).astype(np.int32)
    if ext == ".i8bin":
        return rng.integers(-128, 128, (n, d)).astype(np.int8)
    return rng.integers(0, 256, (n, d)).astype(np.uint8)


def _write_blocks(path, x, rows):
    with VectorWriter(path, *x.shape) as w:
        for i0 in range(0, len(x), rows):
            w.write(x[i0 : i0 + rows])
    return w


@pytest.mark.parametrize("ext", EXTS)
def test_blocks_give_the_bytes_of_write_vectors(tmp_path, ext):
    x = _data(ext)
    write_vectors(tmp_path / f"whole{ext}", x)
    w = _write_blocks(tmp_path / f"blocks{ext}", x, rows=4)
    assert w.blocks == 6 and w.rows == 23
    assert (tmp_path / f"blocks{ext}").read_bytes() == (tmp_path / f"whole{ext}").read_bytes()
    np.testing.assert_array_equal(read_vectors(tmp_path / f"blocks{ext}"), x)


def test_bvecs_odd_dimension_and_npy_dtypes(tmp_path):
    x = _data(".bvecs", n=9, d=3)  # texmex records not int32-aligned
    _write_blocks(tmp_path / "x.bvecs", x, rows=2)
    np.testing.assert_array_equal(read_vectors(tmp_path / "x.bvecs"), x)
    for dtype in (np.float64, np.int64, np.uint8):
        y = _data(".fvecs", n=9, d=3).astype(dtype)
        _write_blocks(tmp_path / "y.npy", y, rows=4)
        z = np.load(tmp_path / "y.npy")
        assert z.dtype == dtype
        np.testing.assert_array_equal(z, y)
    with VectorWriter(tmp_path / "z.npy", 2, 3, dtype=np.float32) as w:
        w.write(np.ones((2, 3), dtype=np.float64))  # cast to the declared dtype
    assert np.load(tmp_path / "z.npy").dtype == np.float32


@pytest.mark.parametrize("ext", [".fvecs", ".npy"])
def test_an_interrupted_write_leaves_nothing(tmp_path, ext):
    x = _data(ext)
    out = tmp_path / f"out{ext}"
    with pytest.raises(KeyboardInterrupt), VectorWriter(out, *x.shape) as w:
        w.write(x[:10])
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    out = tmp_path / "out.fbin"
    old = _data(".fbin", n=3)
    write_vectors(out, old)
    x = _data(".fbin")
    x[13, 2] = np.nan
    with pytest.raises(VectorFileError, match=r"out\.fbin: refusing to write: row 13 contains NaN"):
        _write_blocks(out, x, rows=5)  # the bad row is row 3 of the third block
    np.testing.assert_array_equal(read_vectors(out), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fbin"]


def test_a_short_or_long_write_is_refused(tmp_path):
    x = _data(".fvecs")
    with pytest.raises(VectorFileError, match="22 rows written, 23 declared: file not written"):
        with VectorWriter(tmp_path / "x.fvecs", 23, 5) as w:
            w.write(x[:22])
    with pytest.raises(VectorFileError, match="a block of 4 rows after 20 exceeds the 23"):
        with VectorWriter(tmp_path / "x.fvecs", 23, 5) as w:
            w.write(x[:20])
            w.write(x[:4])
    assert list(tmp_path.iterdir()) == []


def test_bad_blocks_and_settings_are_one_line(tmp_path):
    with pytest.raises(VectorFileError, match=r"expected \(m, 5\)"):
        with VectorWriter(tmp_path / "x.fvecs", 3, 5) as w:
            w.write(np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(VectorFileError, match=r"values do not fit uint8 .*not all integers"):
        with VectorWriter(tmp_path / "x.u8bin", 3, 5) as w:
            w.write(np.full((3, 5), 0.5, dtype=np.float32))
    with pytest.raises(VectorFileError, match=r"\.ivecs files hold int32, not float32"):
        VectorWriter(tmp_path / "x.ivecs", 3, 5, dtype=np.float32)
    with pytest.raises(VectorFileError, match="unknown extension"):
        VectorWriter(tmp_path / "x.txt", 3, 5)
    with pytest.raises(VectorFileError, match="shape"):
        VectorWriter(tmp_path / "x.fvecs", 0, 5)
    assert list(tmp_path.iterdir()) == []
