"""Full-scale path of the ccst tables: with ANNREPRO_ENGINE=dask the base file is compressed on
the cluster (resumable shards), with the same vectors as one process."""

import numpy as np
import pytest
from annrepro.testing import FakeContext
from annrepro.vecio import write_vectors

pytest.importorskip("distributed")


def test_compress_of_a_file_backed_base_runs_on_the_engine(tmp_path, monkeypatch):
    import annrepro.distributed as dist
    from annrepro import datasets as dsmod
    from ccst.api import CCST
    from ccst.experiments import compress
    from distributed import Client, LocalCluster

    rng = np.random.default_rng(1)
    xb = rng.standard_normal((700, 16)).astype(np.float32)
    write_vectors(tmp_path / "data" / "b.fbin", xb)
    write_vectors(tmp_path / "data" / "q.fbin", xb[:5])
    root = tmp_path / "paper_tables"
    root.mkdir()
    (root / "datasets.toml").write_text(
        '[datasets.big]\nscale = "full"\nmetric = "l2"\nbase = "b.fbin"\nquery = "q.fbin"\n'
    )
    monkeypatch.setenv("ANNREPRO_TABLES", str(root))
    monkeypatch.setenv("ANNREPRO_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ANNREPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(dsmod, "_cache", {})
    ds = dsmod.get_dataset("big")
    model = CCST(compression_factor=4, depths=(1,), heads=2, epochs=1, batch_size=64,
                 progress=False).fit(xb)  # fmt: skip
    ctx = FakeContext(None, out_dir=tmp_path / "out")
    single = compress(ctx, model, ds.xb, source=ds)  # ANNREPRO_ENGINE unset: one process
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None, env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    try:
        with Client(cluster) as client:
            monkeypatch.setenv("ANNREPRO_ENGINE", "dask")
            monkeypatch.setattr(dist, "_ENGINE_CLIENT", client)
            sharded = compress(ctx, model, ds.xb, source=ds)
    finally:
        cluster.close()
    assert np.allclose(np.asarray(sharded), single, atol=1e-5)
    assert any("on Dask" in n for n in ctx.notes)
