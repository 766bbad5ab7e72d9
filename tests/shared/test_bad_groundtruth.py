"""Bad input, class "ground truth": ids out of range or negative, a distances file given as
ground truth, rows ordered farthest first, fewer rows than queries. One check
(`annrepro.validate.check_ground_truth`) serves Dataset.gt, `annrepro data check`, the paper
CLIs' --gt options and the metrics."""

import hashlib

import numpy as np
import pytest
from annrepro import datasets as dsmod
from annrepro.cli import main
from annrepro.datasets import DatasetError, get_dataset
from annrepro.errors import GroundTruthError
from annrepro.metrics import n_recall_at, one_recall_at, recall_at
from annrepro.validate import check_ground_truth, read_ground_truth
from annrepro.vecio import write_vectors

NB, NQ, D, K = 60, 5, 8, 10


def _xy():
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((NB, D)).astype(np.float32),
        rng.standard_normal((NQ, D)).astype(np.float32),
    )


def _exact(xb, xq, k=K):
    d2 = ((xq[:, None] - xb[None]) ** 2).sum(-1)
    return np.argsort(d2, axis=1)[:, :k], np.sort(d2, axis=1)[:, :k]


def test_check_ground_truth_accepts_exact_and_returns_int64():
    xb, xq = _xy()
    gt, _ = _exact(xb, xq)
    out = check_ground_truth(gt.astype(np.int32), NB, NQ, K, xb=xb, xq=xq, metric="l2")
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, gt)


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("out_of_range", r"g\.ivecs: query 2 lists id 60, outside \[0, 60\)"),
        ("negative", r"g\.ivecs: query 1 lists id -1: ids must be >= 0"),
        ("float", r"g\.ivecs: holds float32 values, not integer ids: a distances file"),
        ("farthest_first", r"g\.ivecs: query 0 is not ordered nearest first .*farthest first"),
        ("fewer_rows", r"g\.ivecs: 4 rows, fewer than the 5 queries"),
        ("few_columns", r"g\.ivecs: 10 neighbours per query, fewer than the k=20"),
        ("repeated", r"g\.ivecs: query 3 lists id .* twice"),
    ],
)
def test_check_ground_truth_refuses(case, pattern):
    xb, xq = _xy()
    gt, dist = _exact(xb, xq)
    k = K
    if case == "out_of_range":
        gt[2, 4] = NB
    elif case == "negative":
        gt[1, 9] = -1
    elif case == "float":
        gt = dist.astype(np.float32)
    elif case == "farthest_first":
        gt = gt[:, ::-1]
    elif case == "fewer_rows":
        gt = gt[:4]
    elif case == "few_columns":
        k = 20
    elif case == "repeated":
        gt[3, 5] = gt[3, 4]
    with pytest.raises(GroundTruthError, match=pattern):
        check_ground_truth(gt, NB, NQ, k, xb=xb, xq=xq, metric="l2", path="g.ivecs")


def test_inner_product_ordering():
    xb, xq = _xy()
    gt = np.argsort(-(xq @ xb.T), axis=1)[:, :K]
    check_ground_truth(gt, NB, NQ, K, xb=xb, xq=xq, metric="ip")
    with pytest.raises(GroundTruthError, match="not ordered nearest first \\(ip"):
        check_ground_truth(gt[:, ::-1], NB, NQ, K, xb=xb, xq=xq, metric="ip")


def test_read_ground_truth_refuses_a_distances_file(tmp_path):
    xb, xq = _xy()
    gt, dist = _exact(xb, xq)
    write_vectors(tmp_path / "gt.ivecs", gt)
    np.testing.assert_array_equal(read_ground_truth(tmp_path / "gt.ivecs", NB, NQ, K), gt)
    write_vectors(tmp_path / "dist.fvecs", dist)
    with pytest.raises(GroundTruthError, match=r"dist\.fvecs: holds float32 values, not integer"):
        read_ground_truth(tmp_path / "dist.fvecs", NB, NQ, K)


# ---------------------------------------------------------------------------- metrics
def test_metrics_refuse_a_float_ground_truth():
    xb, xq = _xy()
    gt, dist = _exact(xb, xq)
    with pytest.raises(GroundTruthError, match="float32 values, not integer ids"):
        one_recall_at(gt, dist.astype(np.float32), 1)


def test_metrics_refuse_distances_as_results():
    xb, xq = _xy()
    gt, dist = _exact(xb, xq)
    with pytest.raises(ValueError, match=r"results hold float32 values.*distances \(D\) passed"):
        recall_at(dist.astype(np.float32), gt, K)


def test_metrics_refuse_negative_or_out_of_range_ids():
    xb, xq = _xy()
    gt, _ = _exact(xb, xq)
    bad = gt.copy()
    bad[0, 0] = -3
    with pytest.raises(GroundTruthError, match="query 0 lists id -3"):
        n_recall_at(gt, bad, 10, 10)
    with pytest.raises(GroundTruthError, match=r"outside \[0, 50\)"):
        recall_at(gt, gt, K, nb=50)
    small = np.tile(np.arange(K), (NQ, 1))  # a ground truth within [0, 50)
    I = small.copy()
    I[1, 3] = 55
    with pytest.raises(ValueError, match=r"results: query 1 lists id 55, outside \[0, 50\)"):
        recall_at(I, small, K, nb=50)
    assert recall_at(gt, gt, K, nb=NB) == 1.0


# ----------------------------------------------------------------- Dataset and data check
@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A registry with one data set whose shipped ground truth each test rewrites."""
    xb, xq = _xy()
    data = tmp_path / "data"
    write_vectors(data / "toy" / "base.fvecs", xb)
    write_vectors(data / "toy" / "query.fvecs", xq)
    root = tmp_path / "paper_tables"
    root.mkdir()
    monkeypatch.setenv("ANNREPRO_TABLES", str(root))
    monkeypatch.setenv("ANNREPRO_DATA", str(data))
    monkeypatch.setattr(dsmod, "_cache", {})

    def with_gt(gt, name="gt.ivecs"):
        write_vectors(data / "toy" / name, gt)
        sha = hashlib.sha256((data / "toy" / name).read_bytes()).hexdigest()
        (root / "datasets.toml").write_text(
            f'[files."toy/{name}"]\nsha256 = "{sha}"\n\n'
            '[datasets.toy]\nscale = "small"\nmetric = "l2"\nbase = "toy/base.fvecs"\n'
            f'query = "toy/query.fvecs"\ngroundtruth = "toy/{name}"\n'
        )
        dsmod._cache.clear()

    return xb, xq, with_gt


def _data_check(capsys, name="toy"):
    rc = main(["data", "check", name])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def test_shipped_ground_truth_ordered_farthest_first(toy, capsys):
    xb, xq, with_gt = toy
    gt, _ = _exact(xb, xq)
    with_gt(gt)
    assert get_dataset("toy").gt(K).shape == (NQ, K)
    with_gt(gt[:, ::-1])
    with pytest.raises(DatasetError, match=r"toy/gt\.ivecs\): query 0 is not ordered nearest"):
        get_dataset("toy").gt(K)
    rc, err = _data_check(capsys)
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("annrepro: error: toy: shipped ground truth (toy/gt.ivecs)")


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("distances", r"toy/gt\.fvecs\): holds float32 values, not integer ids"),
        ("fewer_rows", r"toy/gt\.ivecs\): 3 rows, fewer than the 5 queries"),
        ("out_of_range", r"toy/gt\.ivecs\): query 0 lists id 10\d\d, outside \[0, 60\)"),
    ],
)
def test_data_check_refuses_bad_shipped_ground_truth(toy, capsys, case, pattern):
    xb, xq, with_gt = toy
    gt, dist = _exact(xb, xq)
    if case == "distances":
        with_gt(dist, "gt.fvecs")
    elif case == "fewer_rows":
        with_gt(gt[:3])
    else:
        with_gt(gt + 1000)
    rc, err = _data_check(capsys)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("annrepro: error: toy: shipped ground truth")
    import re

    assert re.search(pattern, err[0]), err[0]
