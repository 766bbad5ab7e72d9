"""Vector IO round trips and every bad-input case of the foundation issue."""

import os

import numpy as np
import pytest
from annrepro.vecio import (
    VectorFileError,
    mmap_vectors,
    read_vectors,
    vectors_shape,
    write_vectors,
)

EXTS = [".fvecs", ".ivecs", ".bvecs", ".fbin", ".u8bin", ".ibin", ".npy"]


def _write_texmex_unchecked(path, x):
    """Write x as .fvecs bytes without write_vectors' checks (for files with bad values)."""
    x = np.asarray(x, dtype="<f4")
    rec = np.empty((x.shape[0], 1 + x.shape[1]), dtype="<f4")
    rec[:, 0] = np.int32(x.shape[1]).view("<f4")
    rec[:, 1:] = x
    path.write_bytes(rec.tobytes())


def _data(ext, n=7, d=5):
    rng = np.random.default_rng(0)
    if ext in (".fvecs", ".fbin", ".npy"):
        return rng.standard_normal((n, d)).astype(np.float32)
    if ext in (".ivecs", ".ibin"):
        return rng.integers(-1000, 1000, (n, d)).astype(np.int32)
    return rng.integers(0, 256, (n, d)).astype(np.uint8)


@pytest.mark.parametrize("ext", EXTS)
def test_round_trip_and_row_range(tmp_path, ext):
    x = _data(ext)
    p = tmp_path / f"x{ext}"
    write_vectors(p, x)
    assert vectors_shape(p) == x.shape
    np.testing.assert_array_equal(read_vectors(p), x)
    np.testing.assert_array_equal(read_vectors(p, 2, 5), x[2:5])
    np.testing.assert_array_equal(np.asarray(mmap_vectors(p, 1, 3)), x[1:3])


def test_bvecs_odd_dimension(tmp_path):
    x = _data(".bvecs", n=4, d=3)  # records not int32-aligned
    write_vectors(tmp_path / "x.bvecs", x)
    np.testing.assert_array_equal(read_vectors(tmp_path / "x.bvecs"), x)


def test_truncated_texmex(tmp_path):
    p = tmp_path / "x.fvecs"
    write_vectors(p, _data(".fvecs"))
    p.write_bytes(p.read_bytes()[:-3])
    with pytest.raises(VectorFileError, match=r"x\.fvecs.*truncated after row 5"):
        read_vectors(p)


def test_row_with_other_dimension(tmp_path):
    p = tmp_path / "x.fvecs"
    a, b = _data(".fvecs", n=3, d=4), _data(".fvecs", n=3, d=4)
    write_vectors(p, a)
    raw = bytearray(p.read_bytes())
    raw[2 * 20 : 2 * 20 + 4] = np.int32(3).tobytes()  # row 2 claims d=3
    p.write_bytes(bytes(raw))
    with pytest.raises(VectorFileError, match="row 2 .* declares dimension 3"):
        read_vectors(p)
    del b


def test_wrong_extension_for_content(tmp_path):
    # a float32 big-ann file renamed .fvecs: its header (n, d) is read as a dimension
    p = tmp_path / "x.fbin"
    write_vectors(p, _data(".fbin", n=7, d=5))
    q = tmp_path / "x.fvecs"
    q.write_bytes(p.read_bytes())
    with pytest.raises(VectorFileError, match="x.fvecs"):
        read_vectors(q)


def test_fvecs_read_as_bvecs(tmp_path):
    p = tmp_path / "x.fvecs"
    write_vectors(p, _data(".fvecs", n=6, d=4))
    q = tmp_path / "x.bvecs"
    q.write_bytes(p.read_bytes())
    with pytest.raises(VectorFileError, match="x.bvecs: row 1 .* declares dimension"):
        read_vectors(q)


def test_empty_file(tmp_path):
    p = tmp_path / "x.ivecs"
    p.write_bytes(b"")
    with pytest.raises(VectorFileError, match="empty file"):
        read_vectors(p)


def test_missing_file(tmp_path):
    with pytest.raises(VectorFileError, match="no such file"):
        read_vectors(tmp_path / "nope.fvecs")


def test_unknown_extension(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("1 2 3")
    with pytest.raises(VectorFileError, match="unknown extension"):
        read_vectors(p)


def test_bin_header_mismatch(tmp_path):
    p = tmp_path / "x.u8bin"
    write_vectors(p, _data(".u8bin"))
    p.write_bytes(p.read_bytes() + b"\0")
    with pytest.raises(VectorFileError, match="trailing bytes"):
        read_vectors(p)
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(VectorFileError, match="truncated"):
        read_vectors(p)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_named_by_row(tmp_path, bad):
    x = _data(".fvecs")
    x[4, 2] = bad
    p = tmp_path / "x.fvecs"
    with pytest.raises(VectorFileError, match="refusing to write: row 4 contains NaN or inf"):
        write_vectors(p, x)
    _write_texmex_unchecked(p, x)  # such files exist: the reader must catch them
    with pytest.raises(VectorFileError, match="row 4 contains NaN or inf"):
        read_vectors(p)
    # a row range not containing it reads fine, and offsets are reported in file rows
    read_vectors(p, 0, 4)
    with pytest.raises(VectorFileError, match="row 4 "):
        read_vectors(p, 3, 6)


def test_bad_row_range(tmp_path):
    p = tmp_path / "x.fvecs"
    write_vectors(p, _data(".fvecs"))
    with pytest.raises(VectorFileError, match="outside"):
        read_vectors(p, 3, 99)


def test_write_refuses_values_that_do_not_fit(tmp_path):
    with pytest.raises(VectorFileError, match="do not fit uint8"):
        write_vectors(tmp_path / "x.bvecs", np.full((2, 3), 300))


def test_write_is_atomic(tmp_path, monkeypatch):
    p = tmp_path / "x.fvecs"
    write_vectors(p, _data(".fvecs"))
    before = p.read_bytes()
    import annrepro.vecio as v

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(v, "_texmex_bytes", boom)
    with pytest.raises(RuntimeError):
        write_vectors(p, _data(".fvecs", n=2))
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["x.fvecs"]  # no temporary left behind


def test_atomic_files_follow_the_umask(tmp_path):
    from annrepro.atomic import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.csv", "a\n")
    finally:
        os.umask(old)
    assert (tmp_path / "r.csv").stat().st_mode & 0o777 == 0o644


def test_atomic_temporaries_are_unique(tmp_path):
    from annrepro.atomic import atomic_path

    with atomic_path(tmp_path / "m.pt") as a, atomic_path(tmp_path / "m.pt") as b:
        assert a != b
        a.write_text("a")
        b.write_text("b")
    assert (tmp_path / "m.pt").read_text() == "a"  # the outer block renamed last
    assert [f.name for f in tmp_path.iterdir()] == ["m.pt"]
