"""KDindex behind annrepro.methods, and KDIndex.encode / add for new documents."""

import numpy as np
import pytest
from annrepro.errors import SettingError
from annrepro.methods import load, make
from annrepro.testing import SyntheticDataset
from kdindex.api import KDIndex
from kdindex.teacher import HNSWTeacher
from kdindex.train import TrainConfig

DS = SyntheticDataset(d=16, nb=400, nq=10, nt=200, seed=4)
TINY = dict(epochs=1, init_max_rounds=1, batch_size=64, progress=False)


def _index(balance=False):
    teacher = HNSWTeacher(16, "l2")
    teacher.build(DS.xb)
    cfg = TrainConfig(**TINY, balance_index=balance)
    return KDIndex("PQ", "l2", B=2, W=16, K=10, config=cfg, n_warm=400).fit(
        DS.xb, DS.xt, teacher=teacher
    )


def test_encode_is_the_nearest_codes_the_index_stores():
    index = _index(balance=False)
    assert np.array_equal(index.encode(DS.xb), index.codes)


def test_add_appends_encoded_documents():
    index = _index(balance=True)
    nb = len(index.codes)
    extra = DS.xq  # any new vectors
    index.add(extra)
    assert len(index.codes) == nb + len(extra)
    assert np.array_equal(index.codes[nb:], index.encode(extra))
    D, I = index.search(extra, 5)
    assert (I >= 0).all() and I.max() >= nb  # the new documents are found
    Dn, _ = index.search(extra, 5, method="numpy")  # the oracle, up to ties between equal codes
    assert np.allclose(D, Dn, rtol=1e-5, atol=1e-5)


def test_method_trains_on_the_base_and_keeps_its_codes(tmp_path):
    m = make("kdindex,PQ2x16", **TINY, n_warm=400).fit(DS.xt, DS.xb)
    trained = m._trained_codes
    m.add(DS.xb)  # the base it was trained on: the index's (balanced) codes, as the paper's
    assert np.array_equal(m.index.codes, trained)
    m.add(DS.xq)  # new documents: encoded
    assert np.array_equal(m.index.codes[len(DS.xb) :], m.index.encode(DS.xq))
    assert m.bytes_per_vector == 1.0 and m.ntotal == DS.nb + DS.nq
    back = load(m.save(tmp_path / "kd.npz"))
    assert np.array_equal(back.search(DS.xq, 5)[1], m.search(DS.xq, 5)[1])


def test_method_without_a_base_splits_the_learn_set():
    m = make("kdindex,AQ2x16", **TINY, n_warm=400, n_queries=50).fit(DS.xt)
    m.add(DS.xb)
    assert m.search(DS.xq, 5)[1].shape == (DS.nq, 5)


def test_errors():
    with pytest.raises(SettingError, match="kdindex,<PQ|OPQ|AQ>"):
        make("kdindex,XQ8x256")
    with pytest.raises(SettingError, match="power of two"):
        make("kdindex,PQ8x100")
    with pytest.raises(SettingError, match="unknown setting.*'epoch'"):
        make("kdindex,PQ8x256", epoch=1)
