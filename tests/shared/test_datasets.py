"""Data set registry: lookup, verification, derived splits, synthetic data, fetch, bad input."""

import hashlib
import io
import tarfile

import numpy as np
import pytest
from annrepro import datasets as dsmod
from annrepro.datasets import DatasetError, get_dataset
from annrepro.fetch import fetch_dataset
from annrepro.vecio import write_vectors


def _sha(b):
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def reg(tmp_path, monkeypatch):
    """A private registry with one file-backed, one derived and one fetchable data set."""
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((50, 8)).astype(np.float32)
    xq = rng.standard_normal((5, 8)).astype(np.float32)
    write_vectors(data / "toy" / "base.fvecs", xb)
    write_vectors(data / "toy" / "query.fvecs", xq)
    d2 = (xq[:, None] - xb[None]) ** 2
    write_vectors(
        data / "toy" / "gt.ivecs", np.argsort(d2.sum(-1), axis=1)[:, :10].astype(np.int32)
    )
    files = {}
    for rel in ("toy/base.fvecs", "toy/query.fvecs", "toy/gt.ivecs"):
        b = (data / rel).read_bytes()
        files[rel] = {"sha256": _sha(b), "bytes": len(b)}

    # a source archive holding the base file, served from a file:// URL
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(data / "toy" / "base.fvecs", arcname="pkg/remote_base.fvecs")
    archive = tmp_path / "src.tar.gz"
    archive.write_bytes(buf.getvalue())

    toml = f"""
[sources.arch]
kind = "test"
url = "{archive.as_uri()}"
filename = "src.tar.gz"
sha256 = "{_sha(buf.getvalue())}"
prefix = "pkg/"

[files."toy/base.fvecs"]
sha256 = "{files["toy/base.fvecs"]["sha256"]}"
bytes = {files["toy/base.fvecs"]["bytes"]}
[files."toy/query.fvecs"]
sha256 = "{files["toy/query.fvecs"]["sha256"]}"
bytes = {files["toy/query.fvecs"]["bytes"]}
[files."toy/gt.ivecs"]
sha256 = "{files["toy/gt.ivecs"]["sha256"]}"
bytes = {files["toy/gt.ivecs"]["bytes"]}
[files."remote/base.fvecs"]
sha256 = "{files["toy/base.fvecs"]["sha256"]}"
bytes = {files["toy/base.fvecs"]["bytes"]}
source = "arch"
member = "remote_base.fvecs"

[datasets.toy]
scale = "small"
metric = "l2"
base = "toy/base.fvecs"
query = "toy/query.fvecs"
groundtruth = "toy/gt.ivecs"

[datasets.toy-split]
scale = "small"
metric = "l2"
derive = {{ from = "toy/base.fvecs", seed = 3, query = 5, learn = 20, base = 25, normalize = true }}

[datasets.remote]
scale = "small"
metric = "l2"
base = "remote/base.fvecs"
query = "toy/query.fvecs"

[datasets.synth]
scale = "tiny"
metric = "l2"
synthetic = {{ d = 4, nb = 30, nt = 20, nq = 6, clusters = 3, seed = 9 }}
"""
    root = tmp_path / "paper_tables"
    root.mkdir()
    (root / "datasets.toml").write_text(toml)
    monkeypatch.setenv("ANNREPRO_TABLES", str(root))
    monkeypatch.setenv("ANNREPRO_DATA", str(data))
    monkeypatch.setenv("ANNREPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(dsmod, "_cache", {})
    return {"data": data, "xb": xb, "xq": xq, "tmp": tmp_path}


def test_file_backed_dataset_and_shipped_gt(reg):
    ds = get_dataset("toy")
    np.testing.assert_array_equal(ds.xb, reg["xb"])
    assert ds.xt is ds.xb and not ds.has_learn  # no learn set: learn = base, and we say so
    assert ds.gt(10).shape == (5, 10)
    assert ds.info()["learn_is_base"]


def test_wrong_shipped_groundtruth_is_caught(reg):
    gt = reg["data"] / "toy" / "gt.ivecs"
    # ten wrong ids per query, listed nearest first (so only the exact comparison catches them)
    ids = np.arange(40, 50)
    d2 = ((reg["xq"][:, None] - reg["xb"][ids][None]) ** 2).sum(-1)
    bad = ids[np.argsort(d2, axis=1)].astype(np.int32)
    write_vectors(gt, bad)
    b = gt.read_bytes()
    import tomllib

    path = reg["tmp"] / "paper_tables" / "datasets.toml"
    text = path.read_text()
    old = tomllib.loads(text)["files"]["toy/gt.ivecs"]["sha256"]
    path.write_text(text.replace(old, _sha(b)))
    with pytest.raises(DatasetError, match=r"ground truth \(toy/gt.ivecs\): query 0 does not list"):
        get_dataset("toy").gt(10)


def test_k_larger_than_base(reg):
    with pytest.raises(DatasetError, match="k=51 exceeds the base size 50"):
        get_dataset("toy").gt(51)


def test_corrupted_file_fails_checksum(reg):
    p = reg["data"] / "toy" / "query.fvecs"
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="query.fvecs: sha256 .* does not match"):
        _ = get_dataset("toy").xq


def test_truncated_file_fails_size(reg):
    p = reg["data"] / "toy" / "query.fvecs"
    p.write_bytes(p.read_bytes()[:-4])
    with pytest.raises(DatasetError, match="bytes, the registry says"):
        _ = get_dataset("toy").xq


def test_missing_dataset_says_how_to_get_it(reg):
    with pytest.raises(DatasetError, match="'remote' is not available.*annrepro data fetch remote"):
        _ = get_dataset("remote").xb


def test_unknown_dataset(reg):
    with pytest.raises(DatasetError, match="unknown data set 'nope'; registered: "):
        get_dataset("nope")


def test_fetch_verifies_and_places_file(reg):
    (path,) = [p for p in fetch_dataset("remote") if "remote" in str(p)]
    assert path.read_bytes() == (reg["data"] / "toy" / "base.fvecs").read_bytes()
    np.testing.assert_array_equal(get_dataset("remote").xb, reg["xb"])


def test_corrupted_download_writes_nothing(reg):
    archive = reg["tmp"] / "src.tar.gz"
    archive.write_bytes(archive.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DatasetError, match="sha256 .* expected .* nothing was written"):
        fetch_dataset("remote")
    assert not (reg["tmp"] / "cache" / "data" / "remote").exists()


def test_auto_fetch(reg, monkeypatch):
    monkeypatch.setenv("ANNREPRO_AUTO_FETCH", "1")
    np.testing.assert_array_equal(get_dataset("remote").xb, reg["xb"])


def test_derived_split_is_deterministic_and_disjoint(reg):
    ds = get_dataset("toy-split")
    assert (ds.nq, ds.nt, ds.nb) == (5, 20, 25)
    np.testing.assert_allclose(np.linalg.norm(ds.xb, axis=1), 1, rtol=1e-5)
    rows = np.concatenate([ds.xq, ds.xt, ds.xb])
    assert len(np.unique(rows, axis=0)) == 50  # a permutation: nothing shared between splits
    dsmod._cache.clear()
    np.testing.assert_array_equal(get_dataset("toy-split").xq, ds.xq)


def test_synthetic_is_seeded(reg):
    a = get_dataset("synth")
    dsmod._cache.clear()
    b = get_dataset("synth")
    np.testing.assert_array_equal(a.xb, b.xb)
    assert a.xb.shape == (30, 4) and a.xt.shape == (20, 4) and a.xq.shape == (6, 4)


@pytest.mark.requires_data(
    "siftsmall/siftsmall_base.fvecs",
    "bigann10k/bigann10k_base.bvecs",
    "fmnistsmall/fmnistsmall_base.fvecs",
    "deep1b_queries_partial/deep1B_queries_first3145.fvecs",
)
def test_real_small_stand_ins_check_out():
    """The registry's checksums match ../shared/data, and shipped ground truths are right."""
    for name in ("sift-10K", "bigann-10K", "fmnist-1K", "deep1b-q96-3K"):
        ds = get_dataset(name)
        assert ds.gt(100).shape == (ds.nq, 100)
