"""`ccst.index` and `ccst index` / `ccst search`: the paper's index (Sec. 4.2), a graph built on
CCST-compressed vectors and searched at full dimension, as public API and CLI.

The public builders must return the index of the private ones the table producers use
(`ccst._indexes.build_*`), graph for graph; the CLI round trip must give the ids of the API;
bad input is one line and exit code 2.
"""

import faiss
import numpy as np
import pytest
from annrepro.errors import InputError
from annrepro.metrics import one_recall_at
from annrepro.testing import SyntheticDataset
from annrepro.vecio import read_vectors, write_vectors
from ccst import CCST, build_index, read_index, search_index, write_index
from ccst._indexes import (
    NNDescentParams,
    build_hnsw_flat,
    build_hnsw_flat_built_on,
    build_hnsw_sq8_built_on,
    build_nsg_flat_built_on,
    hnsw_graph,
    nsg_graph,
)
from ccst.cli import main
from ccst.index import build_on_compressed, parse_kind

pytestmark = pytest.mark.usefixtures("warm_torch_optim")

TINY = dict(compression_factor=4, depths=(1,), heads=2, epochs=2, batch_size=32, progress=False)


@pytest.fixture(scope="module")
def ds():
    return SyntheticDataset(d=16, nb=300, nq=20, nt=200, seed=0)


@pytest.fixture(scope="module")
def model(ds):
    return CCST(**TINY).fit(ds.xt)


@pytest.fixture(scope="module")
def files(ds, model, tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    paths = {n: root / f"{n}.fvecs" for n in ("xb", "xq", "xt")}
    for n, p in paths.items():
        write_vectors(p, getattr(ds, n))
    paths["gt"] = root / "gt.ivecs"
    write_vectors(paths["gt"], ds.gt(10).astype(np.int32))
    paths["model"] = root / "m.pt"
    model.save(paths["model"])
    return paths


def _same_hnsw(a, b) -> bool:
    (ea, la, va, na), (eb, lb, vb, nb) = hnsw_graph(a), hnsw_graph(b)
    return ea == eb and la == lb and np.array_equal(va, vb) and np.array_equal(na, nb)


def test_parse_kind():
    assert str(parse_kind("HNSW32")) == "HNSW32,Flat" == str(parse_kind("HNSW32,Flat"))
    assert parse_kind("HNSW16,SQ8").storage == "SQ8"
    assert parse_kind("NSG24").family == "NSG"
    assert parse_kind("IVF8,PQ4") is None  # a factory string: compressed search only
    for bad in ("HNSW1", "NSG32,SQ8"):
        with pytest.raises(InputError, match="index kind"):
            parse_kind(bad)


def test_hnsw_built_on_equals_the_private_path(ds, model):
    index = build_index(model, ds.xb, "HNSW8", ef_construction=40)
    ref = build_hnsw_flat_built_on(model.transform(ds.xb), ds.xb, 8, 40)
    assert isinstance(index, faiss.IndexHNSWFlat) and index.d == ds.d
    assert _same_hnsw(index, ref)
    # the graph is not the one built on the full vectors: the test would see a rebuilt graph
    assert not _same_hnsw(index, build_hnsw_flat(ds.xb, 8, 40))
    D, I = search_index(index, ds.xq, 5, ef_search=32)
    ref.hnsw.efSearch = 32
    np.testing.assert_array_equal(I, ref.search(ds.xq, 5)[1])
    # full-dimensional distances, from the stored full vectors
    full = ((ds.xq[:, None, :] - ds.xb[I]) ** 2).sum(-1)
    np.testing.assert_allclose(D, full, rtol=1e-4, atol=1e-3)
    assert one_recall_at(I, ds.gt(5), 5) >= 0.5  # 0.85 here; chance is 5 / 300


def test_sq8_and_nsg_built_on_equal_the_private_path(ds, model):
    xg, xtg = model.transform(ds.xb), model.transform(ds.xt)
    sq8 = build_index(model, ds.xb, "HNSW8,SQ8", xt=ds.xt)
    ref = build_hnsw_sq8_built_on(xtg, xg, ds.xt, ds.xb, 8, 40)
    assert isinstance(sq8, faiss.IndexHNSWSQ) and _same_hnsw(sq8, ref)
    np.testing.assert_array_equal(search_index(sq8, ds.xq, 5)[1], ref.search(ds.xq, 5)[1])
    knn = NNDescentParams(L=64 + 50, iter=10, S=10, R=100)  # faiss IndexNSG's own defaults
    nsg = build_index(model, ds.xb, "NSG12", nsg_GK=64)
    ref = build_nsg_flat_built_on(xg, ds.xb, R=12, L=44, C=112, GK=64, nndescent=knn)
    (ea, ga), (eb, gb) = nsg_graph(nsg), nsg_graph(ref)
    assert isinstance(nsg, faiss.IndexNSGFlat) and nsg.d == ds.d
    assert ea == eb and np.array_equal(ga, gb)
    brute = build_index(model, ds.xb, "NSG12", nsg_GK=16, nsg_knn="brute")
    ref = build_nsg_flat_built_on(xg, ds.xb, R=12, L=44, C=112, GK=16, nndescent=None)
    assert np.array_equal(nsg_graph(brute)[1], nsg_graph(ref)[1])


def test_compressed_search_and_factory_kinds(ds, model):
    index = build_index(model, ds.xb, "HNSW8", search_at="compressed")
    assert index.d == model.d_out
    assert _same_hnsw(index, build_hnsw_flat(model.transform(ds.xb), 8, 40))
    _, I = search_index(index, ds.xq, 5, model=model)
    np.testing.assert_array_equal(I, index.search(model.transform(ds.xq), 5)[1])
    with pytest.raises(InputError, match="needs the model"):
        search_index(index, ds.xq, 5)
    pq = build_index(model, ds.xb, "IVF4,PQ2x4", search_at="compressed", xt=ds.xt)
    assert pq.ntotal == ds.nb and pq.d == model.d_out
    assert search_index(pq, ds.xq, 3, model=model, nprobe=4)[1].shape == (ds.nq, 3)
    with pytest.raises(InputError, match="must be a graph"):
        build_index(model, ds.xb, "IVF4,PQ2")


def test_bad_api_input(ds, model):
    with pytest.raises(InputError, match="base dimension 8 differs from model dimension 16"):
        build_index(model, ds.xb[:, :8], "HNSW8")
    with pytest.raises(InputError, match="search_at"):
        build_index(model, ds.xb, "HNSW8", search_at="half")
    with pytest.raises(InputError, match="same number of rows"):
        build_on_compressed(model.transform(ds.xb[:10]), ds.xb, "HNSW8")
    with pytest.raises(InputError, match="faiss refused it.*NNDescent"):
        build_index(model, ds.xb[:50], "NSG8")  # NN-descent needs more vectors
    with pytest.raises(InputError, match="not a search parameter"):
        search_index(build_index(model, ds.xb, "HNSW8"), ds.xq, 3, nprobe=2)


def test_write_and_read_index(ds, model, tmp_path):
    index = build_index(model, ds.xb, "HNSW8")
    path = write_index(index, tmp_path / "idx.faiss")
    assert [p.name for p in tmp_path.iterdir()] == ["idx.faiss"]  # no temporary left
    again = read_index(path)
    assert _same_hnsw(again, index)
    np.testing.assert_array_equal(again.search(ds.xq, 5)[1], index.search(ds.xq, 5)[1])
    (tmp_path / "junk.faiss").write_bytes(b"not an index at all")
    (tmp_path / "empty.faiss").write_bytes(b"")
    (tmp_path / "cut.faiss").write_bytes(path.read_bytes()[:100])
    for name, problem in [
        ("missing.faiss", "no such file"),
        ("junk.faiss", "not a readable faiss index"),
        ("empty.faiss", "empty file"),
        ("cut.faiss", "not a readable faiss index"),
    ]:
        with pytest.raises(InputError, match=problem) as e:
            read_index(tmp_path / name)
        assert str(e.value).startswith(str(tmp_path / name)) and "\n" not in str(e.value)


def _last_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ccst: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_cli_round_trip(ds, model, files, tmp_path, capsys):
    out, ids = tmp_path / "idx.faiss", tmp_path / "I.ivecs"
    argv = ["index", "--model", str(files["model"]), "--base", str(files["xb"])]
    assert main([*argv, "--kind", "HNSW8", "--out", str(out), "--threads", "1"]) == 0
    assert "HNSW8 over 300 vectors, graph built on the 4-d" in capsys.readouterr().out
    assert _same_hnsw(read_index(out), build_index(model, ds.xb, "HNSW8"))
    argv = ["search", "--index", str(out), "--queries", str(files["xq"]), "-k", "10"]
    assert main([*argv, "--out", str(ids), "--gt", str(files["gt"]), "--ef-search", "32"]) == 0
    printed = capsys.readouterr().out
    I = read_vectors(ids)
    _, ref = search_index(build_index(model, ds.xb, "HNSW8"), ds.xq, 10, ef_search=32)
    np.testing.assert_array_equal(I, ref)
    assert f"1-recall@1 {one_recall_at(ref, ds.gt(10), 1):.4f}" in printed
    assert "1-recall@10" in printed and "10-recall@10" in printed


def test_cli_compressed_index_needs_the_model(ds, model, files, tmp_path, capsys):
    out = tmp_path / "c.faiss"
    argv = ["index", "--model", str(files["model"]), "--base", str(files["xb"]), "--out", str(out)]
    assert main([*argv, "--kind", "HNSW8", "--search-at", "compressed"]) == 0
    search = ["search", "--index", str(out), "--queries", str(files["xq"]), "--gt"]
    search.append(str(files["gt"]))
    assert main(search) == 2
    assert "give --model" in _last_error(capsys)
    assert main([*search, "--model", str(files["model"])]) == 0
    assert "1-recall@1" in capsys.readouterr().out


def test_cli_bad_input_is_one_line(ds, files, tmp_path, capsys):
    out = str(tmp_path / "idx.faiss")
    model, xb = str(files["model"]), str(files["xb"])
    narrow = tmp_path / "narrow.fvecs"
    write_vectors(narrow, ds.xb[:, :8])
    narrow_q = tmp_path / "narrow_q.fvecs"
    write_vectors(narrow_q, ds.xq[:, :8])
    cases = [
        (["--model", model, "--base", str(narrow)], f"base ({narrow}) dimension 8 differs"),
        (["--model", model, "--base", str(tmp_path / "no.fvecs")], "no.fvecs"),
        (["--model", str(tmp_path / "no.pt"), "--base", xb], f"{tmp_path / 'no.pt'}: no such"),
        (["--model", model, "--base", xb, "--kind", "NSG8,SQ8"], "NSG stores"),
        (["--model", model, "--base", xb, "--kind", "IVF4,PQ2"], "must be a graph"),
        (["--model", model, "--base", xb, "--threads", "0"], "not a positive integer"),
    ]
    for args, expected in cases:
        assert main(["index", *args, "--out", out]) == 2, args
        assert expected in _last_error(capsys), args
    assert not (tmp_path / "idx.faiss").exists()
    assert main(["index", "--model", model, "--base", xb, "--out", str(tmp_path)]) == 2
    assert "is a directory" in _last_error(capsys)

    assert main(["index", "--model", model, "--base", xb, "--kind", "HNSW8", "--out", out]) == 0
    capsys.readouterr()
    q = ["search", "--index", out, "--queries"]
    cases = [
        ([*q, str(files["xq"])], "nothing to do"),
        ([*q, str(files["xq"]), "--out", str(tmp_path / "I.txt")], "ids are written as"),
        (["search", "--index", xb, "--queries", str(files["xq"]), "--gt", str(files["gt"])], xb),
        ([*q, str(narrow_q), "--gt", str(files["gt"])], f"{narrow_q}: queries of dimension 8"),
        ([*q, str(files["xq"]), "--gt", str(files["xb"])], "not integer ids"),
        ([*q, str(files["xq"]), "--gt", str(files["gt"]), "--search-l", "8"], "search parameter"),
    ]
    for args, expected in cases:
        assert main(args) == 2, args
        assert expected in _last_error(capsys), args
