"""`kdindex encode`: new documents encoded with a saved KDindex, appended to it (`--out`) or
written as codes (`--codes-out`), in this process or as resumable shards on a 2-worker Dask
LocalCluster (`--out-dir`, `--engine dask`); bad input is one line and exit 2."""

import numpy as np
import pytest
from annrepro.vecio import read_vectors, write_vectors
from kdindex.api import KDIndex
from kdindex.cli import main
from kdindex.train import TrainConfig

D = 8


def _index(tmp_path, kind: str):
    """A small trained index file (the API), its base and new documents in a vector file."""
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((300, D)).astype(np.float32)
    xt = rng.standard_normal((60, D)).astype(np.float32)
    labels = np.argsort(((xt[:, None] - xb[None]) ** 2).sum(-1), 1)[:, :10]
    cfg = TrainConfig(epochs=1, init_max_rounds=1, progress=False)
    warm = {"aq_beam": 3} if kind == "AQ" else {}
    index = KDIndex(kind, "l2", 2, 16, 10, cfg, n_warm=300, **warm)
    index.fit(xb, xt, labels=labels)
    path = tmp_path / f"kd-{kind}.npz"
    index.save(path)
    xnew = rng.standard_normal((250, D)).astype(np.float32)
    write_vectors(tmp_path / "new.fvecs", xnew)
    return path, tmp_path / "new.fvecs", xnew


@pytest.fixture(scope="module", params=["PQ", "OPQ", "AQ"])
def saved(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"enc-{request.param}")
    return (tmp, *_index(tmp, request.param))


def _one_error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if "thread(s)" not in ln]
    assert len(err) == 1, err
    assert err[0].startswith("kdindex: error: "), err[0]
    assert "Traceback" not in err[0]
    return err[0]


def test_append_and_codes_equal_the_api(saved, tmp_path, capsys):
    _, path, new, xnew = saved
    before = path.read_bytes()
    out, codes_out = tmp_path / "kd2.npz", tmp_path / "codes.npy"
    argv = ["encode", "--index", str(path), "--xb", str(new), "--out", str(out)]
    assert main(argv + ["--codes-out", str(codes_out)]) == 0
    assert "appended as ids 300..549" in capsys.readouterr().out
    assert path.read_bytes() == before  # --out is another file: the saved index is untouched
    want = KDIndex.load(path)
    want.add(xnew)
    got = KDIndex.load(out)
    assert got.codes.shape == (550, 2) and got.codes.dtype == np.int32
    np.testing.assert_array_equal(got.codes, want.codes)
    np.testing.assert_array_equal(got.norms2, want.norms2)
    codes = np.load(codes_out)
    assert codes.dtype == np.int32
    np.testing.assert_array_equal(codes, KDIndex.load(path).encode(xnew))
    # the new documents are found under the ids that continue the old ones
    D0, I0 = want.search(xnew[:20], 5)
    D1, I1 = got.search(xnew[:20], 5)
    np.testing.assert_array_equal(I1, I0)
    assert (I1 >= 300).any()


def test_codes_only_and_ivecs(saved, tmp_path, capsys):
    _, path, new, xnew = saved
    out = tmp_path / "codes.ivecs"
    assert main(["encode", "--index", str(path), "--xb", str(new), "--codes-out", str(out)]) == 0
    assert "appended" not in capsys.readouterr().out
    np.testing.assert_array_equal(read_vectors(out), KDIndex.load(path).encode(xnew))


def test_in_place_append(saved, tmp_path, capsys):
    _, path, new, xnew = saved
    own = tmp_path / "own.npz"
    own.write_bytes(path.read_bytes())
    argv = ["encode", "--index", str(own), "--xb", str(new), "--out", str(own)]
    assert main(argv) == 0 and main(argv) == 0  # twice: 300 + 250 + 250 documents
    capsys.readouterr()
    codes = KDIndex.load(own).codes
    enc = KDIndex.load(path).encode(xnew)
    assert len(codes) == 800
    np.testing.assert_array_equal(codes[300:550], enc)
    np.testing.assert_array_equal(codes[550:], enc)


def _stats(folder):
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_shards_in_process_resume(saved, tmp_path, capsys):
    """--out-dir without Dask: the same shards in this process; a rerun recomputes nothing, a
    lost shard alone is recomputed."""
    _, path, new, xnew = saved
    shards = tmp_path / "shards"
    argv = ["encode", "--index", str(path), "--xb", str(new), "--out-dir", str(shards),
            "--shard-rows", "64", "--codes-out", str(tmp_path / "c.npy")]  # fmt: skip
    assert main(argv) == 0
    assert "4 shards in" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), KDIndex.load(path).encode(xnew))
    first = _stats(shards)
    assert main(argv) == 0
    again = _stats(shards)
    assert {k: v for k, v in again.items() if k != "manifest.json"} == {
        k: v for k, v in first.items() if k != "manifest.json"
    }
    (shards / "shard-000002.npy").unlink()
    assert main(argv) == 0
    third = _stats(shards)
    changed = {k for k in first if k != "manifest.json" and third[k] != first[k]}
    assert changed == {"shard-000002.npy"}
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), KDIndex.load(path).encode(xnew))


# ----------------------------------------------------------------------------------- Dask
def _dask(test):
    """distributed warns about its own health on a loaded machine (slow scratch directories,
    long garbage collections): not the code under test (as tests/shared/test_distributed.py)."""
    for w in ("UserWarning:distributed", "RuntimeWarning:distributed", "ResourceWarning"):
        test = pytest.mark.filterwarnings(f"ignore::{w}")(test)
    return test


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    c = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        memory_limit="1GiB",
        dashboard_address=":0",
        env={"OMP_NUM_THREADS": "1"},
    )
    yield c
    c.close()


@_dask
def test_dask_shards_equal_the_single_process(cluster, tmp_path, capsys):
    """2 worker processes: the same codes, and the same appended index, as this process."""
    path, new, xnew = _index(tmp_path, "AQ")
    shards = tmp_path / "shards"
    argv = ["encode", "--index", str(path), "--xb", str(new), "--engine", "dask",
            "--scheduler", cluster.scheduler_address, "--out-dir", str(shards),
            "--shard-rows", "64", "--codes-out", str(tmp_path / "c.npy"),
            "--out", str(tmp_path / "kd2.npz")]  # fmt: skip
    assert main(argv) == 0
    assert "4 shards in" in capsys.readouterr().out
    single = tmp_path / "single.npz"
    assert main(["encode", "--index", str(path), "--xb", str(new), "--out", str(single)]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), KDIndex.load(path).encode(xnew))
    got, want = KDIndex.load(tmp_path / "kd2.npz"), KDIndex.load(single)
    np.testing.assert_array_equal(got.codes, want.codes)
    first = _stats(shards)
    assert main(argv) == 0  # a rerun on the cluster: every shard is there, none recomputed
    again = _stats(shards)
    assert {k: v for k, v in again.items() if k != "manifest.json"} == {
        k: v for k, v in first.items() if k != "manifest.json"
    }


@_dask
def test_dask_on_a_local_cluster_of_its_own(tmp_path, capsys):
    """--workers / --max-memory: the CLI starts its own LocalCluster (annrepro.distributed)."""
    pytest.importorskip("distributed")
    path, new, xnew = _index(tmp_path, "PQ")
    argv = ["encode", "--index", str(path), "--xb", str(new), "--engine", "dask",
            "--workers", "2", "--max-memory", "2GB", "--out-dir", str(tmp_path / "shards"),
            "--shard-rows", "100", "--codes-out", str(tmp_path / "c.npy")]  # fmt: skip
    assert main(argv) == 0
    assert "3 shards in" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), KDIndex.load(path).encode(xnew))


def test_bad_input_is_one_line(tmp_path, capsys):
    path, new, _ = _index(tmp_path, "PQ")
    out = tmp_path / "kd2.npz"
    base = ["encode", "--index", str(path), "--xb", str(new)]
    write_vectors(tmp_path / "x16.fvecs", np.ones((5, 16), np.float32))
    for extra in ([], ["--out-dir", str(tmp_path / "s16")]):  # loaded or memory-mapped
        argv = ["encode", "--index", str(path), "--xb", str(tmp_path / "x16.fvecs")]
        assert main(argv + ["--out", str(out), *extra]) == 2
        line = _one_error_line(capsys)
        assert "x16.fvecs" in line and "dimension 16" in line and f"dimension {D}" in line
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:100])
    for name in ("missing.npz", "cut.npz"):
        argv = ["encode", "--index", str(tmp_path / name), "--xb", str(new), "--out", str(out)]
        assert main(argv) == 2
        assert name in _one_error_line(capsys)
    assert main(base) == 2
    assert "nothing to write" in _one_error_line(capsys)
    assert main([*base, "--out", str(out), "--engine", "dask"]) == 2
    assert "--out-dir" in _one_error_line(capsys)
    assert main([*base, "--out", str(out), "--workers", "2"]) == 2
    assert "--workers: for --engine dask only" in _one_error_line(capsys)
    assert main([*base, "--codes-out", str(tmp_path / "c.bin")]) == 2
    assert "c.bin" in _one_error_line(capsys)
    (tmp_path / "file").write_text("")
    assert main([*base, "--out-dir", str(tmp_path / "file")]) == 2
    assert "file" in _one_error_line(capsys)
    assert main([*base, "--out", str(tmp_path)]) == 2
    assert "is a folder" in _one_error_line(capsys)
    np.save(tmp_path / "nan.npy", np.full((5, D), np.nan, np.float32))
    for extra in ([], ["--out-dir", str(tmp_path / "snan")]):
        argv = ["encode", "--index", str(path), "--xb", str(tmp_path / "nan.npy")]
        assert main([*argv, "--codes-out", str(tmp_path / "c.npy"), *extra]) == 2
        assert "nan.npy" in _one_error_line(capsys)
    assert not out.exists() and not (tmp_path / "c.npy").exists()
    # shards of another index in --out-dir are refused, not mixed
    shards = tmp_path / "shards"
    assert main([*base, "--out-dir", str(shards)]) == 0
    (tmp_path / "other").mkdir()
    other, *_ = _index(tmp_path / "other", "AQ")
    capsys.readouterr()
    argv = ["encode", "--index", str(other), "--xb", str(new), "--out-dir", str(shards)]
    assert main(argv) == 2
    assert "another model" in _one_error_line(capsys)
