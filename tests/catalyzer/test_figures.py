"""catalyzer.figures: the artifacts of Figure 5 (1-recall@10 vs bits) and Figure 3 (histograms
of the 1st / 100th neighbour distances, Sec. 3.3), as CSV points and PNG, alone and as the
producers write them."""

import csv
import io
from pathlib import Path

import annrepro.plotting
import numpy as np
import pytest
from annrepro.tables import load_spec
from annrepro.tables.runner import Context
from annrepro.testing import FakeContext
from catalyzer.figures import Figure5Point, write_figure3, write_figure5
from catalyzer.tables import figure5, text

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPECS = Path(__file__).resolve().parents[2] / "paper_tables" / "catalyzer"


def _ctx(table: str, tmp_path, **params) -> Context:
    """A tiny-scale context, shrunk further (fewer curves / no LSQ) to keep the test fast."""
    ctx = Context(
        load_spec(SPECS / f"{table}.toml"),
        "tiny",
        seed=0,
        threads=1,
        progress_enabled=False,
        out_dir=tmp_path,
    )
    ctx.params.update(params)
    return ctx


def _figure5_ctx(tmp_path):
    return _ctx("figure5", tmp_path, d_outs=[16], r2={"16": [2, 5]}, pq_bytes=[4])


def _text_ctx(tmp_path):
    return _ctx("text", tmp_path, speedup_datasets=[], n_timing=500, nq_timing=5)


def _read_csv(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def _artifact(tmp_path, table, name):
    return tmp_path / f"catalyzer.{table}" / name


def test_write_figure5_points_are_the_rows(tmp_path):
    ctx = FakeContext(None, out_dir=tmp_path)
    points = [
        Figure5Point(
            "Deep1M", "synth", "Catalyst+Lattice d_out=16 r2=2", "Catalyst+Lattice", 16, 2, 13, 0.25
        ),
        Figure5Point("Deep1M", "synth", "OPQ 32b", "OPQ", None, None, 32, 0.5),
    ]
    write_figure5(ctx, points)
    pts = _read_csv(tmp_path / "test.table" / "figure5.csv")
    assert ",".join(pts[0]) == "dataset,stand_in,row,method,d_out,r2,bits,1-recall@10"
    assert [p["d_out"] for p in pts] == ["16", ""]  # OPQ has no d_out
    assert [float(p["1-recall@10"]) for p in pts] == [0.25, 0.5]
    row = {"dataset": "Deep1M", "row": "OPQ 32b", "1-recall@10": 0.5, "bits": 32}
    assert points[1].table_row() == row


def test_write_figure3_one_line_per_query_and_space(tmp_path):
    ctx = FakeContext(None, out_dir=tmp_path)
    d1, dn = np.array([0.1, 0.2]), np.array([0.5, 0.7])
    hist = [
        ("Deep1M", "synth", "input space", d1, dn),
        ("Deep1M", "synth", "Catalyzer output", d1 / 2, dn / 2),
    ]
    write_figure3(ctx, hist, 100)
    pts = _read_csv(tmp_path / "test.table" / "figure3.csv")
    assert list(pts[0]) == ["dataset", "stand_in", "space", "query", "d_nn1", "d_nn100"]
    assert [(p["space"], p["query"], float(p["d_nn1"])) for p in pts] == [
        ("input space", "0", 0.1),
        ("input space", "1", 0.2),
        ("Catalyzer output", "0", 0.05),
        ("Catalyzer output", "1", 0.1),
    ]


def test_figure5_writes_points_and_png(tmp_path):
    if annrepro.plotting.pyplot() is None:
        pytest.skip("matplotlib not installed (optional extra annrepro[plots])")
    ctx = _figure5_ctx(tmp_path)
    rows = figure5(ctx.spec, ctx)
    pts = _read_csv(_artifact(tmp_path, "figure5", "figure5.csv"))
    # one point per row, same values: the CSV holds the points of the plot
    assert len(pts) == len(rows) == 2 * (2 + 1)  # 2 data sets x (2 radii + 1 OPQ size)
    by_row = {(p["dataset"], p["row"]): p for p in pts}
    for r in rows:
        p = by_row[(r["dataset"], r["row"])]
        assert float(p["1-recall@10"]) == pytest.approx(r["1-recall@10"])
        assert int(p["bits"]) == r["bits"]
    assert {p["method"] for p in pts} == {"Catalyst+Lattice", "OPQ"}
    png = _artifact(tmp_path, "figure5", "figure5.png")
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 1000
    assert str(png) in ctx.artifacts


def test_text_writes_figure3_histograms(tmp_path):
    if annrepro.plotting.pyplot() is None:
        pytest.skip("matplotlib not installed (optional extra annrepro[plots])")
    ctx = _text_ctx(tmp_path)
    rows = text(ctx.spec, ctx)
    pts = _read_csv(_artifact(tmp_path, "text", "figure3.csv"))
    ds = ctx.dataset("Deep1M")
    assert len(pts) == 2 * ds.nq  # every query, input and catalyzed space
    assert {p["space"] for p in pts} == {"input space", "Catalyzer output"}
    assert all(float(p["d_nn1"]) <= float(p["d_nn100"]) for p in pts)
    # the histogram data agree with the statistic of the rows
    from catalyzer.analysis import nn_overlap_probability

    for space in ("input space", "Catalyzer output"):
        sel = [p for p in pts if p["space"] == space]
        got = nn_overlap_probability(
            [float(p["d_nn1"]) for p in sel], [float(p["d_nn100"]) for p in sel]
        )
        want = next(r for r in rows if r["row"] == space)["p_nn1_gt_nn100"]
        assert got == pytest.approx(want)
    png = _artifact(tmp_path, "text", "figure3.png")
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 1000


@pytest.mark.parametrize("table", ["figure5", "text"])
def test_without_matplotlib_the_png_is_skipped_with_a_note(table, tmp_path, monkeypatch):
    monkeypatch.setattr(annrepro.plotting, "pyplot", lambda: None)
    if table == "figure5":
        ctx = _figure5_ctx(tmp_path)
        rows, csv_name, png_name = figure5(ctx.spec, ctx), "figure5.csv", "figure5.png"
    else:
        ctx = _text_ctx(tmp_path)
        rows, csv_name, png_name = text(ctx.spec, ctx), "figure3.csv", "figure3.png"
    assert rows
    assert len(_read_csv(_artifact(tmp_path, table, csv_name))) > 0  # the points are still there
    assert not _artifact(tmp_path, table, png_name).exists()
    assert [p.name for p in (tmp_path / f"catalyzer.{table}").iterdir()] == [csv_name]
    assert any("matplotlib is not installed" in n for n in ctx.notes)


def test_encode_speedup_is_a_timing_column():
    """Appendix B / Sec. 5.3 ratio of timings: produced at every scale, never snapshotted."""
    spec = load_spec(SPECS / "text.toml")
    assert spec.columns["encode_speedup"].is_timing
    assert "BigAnn1M" in spec.params_for("tiny")["speedup_datasets"]
