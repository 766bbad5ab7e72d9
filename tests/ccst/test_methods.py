"""CCST behind annrepro.methods: compress with the network, then faiss on the compressed vectors."""

import numpy as np
import pytest
from annrepro.errors import SettingError
from annrepro.methods import load, make
from annrepro.testing import SyntheticDataset

DS = SyntheticDataset(d=16, nb=300, nq=10, nt=200, seed=2)
TINY = dict(depths=(1,), heads=2, epochs=1, batch_size=16)


def test_csst_pq_is_faiss_on_the_compressed_vectors(tmp_path):
    import faiss

    m = make("csst4x,PQ2x4", **TINY).fit(DS.xt)
    m.add(DS.xb[:120])
    m.add(DS.xb[120:])
    D, I = m.search(DS.xq, 5)
    ref = faiss.index_factory(4, "PQ2x4")
    ref.train(m.model.transform(DS.xt))
    ref.add(m.model.transform(DS.xb))
    assert np.array_equal(I, ref.search(m.model.transform(DS.xq), 5)[1])
    assert m.bytes_per_vector == 1 and m.ntotal == DS.nb
    back = load(m.save(tmp_path / "m.npz"))
    assert np.array_equal(back.search(DS.xq, 5)[1], I)


def test_csst_hnsw_bytes_are_the_compressed_floats():
    m = make("csst2x,HNSW8", **TINY).fit(DS.xt)
    m.add(DS.xb)
    assert m.bytes_per_vector == 4 * 8


def test_errors():
    with pytest.raises(SettingError, match="csst<factor>x"):
        make("csst,PQ8")
    with pytest.raises(SettingError, match="unknown setting.*'epoch'"):
        make("csst4x,PQ8", epoch=1)
    with pytest.raises(SettingError, match="does not divide the dimension 16"):
        make("csst3x,Flat", **TINY).fit(DS.xt)


def test_srp_is_the_projection_then_faiss(tmp_path):
    from ccst.srp import srp_matrix

    m = make("srp4x,Flat", seed=3).fit(DS.xt)
    m.add(DS.xb)
    w = srp_matrix(16, 4, 3)
    import faiss

    _, I = faiss.knn(DS.xq @ w, DS.xb @ w, 5)
    assert np.array_equal(m.search(DS.xq, 5)[1], I)
    assert m.bytes_per_vector == 16  # 4 floats
    back = load(m.save(tmp_path / "srp.npz"))
    assert np.array_equal(back.search(DS.xq, 5)[1], I)
    with pytest.raises(SettingError, match="unknown setting"):
        make("srp4x,Flat", epochs=3)


def test_run_method_times_the_index_build_without_the_compression():
    """index_add_s is add's time less CSST's compression of the base (Method.transform_s), as
    the paper times its graphs; a faiss index has no transform: both are the same."""
    from annrepro.evaluate import run_method

    gt = DS.gt(10)
    res = run_method("csst4x,HNSW8", "l2", DS.xt, DS.xb, DS.xq, gt, 10, 0, {"csst": TINY})
    assert 0 < res["index_add_s"] < res["add_s"]
    flat = run_method("HNSW8", "l2", DS.xt, DS.xb, DS.xq, gt, 10)
    assert flat["index_add_s"] == flat["add_s"]
