"""benchmarks/kdindex_distillation.py: bad arguments give one line, not a traceback."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location(
        "kdindex_distillation", ROOT / "benchmarks/kdindex_distillation.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_unknown_dataset_is_one_line():
    with pytest.raises(SystemExit, match=r"^--dataset no-such-set: unknown data set"):
        _script().main(["--dataset", "no-such-set", "--quick"])


def test_dimension_the_pq_baseline_cannot_split_is_one_line(monkeypatch):
    import annrepro.datasets

    x = np.random.default_rng(0).standard_normal((60, 12)).astype(np.float32)
    fake = SimpleNamespace(name="fake-12d", metric="l2", xb=x, xq=x[:5], xt=x)
    monkeypatch.setattr(annrepro.datasets, "get_dataset", lambda name: fake)
    with pytest.raises(SystemExit, match=r"^fake-12d: dimension 12 is not a multiple of B = 8"):
        _script().main(["--dataset", "fake-12d", "--quick", "--n-extra", "0"])


@pytest.mark.parametrize(
    ("kind", "d", "name"),
    [("PQ", 16, "PQ8np"), ("OPQ", 12, "OPQ8_16,PQ8np"), ("AQ", 12, "RQ8x4")],
)
def test_baseline_row_is_the_ladders_faiss_student(kind, d, name):
    """The first row's faiss index per --kind (AQ: RQ, which takes a dimension PQ8 cannot split),
    trained and searched here on a toy set: it finds each base vector as its own neighbour."""
    import faiss

    faiss.omp_set_num_threads(1)
    x = np.random.default_rng(0).standard_normal((400, d)).astype(np.float32)
    index, got = _script().baseline_index(kind, d, 8, 16, "l2")
    assert got == name
    index.train(x)
    index.add(x)
    _, ids = index.search(x[:50], 1)
    assert (ids[:, 0] == np.arange(50)).mean() > 0.5


def test_baseline_row_refuses_what_it_cannot_build():
    with pytest.raises(ValueError, match=r"^dimension 100 is not a multiple of B = 8: .*--kind AQ"):
        _script().baseline_index("PQ", 100, 8, 256, "ip")
    with pytest.raises(ValueError, match=r"^unknown kind 'LSQ'"):
        _script().baseline_index("LSQ", 16, 8, 256, "l2")


def test_unknown_variant_is_one_line():
    with pytest.raises(SystemExit, match=r"^--variants: unknown \['no such row'\]"):
        _script().main(["--variants", "no such row"])


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_collapse_stats_tell_spread_from_collapsed_codebooks(metric):
    """A trained PQ on centred data spreads the queries' best codewords; one codeword pushed far
    along the queries' common direction (inner product) or onto their mean (L2) wins for all."""
    from kdindex.quantizers import train_quantizer

    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 8)).astype(np.float32)
    q = train_quantizer("PQ", x, B=2, W=16, seed=0)
    index = SimpleNamespace(quantizer=q, codes=q.encode(x))
    spread = _script().collapse_stats(index, x[:200], x, metric)
    assert spread["top codeword share"] < 0.5 and spread["recon error"] < 0.5
    from kdindex.quantizers import CodebookQuantizer

    cb = q.codebooks.copy()
    xs = x[:200] + (3.0 if metric == "ip" else 0.0)  # queries off the centre: a common direction
    if metric == "ip":  # codeword 0 of each book far along it
        cb[:, 0] = 100.0
    else:  # codeword 0 on the data's mean, every other one far away
        cb[:, 1:] += 50.0
        cb[:, 0] = xs.mean(0).reshape(2, 4)
    q2 = CodebookQuantizer(q.kind, q.d_in, q.d_out, cb, q.rotation)
    collapsed = _script().collapse_stats(
        SimpleNamespace(quantizer=q2, codes=index.codes), xs, x, metric
    )
    assert collapsed["top codeword share"] == 1.0
