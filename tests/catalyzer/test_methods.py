"""The catalyzer behind annrepro.methods: the same codes and results as the Catalyzer API."""

import numpy as np
import pytest
from annrepro.errors import SettingError
from annrepro.methods import load, make
from annrepro.testing import SyntheticDataset

DS = SyntheticDataset(d=16, nb=300, nq=10, nt=400, seed=1)
TINY = dict(hidden=16, preset="released", epochs=1, batch_size=32, k_neg=10)


@pytest.fixture(scope="module")
def lattice():
    m = make("catalyzer8,zn_3", **TINY).fit(DS.xt)
    m.add(DS.xb[:100])
    m.add(DS.xb[100:])
    return m


def test_lattice_method_is_the_api(lattice):
    cat = lattice.cat
    codes = cat.encode(DS.xb, "zn_3")
    D, I = cat.search(DS.xq, codes, 5, "zn_3")
    D2, I2 = lattice.search(DS.xq, 5)
    assert np.array_equal(I, I2) and np.allclose(D, D2)
    assert lattice.bytes_per_vector == 8 and lattice.ntotal == DS.nb
    # n_val adapts to the learn set (our choice: nt // 5 held out), the estimator's 10000 would fail
    assert cat.config.n_val == 80 and cat.config.n_val_queries == 8


def test_save_load_same_results(lattice, tmp_path):
    back = load(lattice.save(tmp_path / "cat.npz"))
    assert np.array_equal(back.search(DS.xq, 5)[1], lattice.search(DS.xq, 5)[1])
    assert back.describe()["plugin"] == "catalyzer"


@pytest.mark.parametrize("spec,nbytes", [("catalyzer16,sign", 2), ("catalyzer8,PQ2x4", 1)])
def test_sign_and_faiss_stage(spec, nbytes, tmp_path):
    m = make(spec, **TINY).fit(DS.xt)
    m.add(DS.xb)
    D, I = m.search(DS.xq, 300 + 5)  # more than stored: padded with -1 like faiss
    assert (I[:, :300] >= 0).all() and (I[:, 300:] == -1).all()
    assert m.bytes_per_vector == nbytes
    back = load(m.save(tmp_path / "m.npz"))
    assert np.array_equal(back.search(DS.xq, 5)[1], m.search(DS.xq, 5)[1])


def test_errors_name_the_problem():
    with pytest.raises(SettingError, match="catalyzer<d_out>"):
        make("catalyzer,zn_79")
    with pytest.raises(SettingError, match="'l2' only"):
        make("catalyzer24,zn_79", "ip")
    with pytest.raises(SettingError, match="unknown setting.*'epoch'"):
        make("catalyzer24,zn_79", epoch=3)
    with pytest.raises(ValueError, match="64 bits"):  # refused before any training
        make("catalyzer24,zn_100", **TINY).fit(DS.xt)


def test_pca_lattice_method_is_table1s_baseline(tmp_path):
    """'pca<d>,zn_<r2>' gives exactly the PCA + Lattice search of Table 1
    (catalyzer.baselines.pca_lattice_search), saves and loads, and refuses what it cannot do."""
    from annrepro.methods import plugin_name
    from catalyzer.baselines import pca_lattice_search

    assert plugin_name("pca8,zn_3") == "pca" and plugin_name("PCA8,Flat") == "faiss"
    m = make("pca8,zn_3").fit(DS.xt)
    m.add(DS.xb[:100])
    m.add(DS.xb[100:])
    _, I = m.search(DS.xq, 5)
    ref = pca_lattice_search(DS.xt, DS.xb, DS.xq, 5, d_out=8, r2=3)
    assert np.array_equal(I, ref.I) and m.bytes_per_vector == 8 and m.ntotal == DS.nb
    back = load(m.save(tmp_path / "pca.npz"))
    assert np.array_equal(back.search(DS.xq, 5)[1], I)
    with pytest.raises(SettingError, match="pca<d_out>,zn_<r2>"):
        make("pca8,Flat")
    with pytest.raises(SettingError, match="'l2' only"):
        make("pca8,zn_3", "ip")
    with pytest.raises(SettingError, match="no settings|unknown setting"):
        make("pca8,zn_3", epochs=2)
    with pytest.raises(SettingError, match="cannot output 32 dims from 16"):
        make("pca32,zn_3").fit(DS.xt)
