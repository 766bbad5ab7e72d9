"""`annrepro groundtruth`: exact k-NN of the user's files, single process or on Dask."""

import numpy as np
import pytest
from annrepro.cli import main
from annrepro.groundtruth import knn_exact
from annrepro.vecio import read_vectors, write_vectors


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((1500, 12)).astype(np.float32)
    xq = rng.standard_normal((25, 12)).astype(np.float32)
    write_vectors(tmp_path / "xb.fvecs", xb)
    write_vectors(tmp_path / "xq.fvecs", xq)
    return tmp_path, xb, xq


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_single_process_writes_the_exact_ids(files, metric, capsys):
    tmp, xb, xq = files
    argv = ["groundtruth", "--base", str(tmp / "xb.fvecs"), "--queries", str(tmp / "xq.fvecs")]
    argv += ["-k", "10", "--metric", metric, "--out", str(tmp / "gt.ivecs"), "--no-progress"]
    assert main(argv + ["--distances", str(tmp / "d.fvecs")]) == 0
    D0, I0 = knn_exact(xq, xb, 10, metric)
    np.testing.assert_array_equal(read_vectors(tmp / "gt.ivecs"), I0)
    np.testing.assert_array_equal(read_vectors(tmp / "d.fvecs"), D0)
    assert "exact top-10" in capsys.readouterr().out


def test_dask_engine_writes_the_same_file(files):
    pytest.importorskip("distributed")
    tmp, xb, xq = files
    argv = ["groundtruth", "--base", str(tmp / "xb.fvecs"), "--queries", str(tmp / "xq.fvecs")]
    argv += ["-k", "7", "--no-progress"]
    assert main(argv + ["--out", str(tmp / "a.ivecs")]) == 0
    dask = ["--engine", "dask", "--workers", "2", "--shard-rows", "400"]
    assert main(argv + ["--out", str(tmp / "b.ivecs")] + dask) == 0
    assert (tmp / "a.ivecs").read_bytes() == (tmp / "b.ivecs").read_bytes()


def test_bad_input_is_one_line_before_any_work(files, capsys):
    tmp, xb, xq = files
    write_vectors(tmp / "xq8.fvecs", xq[:, :8])
    base = ["groundtruth", "--base", str(tmp / "xb.fvecs"), "-k", "5", "--no-progress"]
    assert main(base + ["--queries", str(tmp / "xq8.fvecs"), "--out", str(tmp / "g.ivecs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dimension" in err[0] and "annrepro: error:" in err[0]
    (tmp / "file").write_text("x")
    out = str(tmp / "file" / "g.ivecs")
    assert main(base + ["--queries", str(tmp / "xq.fvecs"), "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, not a folder" in err[0]
