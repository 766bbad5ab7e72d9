"""Bad input, class "format confusions": int32 content named .fvecs, float content named
.ivecs, a big-ann header with n and d swapped (same byte count). The layouts are identical,
so only the values can tell; `annrepro.validate.content_problem` / `transposed_problem` test a
sample of rows, and real data (every vector file of ../shared/data) passes."""

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from annrepro.vecio import VectorFileError, mmap_vectors, read_vectors, write_vectors


def _rename(tmp_path, x, src_ext, dst_ext):
    src = tmp_path / f"x{src_ext}"
    write_vectors(src, x)
    dst = tmp_path / f"y{dst_ext}"
    dst.write_bytes(src.read_bytes())
    return dst


def _ids(n=200, k=10, nb=10000):
    rng = np.random.default_rng(0)
    return np.stack([rng.choice(nb, k, replace=False) for _ in range(n)]).astype(np.int32)


def _floats(n=200, d=16):
    return np.random.default_rng(1).standard_normal((n, d)).astype(np.float32)


@pytest.mark.parametrize("exts", [(".ivecs", ".fvecs"), (".ibin", ".fbin")])
def test_int32_content_named_float(tmp_path, exts):
    p = _rename(tmp_path, _ids(), *exts)
    with pytest.raises(
        VectorFileError,
        match=rf"y\{exts[1]}: 100% of the sampled rows hold "
        r"denormal / tiny floats .*integers",
    ):
        read_vectors(p)
    with pytest.raises(VectorFileError, match="denormal"):
        mmap_vectors(p)
    assert read_vectors(p, sniff=False).shape == (200, 10)  # the escape hatch


@pytest.mark.parametrize("exts", [(".fvecs", ".ivecs"), (".fbin", ".ibin")])
def test_float_content_named_int32(tmp_path, exts):
    p = _rename(tmp_path, _floats(), *exts)
    with pytest.raises(
        VectorFileError,
        match=rf"y\{exts[1]}: 100% of the sampled rows hold "
        r"int32 values that are the bits of ordinary floats",
    ):
        read_vectors(p)


def _structured(n, d, seed=2):
    """Vectors whose dimensions have different means (as SIFT, GloVe, pixels have)."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 50, d) + rng.standard_normal((n, d)) * 5).astype(np.float32)


def test_swapped_bin_header(tmp_path):
    p = tmp_path / "x.fbin"
    write_vectors(p, _structured(500, 32))
    raw = bytearray(p.read_bytes())
    raw[:8] = np.array([32, 500], dtype="<u4").tobytes()  # (n, d) swapped, same byte count
    p.write_bytes(bytes(raw))
    with pytest.raises(
        VectorFileError,
        match=r"x\.fbin: header declares n=32, d=500, but the "
        r"values look like 500 vectors of dimension 32.*swapped",
    ):
        read_vectors(p)


@pytest.mark.parametrize(
    "ext, x",
    [
        (".fvecs", _floats()),
        (".fvecs", np.random.default_rng(3).integers(0, 256, (300, 128)).astype(np.float32)),
        (".fvecs", _floats() / np.linalg.norm(_floats(), axis=1, keepdims=True)),
        (".ivecs", _ids()),
        (".ivecs", np.random.default_rng(4).integers(-1000, 1000, (50, 5)).astype(np.int32)),
        (".ivecs", _ids(nb=2_000_000_000)),  # ids of a billion-scale base
        (".fbin", _structured(100, 128)),  # fewer vectors than dimensions, not swapped
        (".fbin", _structured(64, 128)),
        (".fbin", _floats(10, 300)),
    ],
)
def test_plausible_files_still_read(tmp_path, ext, x):
    write_vectors(tmp_path / f"x{ext}", x)
    np.testing.assert_array_equal(read_vectors(tmp_path / f"x{ext}"), x)


SHARED = Path(os.environ.get("ANNREPRO_DATA", "")) if os.environ.get("ANNREPRO_DATA") else None


def _manifest_vector_files():
    if SHARED is None or not (SHARED / "MANIFEST.tsv").is_file():
        return []
    with open(SHARED / "MANIFEST.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [r["file"] for r in rows if Path(r["file"]).suffix in (".fvecs", ".ivecs", ".bvecs")]


@pytest.mark.requires_data("MANIFEST.tsv")
def test_every_real_file_passes_the_content_tests(tmp_path):
    """Every vector file of ../shared/data passes, also rewritten as big-ann (.fbin / .ibin /
    .u8bin) and, where a file has more vectors than dimensions, its first d-1 rows (d > n)."""
    files = _manifest_vector_files()
    assert files
    bin_ext = {".fvecs": ".fbin", ".ivecs": ".ibin", ".bvecs": ".u8bin"}
    for rel in files:
        x = mmap_vectors(SHARED / rel)  # samples 256 rows over the whole file
        head = np.ascontiguousarray(x[: min(len(x), 4096)])
        for part in (head, head[: max(2, head.shape[1] - 1)]):
            p = tmp_path / ("t" + bin_ext[Path(rel).suffix])
            write_vectors(p, part)
            np.testing.assert_array_equal(read_vectors(p), part)
