"""annrepro.distributed: sharded ground truth and transforms equal the single process, on a
LocalCluster of 2 worker processes; a killed worker, an interrupted job and bad shards."""

import os

import numpy as np
import pytest
from annrepro.distributed import (
    DistributedError,
    knn_sharded,
    merge_topk,
    read_shards,
    transform_sharded,
)
from annrepro.groundtruth import knn_exact
from annrepro.testing import LinearTransform
from annrepro.vecio import write_vectors

distributed = pytest.importorskip("distributed")
# distributed warns about its own health on a loaded machine (slow scratch directories, long
# garbage collections, a worker restarted by its nanny in the kill test): not the code under test
pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning:distributed"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning:distributed"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]


def _data(tmp_path, nb=3000, nq=40, d=16, ext=".fvecs", seed=0):
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((nb, d)).astype(np.float32)
    xq = rng.standard_normal((nq, d)).astype(np.float32)
    path = tmp_path / f"base{ext}"
    write_vectors(path, xb)
    return xb, xq, path


def _tie_canonical(D, I):
    """Order exactly tied distances by id (the sharded path's policy) to compare with knn_exact."""
    order = np.lexsort((I, D), axis=1)
    return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        env={"OMP_NUM_THREADS": "1"},
    )
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


def test_merge_keeps_the_k_best_and_ties_go_to_the_smaller_id():
    a = (np.array([[1.0, 2.0, 3.0]], np.float32), np.array([[7, 5, 9]]))
    b = (np.array([[2.0, 2.5, np.inf]], np.float32), np.array([[3, 4, -1]]))
    D, I = merge_topk(a, b, 3, "l2")
    assert I.tolist() == [[7, 3, 5]] and D.tolist() == [[1.0, 2.0, 2.0]]
    D, I = merge_topk(a, b, 2, "ip")
    assert I.tolist() == [[9, 4]]


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_in_process_shards_equal_knn_exact(tmp_path, metric):
    xb, xq, path = _data(tmp_path)
    D0, I0 = knn_exact(xq, xb, 10, metric)
    D, I = knn_sharded(xq, path, 10, metric, shard_rows=700)  # 5 shards, the last one short
    np.testing.assert_array_equal(I, I0)
    np.testing.assert_array_equal(D, D0)


def test_duplicates_across_shards_tie_by_id(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((50, 8)).astype(np.float32)
    xb = np.concatenate([base, base, base])  # every vector three times, in three shards
    write_vectors(tmp_path / "dup.fvecs", xb)
    xq = base[:5] + 0.01
    D, I = knn_sharded(xq, tmp_path / "dup.fvecs", 6, shard_rows=50)
    assert (I[:, :3] % 50 == I[:, :1] % 50).all()
    assert (np.diff(I[:, :3], axis=1) == 50).all()  # ids 0+j, 50+j, 100+j in that order
    D0, I0 = _tie_canonical(*knn_exact(xq, xb, 6))
    np.testing.assert_array_equal(I, I0)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_dask_ground_truth_equals_the_single_process(tmp_path, client, metric):
    xb, xq, path = _data(tmp_path, ext=".fbin")
    D0, I0 = knn_exact(xq, xb, 20, metric)
    D, I = knn_sharded(xq, path, 20, metric, client=client, shard_rows=500, timeout=120)
    np.testing.assert_array_equal(I, I0)
    np.testing.assert_array_equal(D, D0)
    # query blocks below faiss's BLAS threshold (20) take its SIMD kernels: compare like with like
    Db, Ib = knn_sharded(xq, path, 20, metric, client=client, shard_rows=500, query_rows=16)
    Dr, Ir = knn_sharded(xq, path, 20, metric, shard_rows=500, query_rows=16)
    np.testing.assert_array_equal(Ib, Ir)
    np.testing.assert_array_equal(Db, Dr)


def test_uint8_base_memory_mapped(tmp_path, client):
    rng = np.random.default_rng(2)
    xb = rng.integers(0, 256, (2000, 12)).astype(np.uint8)
    write_vectors(tmp_path / "b.u8bin", xb)
    xq = rng.integers(0, 256, (30, 12)).astype(np.float32)
    D, I = knn_sharded(xq, tmp_path / "b.u8bin", 5, client=client, shard_rows=333)
    D0, I0 = _tie_canonical(*knn_exact(xq, xb, 5))
    np.testing.assert_array_equal(I, I0)


def test_bad_shard_input_is_one_clear_error_naming_the_file(tmp_path, client):
    xb, xq, path = _data(tmp_path)
    with pytest.raises(Exception, match="dimension"):
        knn_sharded(xq[:, :8], path, 5, client=client)
    raw = bytearray(path.read_bytes())
    np.frombuffer(raw, dtype=np.float32)[(4 + 16 * 4) * 2000 // 4 + 3] = np.nan  # row 2000
    path.write_bytes(bytes(raw))
    with pytest.raises(DistributedError, match=f"{path}: base row 2000 contains NaN"):
        knn_sharded(xq, path, 5, client=client, shard_rows=1000)
    path.write_bytes(bytes(raw[:-10]))  # truncated
    with pytest.raises(Exception, match=str(path)):
        knn_sharded(xq, path, 5, client=client)


def test_transform_shards_equal_the_single_process_and_rerun_skips_done(tmp_path, client):
    xb, _, path = _data(tmp_path, nb=2500)
    fn = LinearTransform(16, 4)
    out = tmp_path / "out"
    m = transform_sharded(
        fn, path, out, "proj-0", client=client, shard_rows=600, batch_rows=128, timeout=120
    )
    assert m["complete"] and len(m["shards"]) == 5
    np.testing.assert_allclose(read_shards(out), fn(xb), rtol=1e-6)
    # interrupted job: two shards lost; a rerun recomputes exactly those
    for s in m["shards"][1:3]:
        os.unlink(out / s["file"])
    mtimes = {s["file"]: (out / s["file"]).stat().st_mtime_ns for s in m["shards"][::3]}
    m2 = transform_sharded(fn, path, out, "proj-0", shard_rows=600)
    assert [s["sha256"] for s in m2["shards"]] == [s["sha256"] for s in m["shards"]]
    assert {f: (out / f).stat().st_mtime_ns for f in mtimes} == mtimes  # not rewritten
    with pytest.raises(DistributedError, match="another model"):
        transform_sharded(fn, path, out, "proj-1", shard_rows=600)


def test_a_killed_worker_changes_nothing(tmp_path):
    """One of two workers killed mid-job: Dask reschedules its task; identical shards, none
    half-written (each appears only through an atomic rename)."""
    import signal
    import threading
    import time

    from distributed import Client, LocalCluster

    xb, _, path = _data(tmp_path, nb=4000)
    fn = LinearTransform(16, 4, delay_s=0.5)
    ref = transform_sharded(LinearTransform(16, 4), path, tmp_path / "ref", "p", shard_rows=500)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as c,
    ):
        victim = next(iter(c.run(os.getpid).values()))

        killed = []

        def kill_one():
            time.sleep(0.8)  # shards take 0.5 s each: the victim is inside its second one
            os.kill(victim, signal.SIGKILL)
            killed.append(time.monotonic())

        threading.Thread(target=kill_one, daemon=True).start()
        m = transform_sharded(
            fn, path, tmp_path / "out", "p", client=c, shard_rows=500, timeout=120
        )
        assert killed, "the worker was not killed before the job finished"
        assert victim not in c.run(os.getpid).values()  # it really died (the nanny restarted it)
    assert [s["sha256"] for s in m["shards"]] == [s["sha256"] for s in ref["shards"]]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json"] + [
        f"shard-{i:06d}.npy" for i in range(8)
    ]  # no temporary left behind


def test_registry_ground_truth_goes_through_the_configured_engine(tmp_path, monkeypatch, client):
    """ANNREPRO_ENGINE=dask: a file-backed data set's exact top-k is computed by knn_sharded on
    the cluster (the full-scale path), with the same ids as one process."""
    import annrepro.distributed as dist
    from annrepro import datasets as dsmod
    from annrepro.groundtruth import knn_exact
    from annrepro.vecio import write_vectors

    rng = np.random.default_rng(5)
    xb = rng.standard_normal((3000, 8)).astype(np.float32)
    xq = rng.standard_normal((7, 8)).astype(np.float32)
    write_vectors(tmp_path / "data" / "b.fbin", xb)
    write_vectors(tmp_path / "data" / "q.fbin", xq)
    root = tmp_path / "paper_tables"
    root.mkdir()
    (root / "datasets.toml").write_text(
        '[datasets.big]\nscale = "full"\nmetric = "l2"\nbase = "b.fbin"\nquery = "q.fbin"\n'
    )
    monkeypatch.setenv("ANNREPRO_TABLES", str(root))
    monkeypatch.setenv("ANNREPRO_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(dsmod, "_cache", {})
    monkeypatch.setenv("ANNREPRO_ENGINE", "dask")
    monkeypatch.setattr(dist, "_ENGINE_CLIENT", client)
    calls = []
    real = dist.knn_sharded
    monkeypatch.setattr(dist, "knn_sharded", lambda *a, **k: calls.append(1) or real(*a, **k))
    gt = dsmod.get_dataset("big").gt(10)
    assert calls == [1]
    assert np.array_equal(gt, knn_exact(xq, xb, 10, "l2")[1])
    monkeypatch.setenv("ANNREPRO_ENGINE", "spark")
    monkeypatch.setattr(dist, "_ENGINE_CLIENT", None)
    with pytest.raises(dist.DistributedError, match="ANNREPRO_ENGINE='spark'"):
        dist.engine_client()
