"""annrepro.crosspaper: one protocol for every method; learned methods over seeds, faiss once."""

import numpy as np
import pytest
from annrepro.crosspaper import crosspaper, settings_of
from annrepro.metrics import n_recall_at, one_recall_at
from annrepro.tables import find_specs
from annrepro.testing import FakeContext, SyntheticDataset


def test_settings_of_parses_json_values():
    assert settings_of(["epochs=2", "preset=\"released\"", "depths=[1]", "progress=false"]) == {
        "epochs": 2, "preset": "released", "depths": [1], "progress": False,
    }  # fmt: skip


def test_rows_are_the_methods_own_search_scored_alike(tmp_path):
    import faiss

    ds = SyntheticDataset(d=16, nb=400, nq=30, nt=500, seed=7)
    spec = find_specs("annrepro.crosspaper")[0]
    ctx = FakeContext(
        spec, {"SIFT": ds}, out_dir=tmp_path, n_seeds=2, ntrain=500,
        methods=["PQ4x4np", "kdindex,PQ2x16"],
        kdindex=["epochs=1", "init_max_rounds=1", "n_warm=400", "progress=false"],
    )  # fmt: skip
    ctx.params["datasets"] = ["SIFT"]  # a parameter of the table, not FakeContext's data sets
    pq, kd = crosspaper(spec, ctx)
    one, ten = [], []
    for seed in ctx.seeds():  # faiss itself, its k-means drawn from the run's seed
        ref = faiss.index_factory(16, "PQ4x4np")
        faiss.downcast_index(ref).pq.cp.seed = seed
        ref.train(ds.xt)
        ref.add(ds.xb)
        I = ref.search(ds.xq, 100)[1]
        one.append(one_recall_at(I, ds.gt(100), 10))
        ten.append(n_recall_at(I, ds.gt(100), 10, 10))
    assert pq["1-recall@10"] == pytest.approx(np.mean(one), abs=1e-12)
    assert pq["10-recall@10"] == pytest.approx(np.mean(ten), abs=1e-12)
    assert np.mean(pq["1-recall@10:per_query"]) == pytest.approx(pq["1-recall@10"], abs=1e-12)
    assert "1-recall@10:std" in pq  # PQ's k-means draws: a run per seed, as the networks
    assert "1-recall@10:std" in kd and kd["bytes_per_vector"] == 1.0  # 2 seeds of KDindex
    assert any("best 1-recall@10" in n for n in ctx.notes)
    assert (tmp_path / "annrepro.crosspaper" / "SIFT_points.csv").is_file()
