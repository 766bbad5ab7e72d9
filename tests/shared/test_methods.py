"""annrepro.methods: the one interface, on faiss factory strings (the paper plugins have their
own tests in tests/<paper>/test_methods.py)."""

import numpy as np
import pytest
from annrepro.errors import InputError, SettingError
from annrepro.methods import load, make, parse_overrides, plugin_name, plugins, split_spec
from annrepro.metrics import one_recall_at
from annrepro.testing import SyntheticDataset

DS = SyntheticDataset(d=16, nb=400, nq=20, nt=600, seed=3)


def test_split_spec_and_plugin_names():
    assert split_spec("catalyzer24,OPQ8_64,PQ8") == ("catalyzer24", "OPQ8_64,PQ8")
    assert split_spec(" PQ8 ") == ("PQ8", "")
    assert plugin_name("OPQ8_64,PQ8") == "faiss"
    with pytest.raises(SettingError, match="non-empty"):
        split_spec("")


def test_installed_plugins_are_the_three_papers():
    assert {"catalyzer", "csst", "kdindex"} <= set(plugins())
    assert plugin_name("catalyzer24,zn_79") == "catalyzer"
    assert plugin_name("csst4x,PQ16") == "csst"
    assert plugin_name("kdindex,AQ8x256") == "kdindex"


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_faiss_method_is_faiss_itself(metric):
    import faiss

    m = make("PQ4x4", metric).fit(DS.xt)
    m.add(DS.xb)
    D, I = m.search(DS.xq, 5)
    ref = faiss.index_factory(16, "PQ4x4", faiss.METRIC_L2 if metric == "l2" else 0)
    ref.train(DS.xt)
    ref.add(DS.xb)
    D2, I2 = ref.search(DS.xq, 5)
    assert np.array_equal(I, I2) and np.allclose(D, D2)
    assert I.dtype == np.int64 and D.dtype == np.float32
    assert m.bytes_per_vector == 2.0  # 4 codes of 4 bits


def test_add_appends_without_retraining():
    one = make("PQ4x4").fit(DS.xt)
    one.add(DS.xb)
    two = make("PQ4x4").fit(DS.xt)
    two.add(DS.xb[:150])
    two.add(DS.xb[150:])
    assert two.ntotal == one.ntotal == DS.nb
    assert np.array_equal(one.search(DS.xq, 5)[1], two.search(DS.xq, 5)[1])


def test_graph_index_code_bytes_and_describe():
    m = make("HNSW8,SQ8").fit(DS.xt)
    m.add(DS.xb)
    info = m.describe()
    assert info["bytes_per_vector"] == 16  # SQ8: one byte per dimension
    assert info["index_bytes_per_vector"] > 16  # the graph's links are not in the code size
    assert info["plugin"] == "faiss" and info["ntotal"] == DS.nb
    assert one_recall_at(m.search(DS.xq, 10)[1], DS.gt(10), 10) > 0.9


def test_save_load_roundtrip(tmp_path):
    m = make("OPQ4_16,PQ4").fit(DS.xt)
    m.add(DS.xb)
    path = m.save(tmp_path / "m.npz")
    back = load(path)
    assert back.ntotal == DS.nb and back.d == 16 and back.spec == "OPQ4_16,PQ4"
    assert np.array_equal(back.search(DS.xq, 5)[1], m.search(DS.xq, 5)[1])


def test_bad_files_are_one_line(tmp_path):
    with pytest.raises(InputError, match="no such method file"):
        load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(InputError, match="not a readable annrepro method file"):
        load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, meta=np.array('{"format_version": 99}'))
    with pytest.raises(InputError, match="format 1"):
        load(other)
    m = make("PQ4x4").fit(DS.xt)
    m.add(DS.xb)
    m.save(tmp_path / "m.npz")
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes((tmp_path / "m.npz").read_bytes()[:200])
    with pytest.raises(InputError, match="trunc.npz"):
        load(trunc)


@pytest.mark.parametrize("spec", ["PQ4x4np", "OPQ4_16,PQ4x4np", "RQ2x4", "ITQ8,LSH", "RR8,LSH"])
def test_a_seed_draws_faiss_training(spec):
    """seed=s draws k-means, ITQ's and OPQ's rotations and random rotations from s: the same
    seed, the same index; another seed, another draw (faiss's own fixed seeds gave one draw)."""

    def distances(**kw):
        m = make(spec, **kw).fit(DS.xt)
        m.add(DS.xb)
        return m.search(DS.xq, 5)[0]

    assert np.array_equal(distances(seed=1), distances(seed=1))
    assert not np.array_equal(distances(seed=1), distances(seed=2))


def test_what_faiss_draws():
    from annrepro.evaluate import seed_matters
    from annrepro.methods import FaissStage

    assert FaissStage.draws("OPQ4_16,PQ4np", "l2", 16) == ["OPQ rotation", "PQ k-means"]
    assert FaissStage.draws("IVF8,PQ4", "l2", 16) == ["IVF k-means", "PQ k-means"]
    assert FaissStage.draws("ITQ8,LSH", "l2", 16) == ["ITQ rotation"]
    assert FaissStage.draws("HNSW16,PQ4", "l2", 16) == ["PQ k-means"]  # the storage's
    for spec in ("PCA4,Flat", "Flat", "HNSW16", "HNSW16,SQ8", "SQ8", "LSH"):
        assert FaissStage.draws(spec, "l2", 16) == [], spec
    assert seed_matters("PQ4np", "l2", 16) and not seed_matters("PCA4,Flat", "l2", 16)
    assert seed_matters("csst4x,Flat", "l2", 16)  # a network


def test_bad_use_is_one_clear_error():
    with pytest.raises(SettingError, match="takes no settings but seed"):
        make("PQ8", epochs=3)
    with pytest.raises(SettingError, match="faiss factory string 'NOPE12'"):
        make("NOPE12").fit(DS.xt)
    with pytest.raises(SettingError, match="cannot train"):
        make("ITQ64,LSH").fit(DS.xt)  # ITQ to 64 dims of 16-d data
    m = make("PQ4x4")
    with pytest.raises(InputError, match="not fitted"):
        m.add(DS.xb)
    m.fit(DS.xt)
    with pytest.raises(InputError, match="add\\(\\) base vectors first"):
        m.search(DS.xq, 5)
    with pytest.raises(InputError, match="dimension 8, the method was fitted on d=16"):
        m.add(DS.xb[:, :8])
    bad = DS.xb.copy()
    bad[7, 3] = np.nan
    with pytest.raises(InputError, match="row 7"):
        m.add(bad)


def test_parse_overrides():
    assert parse_overrides(["catalyzer.epochs=8", "catalyzer.preset=released", "csst.lr=1e-3"]) == {
        "catalyzer": {"epochs": 8, "preset": "released"},
        "csst": {"lr": 1e-3},
    }
    with pytest.raises(SettingError, match="PLUGIN.KEY=VALUE"):
        parse_overrides(["epochs=8"])
