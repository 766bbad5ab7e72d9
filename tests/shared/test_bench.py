"""annrepro.bench and `annrepro bench`: the same queries, ground truth and search for every
method; CSV / Markdown / plots; bad input in one line."""

import csv

import numpy as np
import pytest
from annrepro.bench import pareto_front, recall_columns, run_bench, write_outputs
from annrepro.cli import main
from annrepro.metrics import one_recall_at
from annrepro.testing import SyntheticDataset
from annrepro.vecio import write_vectors

DS = SyntheticDataset(d=16, nb=500, nq=30, nt=600, seed=5)


def test_pareto_front():
    pts = [(1, 0.5), (2, 0.4), (3, 0.9), (4, 0.9), (0.5, 0.1)]
    assert pareto_front(pts, larger_x_better=False) == [4, 0, 2]  # fewer bytes, more recall
    assert pareto_front(pts, larger_x_better=True) == [3]  # faster and as good as the rest


def test_recall_columns_follow_k():
    assert [c[0] for c in recall_columns(100, 100)] == [
        "1-recall@1", "1-recall@10", "1-recall@100", "10-recall@10",
    ]  # fmt: skip
    assert [c[0] for c in recall_columns(5, 5)] == ["1-recall@1"]


def test_run_bench_scores_with_the_exact_ground_truth(tmp_path, monkeypatch):
    monkeypatch.setenv("ANNREPRO_CACHE", str(tmp_path / "cache"))
    rows = run_bench(DS.xb, DS.xq, ["Flat", "PQ4x4"], k=10, metric="l2", xt=DS.xt)
    flat, pq = rows
    assert flat.recalls["1-recall@1"] == 1.0 and flat.recalls["10-recall@10"] == 1.0
    assert flat.bytes_per_vector == 64 and pq.bytes_per_vector == 2
    assert 0 < pq.recalls["1-recall@10"] < 1
    import faiss

    ref = faiss.index_factory(16, "PQ4x4")
    ref.train(DS.xt)
    ref.add(DS.xb)
    assert pq.recalls["1-recall@10"] == one_recall_at(ref.search(DS.xq, 10)[1], DS.gt(10), 10)
    paths = write_outputs(rows, tmp_path / "out", title="t")
    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == ["Flat", "PQ4x4"]
    assert float(table[1]["1-recall@10"]) == pq.recalls["1-recall@10"]
    md = paths["md"].read_text()
    assert "best 10-recall@10 is `Flat`" in md and "2 bytes/vector" in md
    for key in ("recall_vs_bytes", "recall_vs_qps"):
        assert paths[key].read_bytes()[:4] == b"\x89PNG"


def _files(tmp_path, dtype=np.float32):
    xb, xq = DS.xb, DS.xq
    if dtype == np.uint8:
        xb = np.clip(xb * 20 + 128, 0, 255).astype(np.uint8)
        xq = np.clip(xq * 20 + 128, 0, 255).astype(np.uint8)
    ext = ".fvecs" if dtype == np.float32 else ".u8bin"
    write_vectors(tmp_path / f"xb{ext}", xb)
    write_vectors(tmp_path / f"xq{ext}", xq)
    return tmp_path / f"xb{ext}", tmp_path / f"xq{ext}"


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_bench_cli_on_user_files(tmp_path, monkeypatch, capsys, dtype):
    monkeypatch.setenv("ANNREPRO_CACHE", str(tmp_path / "cache"))
    xb, xq = _files(tmp_path, dtype)
    out = tmp_path / "res"
    rc = main(
        ["bench", "--base", str(xb), "--queries", str(xq), "--methods", "Flat;PQ4x4", "-k", "10",
         "--out", str(out), "--threads", "1"]
    )  # fmt: skip
    assert rc == 0
    text = capsys.readouterr()
    assert "Flat: 64 B/vector" in text.out and "trained on the base" in text.err
    assert (out / "bench.csv").is_file() and (out / "recall_vs_qps.png").is_file()


def test_bench_cli_bad_input_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANNREPRO_CACHE", str(tmp_path / "cache"))
    xb, xq = _files(tmp_path)
    write_vectors(tmp_path / "xq8.fvecs", DS.xq[:, :8])
    base = ["bench", "--base", str(xb), "--out", str(tmp_path / "o"), "-k", "10"]
    cases = [
        (["--queries", str(tmp_path / "xq8.fvecs"), "--methods", "Flat"], "dimension"),
        (["--queries", str(xq), "--methods", "Flat", "--set", "catalyzer.epochs=2"], "none of"),
        (["--queries", str(xq), "--methods", "PQ4x4", "--set", "oops"], "PLUGIN.KEY=VALUE"),
        (["--queries", str(xq), "--methods", "Bogus7"], "Bogus7"),
        (["--queries", str(tmp_path / "none.fvecs"), "--methods", "Flat"], "none.fvecs"),
    ]
    for extra, needle in cases:
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("annrepro: error:") and needle in err[-1], err


def test_recall_cli(tmp_path, capsys):
    gt = DS.gt(10)
    found = gt.copy()
    found[:15, [0, 1]] = gt[:15, [1, 0]]  # half the queries: nearest neighbour at rank 2
    write_vectors(tmp_path / "gt.ivecs", gt.astype(np.int32))
    write_vectors(tmp_path / "I.ivecs", found.astype(np.int32))
    assert (
        main(["recall", "--results", str(tmp_path / "I.ivecs"), "--gt", str(tmp_path / "gt.ivecs")])
        == 0
    )
    out = capsys.readouterr().out
    assert "1-recall@1 0.5000" in out and "1-recall@10 1.0000" in out
    assert "10-recall@10 1.0000" in out
    write_vectors(tmp_path / "f.fvecs", found.astype(np.float32))
    assert (
        main(["recall", "--results", str(tmp_path / "f.fvecs"), "--gt", str(tmp_path / "gt.ivecs")])
        == 2
    )
    assert "must be integers" in capsys.readouterr().err
