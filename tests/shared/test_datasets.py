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

[datasets.toy-pca]
scale = "small"
metric = "l2"
[datasets.toy-pca.derive]
from = "toy/base.fvecs"
base = [0, 10]
query = [10, 15]
pca = {{ dim = 3, fit_rows = [15, 50] }}
normalize = true

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


def test_derived_pca_is_fitted_on_other_rows_then_normalised(reg):
    """derive.pca: a centred PCA fitted on `fit_rows` only, then L2 normalisation (how Deep1B's
    descriptors were made); checked against an SVD of the fitting rows."""
    ds = get_dataset("toy-pca")
    assert (ds.nb, ds.nq, ds.d) == (10, 5, 3)
    np.testing.assert_allclose(np.linalg.norm(ds.xb, axis=1), 1, rtol=1e-5)
    fit = reg["xb"][15:50].astype(np.float64)
    mean = fit.mean(0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    want = (reg["xb"][:10] - mean) @ vt[:3].T
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs(ds.xb), np.abs(want), atol=1e-5)  # up to each axis' sign
    # distances, what search sees, do not depend on the signs
    g = lambda x: x @ x.T  # noqa: E731
    np.testing.assert_allclose(g(ds.xb), g(want), atol=1e-5)


_PCA = 'derive = {{ from = "a.fvecs", base = [0, 2], pca = {{ dim = {dim}, fit_rows = {rows} }} }}'


@pytest.mark.parametrize(
    "entry, problem",
    [
        (_PCA.format(dim=0, rows="[2, 9]"), "dim"),
        (_PCA.format(dim=2, rows="[9, 2]"), "fit_rows"),
        ('base = "a.fvecs"\nsubstitute = "nowhere"', "not a data set"),
        ('base = "a.fvecs"\nsubstitute = "x"', "must not have one"),
    ],
)
def test_registry_refuses_bad_pca_and_substitute(tmp_path, entry, problem):
    import tomllib

    from annrepro.registry import check_registry

    reg = tomllib.loads(f'[datasets.x]\nscale = "small"\n{entry}\n')
    reg.update(sources={}, files={})
    with pytest.raises(DatasetError, match=problem):
        check_registry(reg, tmp_path / "datasets.toml")


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


def test_every_small_row_can_be_had_on_a_fresh_machine():
    """Issue 13 §4: each data set a spec names at small or medium is fetchable from a package
    registry (every file has a `source`), or has a `substitute` that is: no row is skipped for
    want of ../shared/data."""
    from annrepro.registry import entry_file_refs, registry
    from annrepro.tables import find_specs

    reg = registry()

    def fetchable(name):
        e = reg["datasets"][name]
        return "synthetic" in e or all(
            "source" in reg["files"].get(r, {}) for r in entry_file_refs(e)
        )

    lacking = set()
    for spec in find_specs():
        for scale in {"small", "medium"} & set(spec.scales):
            for name in spec.datasets(scale).values():
                sub = reg["datasets"][name].get("substitute")
                if not (fetchable(name) or (sub and fetchable(sub))):
                    lacking.add(f"{spec.id} [{scale}]: {name}")
    assert not lacking


@pytest.mark.requires_data("siftsmall/siftsmall_learn.fvecs")
def test_deep1b_substitute_has_the_shape_and_norm_of_deep1b():
    sub = get_dataset("sift-pca96-3K")
    sub.check()
    assert (sub.nb, sub.nt, sub.nq, sub.d) == (2000, 945, 200, 96)
    np.testing.assert_allclose(np.linalg.norm(sub.xb, axis=1), 1, rtol=1e-5)
    assert get_dataset("deep1b-q96-3K").entry["substitute"] == "sift-pca96-3K"
