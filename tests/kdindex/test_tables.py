"""KDindex table specs, published numbers and producers: registration, the published claims, the
CLI, and (slow) the producers end to end at the tiny scale (synthetic stand-ins, seconds each)."""

import annrepro.cli
import pytest
from annrepro.tables import find_specs, producers, run_table
from annrepro.tables.compare import claim_verdict
from annrepro.tables.runner import RUN_MEMO
from kdindex.cli import main

TABLES = sorted(
    ["kdindex.figure3", "kdindex.figure4", "kdindex.ladder"]
    + [f"kdindex.table{n}" for n in range(2, 9)]
)
PRODUCED = TABLES


def test_every_table_has_a_spec_and_a_producer():
    specs = {s.id: s for s in find_specs("kdindex.*")}
    assert sorted(specs) == TABLES
    registered = producers("kdindex")
    assert sorted(t for t in registered if t.startswith("kdindex.")) == PRODUCED
    for s in specs.values():
        assert set(s.scales) == {"tiny", "small", "medium", "full"}


def _paper_verdicts(table):
    spec = find_specs(table)[0]
    paper = {k: c.published for k, c in spec.published().items() if c.published is not None}
    out = {}
    for cl in spec.claims:
        out[cl.id] = claim_verdict(cl, paper, spec.columns[cl.column].higher_is_better)[0]
    return out


def test_published_claims():
    # Table 2: KDindex (X) beats X, and KDindex (AQ) beats every baseline, on every cell
    assert set(_paper_verdicts("kdindex.table2").values()) == {"holds"}
    assert set(_paper_verdicts("kdindex.table4").values()) == {"holds"}
    assert set(_paper_verdicts("kdindex.table8").values()) == {"holds"}
    # Table 3: 10x smaller everywhere but on SIFT1M (printed 7x)
    t3 = _paper_verdicts("kdindex.table3")
    assert [k for k, v in t3.items() if v == "fails"] == ["kdindex-10x-lighter-sift"]
    # Table 5: one ablation step does not help (AQ, MRR@10: 38.52 -> 36.52)
    t5 = _paper_verdicts("kdindex.table5")
    assert [k for k, v in t5.items() if v == "fails"] == ["aq-init-helps-mrr"]


def test_published_transcription_spot_checks():
    pub = find_specs("kdindex.table2")[0].published()
    c = pub[("GIST1M", "KDindex (AQ)", "ndcg@10")]
    assert (c.published_text, c.std) == ("63.17", 0.62)
    c = pub[("MSMARCO-Passage", "PQ", "recall@10")]
    assert (c.published_text, c.std) == ("1.80", 0.08)
    t6 = find_specs("kdindex.table6")[0].published()
    assert t6[("MSMARCO-Passage", "statistics", "nb")].published == 8841823
    t7 = find_specs("kdindex.table7")[0].published()
    assert t7[("GIST1M", "HNSW", "build_s")].published == 145.4  # printed "2m25.4s"


def test_cli_forwards_to_annrepro(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(annrepro.cli, "main", lambda argv: seen.append(argv) or 0)
    assert main(["reproduce", "--scale", "tiny"]) == 0
    assert seen == [["reproduce", "--tables", "kdindex.*", "--scale", "tiny"]]
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "kdindex reproduce" in capsys.readouterr().out
    assert main(["evaluate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def _run(table):
    RUN_MEMO.clear()  # every table trains its own runs here
    run = run_table(find_specs(table)[0], "tiny", n_threads=1, write=False, progress=False)
    assert run.error is None, run.provenance.get("traceback") or run.error
    return run.measured


def _cells(measured, row_pred):
    return {k: v for k, v in measured.items() if row_pred(k[1])}


@pytest.mark.slow
def test_table2_kdindex_rows_tiny():
    m = _run("kdindex.table2")
    kd = _cells(m, lambda r: r.startswith("KDindex"))
    rows = {(d, r) for d, r, _ in kd}
    assert rows == {
        (d, f"KDindex ({k})")
        for d in ("SIFT1M", "GIST1M", "MSMARCO-Doc", "MSMARCO-Passage")
        for k in ("PQ", "OPQ", "AQ")
    }
    for (d, r, c), (mean, std) in kd.items():
        assert 0 < mean / 100 <= 1 and std is not None and std >= 0, (d, r, c)


@pytest.mark.slow
def test_table3_kdindex_row_tiny():
    m = _run("kdindex.table3")
    for d in ("SIFT1M", "GIST1M", "MSMARCO-Doc"):
        kd = m[(d, "KDindex", "memory_gb")][0]
        aq = m[(d, "AQ", "memory_gb")][0]
        hnsw = m[(d, "HNSW", "memory_gb")][0]
        assert kd == pytest.approx(aq)  # the student's layout (Sec. 3.6)
        assert m[(d, "KDindex", "compression_ratio")][0] == pytest.approx(hnsw / kd)
        assert hnsw / kd > 1


@pytest.mark.slow
def test_tables_4_5_8_tiny():
    m4 = _run("kdindex.table4")
    assert {r for _, r, _ in m4} == {f"K={k}" for k in (5, 10, 20, 50, 100)}
    m5 = _run("kdindex.table5")
    rows5 = {r for _, r, _ in m5}
    for k in ("PQ", "OPQ", "AQ"):
        for v in ("", " initialization", " w/o distillation", " w/o balance"):
            assert f"KDindex ({k}){v}" in rows5
    m8 = _run("kdindex.table8")
    assert {r for _, r, _ in m8} == {
        "Lambdarank loss",
        "Weighted KL loss",
        "Distributed-based loss",
    }
    for m in (m4, m5, m8):
        for key, (mean, _) in m.items():
            assert 0 <= mean / 100 <= 1, key


@pytest.mark.slow
def test_figure4_tiny_points_and_artifacts(tmp_path):
    spec = find_specs("kdindex.figure4")[0]
    run = run_table(spec, "tiny", n_threads=1, out_dir=tmp_path, write=False, progress=False)
    assert run.error is None, run.provenance.get("traceback") or run.error
    m = run.measured
    for d in ("SIFT1M", "GIST1M"):
        for method in ("KDindex (AQ)", "AQ"):
            for npb in (1, 2, 4, 16):
                r = m[(d, f"{method} nprobe={npb}", "recall@10")][0] / 100
                assert 0 < r <= 1
                assert m[(d, f"{method} nprobe={npb}", "latency")][0] > 0
        assert m[(d, "HNSW ef=40", "recall@10")][0] > 90  # the teacher is near exact at tiny
    csv = tmp_path / "kdindex.figure4" / "figure4.csv"
    lines = csv.read_text().splitlines()
    assert lines[0] == "dataset,method,setting,recall@10,latency_ms"
    assert len(lines) == 1 + 2 * (2 * 4 + 2)


@pytest.mark.slow
def test_figure3_tiny_grid_and_artifacts(tmp_path):
    spec = find_specs("kdindex.figure3")[0]
    run = run_table(spec, "tiny", n_threads=1, out_dir=tmp_path, write=False, progress=False)
    assert run.error is None, run.provenance.get("traceback") or run.error
    m = run.measured
    for kind in ("PQ", "OPQ", "AQ"):
        for method in (kind, f"KDindex ({kind})"):
            small = m[("SIFT1M", f"{method} B=2 W=8", "recall@10")][0]
            large = m[("SIFT1M", f"{method} B=4 W=16", "recall@10")][0]
            assert 0 < small < large <= 100  # 16-bit codes beat 6-bit codes
    lines = (tmp_path / "kdindex.figure3" / "figure3.csv").read_text().splitlines()
    assert lines[0] == "dataset,method,B,W,recall@10" and len(lines) == 1 + 3 * 2 * 4
    from annrepro.plotting import pyplot

    png = tmp_path / "kdindex.figure3" / "figure3.png"
    assert png.exists() == (pyplot() is not None)
