"""The tables engine on a toy paper: spec validation, runner, comparison, claims, report."""

import json
import textwrap
from pathlib import Path

import pytest
from annrepro.tables import compare_run, find_specs, load_spec, register, run_table, write_report
from annrepro.tables.spec import SpecError

CSV = """dataset,row,column,published,std,source,note
Toy,A,1-recall@1,90.0,,Table 9,
Toy,B,1-recall@1,80.0,,Table 9,
Toy,A,build_s,100,,Table 9,
Toy,B,build_s,50,,Table 9,
Toy,C,1-recall@1,,,Table 9,printed n/a
"""

SPEC = """
[table]
id = "toy.table9"
paper = "toy"
title = "a toy"
source = "Table 9"

[columns."1-recall@1"]
unit = "%"
compare = "abs"
tol = 1.0

[columns.build_s]
unit = "s"
compare = "ratio"
baseline_row = "A"
tol = 0.1
higher_is_better = false

[scales.tiny]
datasets = { Toy = "synth-sift-2K" }
params = { k = 3 }

[[claims]]
id = "a-beats-b"
text = "A beats B on 1-recall@1"
dataset = "Toy"
column = "1-recall@1"
better = "A"
worse = "B"
margin = 5.0

[[claims]]
id = "b-faster"
text = "B builds 2x faster than A"
dataset = "Toy"
column = "build_s"
better = "B"
worse = "A"
ratio = 2.0
"""


@pytest.fixture
def toy(tmp_path, monkeypatch):
    root = tmp_path / "paper_tables"
    (root / "toy").mkdir(parents=True)
    import shutil

    from annrepro.paths import tables_root

    shutil.copy(tables_root() / "datasets.toml", root / "datasets.toml")
    (root / "toy" / "table9.csv").write_text(CSV)
    (root / "toy" / "table9.toml").write_text(SPEC)
    monkeypatch.setenv("ANNREPRO_TABLES", str(root))
    monkeypatch.setenv("ANNREPRO_RESULTS", str(tmp_path / "results"))
    return root


def test_run_compare_claims_report(toy, tmp_path):
    calls = {}

    @register("toy.table9")
    def produce(spec, ctx):
        ds = ctx.dataset("Toy")
        calls["k"] = ctx.params["k"]
        ctx.note("toy note")
        assert ds.xb.shape == (2000, 32)
        return [
            {"dataset": "Toy", "row": "A", "1-recall@1": 0.905, "build_s": 10.0},
            {"dataset": "Toy", "row": "B", "1-recall@1": 0.70, "build_s": 6.0},
            {"dataset": "Toy", "row": "D", "1-recall@1": 0.5, "1-recall@1:std": 0.01},
        ]

    (spec,) = find_specs("toy.*")
    run = run_table(spec, "tiny")
    assert run.error is None and calls["k"] == 3
    comp = compare_run(spec, run)
    st = {(c.row, c.column): c.status for c in comp.cells}
    assert st[("A", "1-recall@1")] == "within tol"  # 90.5 vs 90.0, tol 1
    assert st[("B", "1-recall@1")] == "off"  # 70 vs 80
    assert st[("B", "build_s")] == "off"  # ratio 0.6 vs 0.5, tol 10 %
    assert st[("A", "build_s")] == "info"  # the ratio's baseline row is not judged
    assert st[("C", "1-recall@1")] == "not measured"  # n/a in the paper, not produced
    assert st[("D", "1-recall@1")] == "extra"
    verdicts = {c.claim.id: (c.ours, c.paper) for c in comp.claims}
    assert verdicts["a-beats-b"] == ("holds", "holds")  # 90.5 - 70 > 5 ; 90 - 80 > 5
    assert verdicts["b-faster"] == ("fails", "holds")  # 10/6 < 2 ; 100/50 >= 2
    line = comp.summary_line()
    assert "toy.table9 [tiny]" in line and "claims 1/2 hold" in line
    prov = json.loads((tmp_path / "results" / "tiny" / "toy.table9.json").read_text())
    assert prov["scale"] == "tiny" and prov["datasets"]["Toy"]["name"] == "synth-sift-2K"
    assert prov["notes"] == ["toy note"] and prov["threads"] >= 1
    report = write_report().read_text()
    assert "| Toy | B | 1-recall@1 | 80.0 | 70.00" in report
    assert "not in the paper" in report


def test_not_measured_and_failing_producer(toy, tmp_path):
    @register("toy.table9")
    def produce(spec, ctx):
        ctx.dataset("Toy")
        raise ValueError("boom")

    (spec,) = find_specs("toy.table9")
    run = run_table(spec, "tiny")
    assert run.error == "ValueError: boom"
    assert not (tmp_path / "results" / "tiny" / "toy.table9.csv").exists()
    comp = compare_run(spec, run)
    assert {c.status for c in comp.cells if c.published is not None} == {"not measured"}
    assert {c.ours for c in comp.claims} == {"not measured"}


def test_producer_returning_undeclared_column(toy):
    @register("toy.table9")
    def produce(spec, ctx):
        return [{"dataset": "Toy", "row": "A", "recall@10": 0.5}]

    (spec,) = find_specs("toy.table9")
    run = run_table(spec, "tiny", write=False)
    assert "column 'recall@10' that the spec does not declare" in run.error


def test_unknown_pattern(toy):
    with pytest.raises(SpecError, match="no table matches 'nope.*'.*toy.table9"):
        find_specs("nope.*")


def test_claim_on_row_missing_from_csv(toy):
    spec = toy / "toy" / "table9.toml"
    spec.write_text(SPEC.replace('worse = "B"\nmargin', 'worse = "Z"\nmargin'))
    with pytest.raises(SpecError, match="row 'Z' on 'Toy', which the published CSV lacks"):
        load_spec(spec)


def test_declared_row_missing_from_csv(toy):
    spec = toy / "toy" / "table9.toml"
    spec.write_text(SPEC + '\n[rows]\nToy = ["A", "Q"]\n')
    with pytest.raises(SpecError, match="declares row 'Q' on 'Toy'"):
        load_spec(spec)


def test_csv_column_not_declared(toy):
    (toy / "toy" / "table9.csv").write_text(CSV + "Toy,A,qps,5,,Table 9,\n")
    with pytest.raises(SpecError, match="column 'qps'"):
        load_spec(toy / "toy" / "table9.toml")


def test_csv_bad_number(toy):
    (toy / "toy" / "table9.csv").write_text(CSV.replace("90.0", "9O.0"))
    with pytest.raises(SpecError, match=r"table9.csv:2: '9O.0' is not a number"):
        load_spec(toy / "toy" / "table9.toml")


def test_missing_dataset_is_a_clear_table_error(toy, monkeypatch, tmp_path):
    spec_path = toy / "toy" / "table9.toml"
    spec_path.write_text(
        SPEC.replace(
            "[scales.tiny]",
            textwrap.dedent("""
        [scales.full]
        datasets = { Toy = "sift-1M" }

        [scales.tiny]"""),
        )
    )
    monkeypatch.setenv("ANNREPRO_DATA", str(tmp_path / "empty"))

    @register("toy.table9")
    def produce(spec, ctx):
        ctx.dataset("Toy")
        return []

    run = run_table(load_spec(spec_path), "full")
    assert "data set 'sift-1M' is not available" in run.error
    assert "sift.tar.gz" in run.error


def test_table_without_producer_is_pending_not_failed(toy, tmp_path):
    (toy / "toy" / "table8.csv").write_text(CSV)
    (toy / "toy" / "table8.toml").write_text(SPEC.replace("toy.table9", "toy.table8"))
    run = run_table(load_spec(toy / "toy" / "table8.toml"), "tiny")
    assert run.error is None and run.measured == {}
    assert "no producer registered for toy.table8" in run.provenance["pending"]
    comp = compare_run(run.spec, run)
    assert "no producer yet" in comp.summary_line()


def test_artifacts_land_beside_the_results_and_in_provenance(toy, tmp_path):
    @register("toy.table9")
    def produce(spec, ctx):
        ctx.artifact("points.csv").write_text("x,y\n1,2\n")
        with pytest.raises(ValueError, match="plain file name"):
            ctx.artifact("../escape.csv")
        return [{"dataset": "Toy", "row": "A", "1-recall@1": 0.9}]

    (spec,) = find_specs("toy.table9")
    run = run_table(spec, "tiny")
    assert run.error is None
    path = tmp_path / "results" / "tiny" / "toy.table9" / "points.csv"
    assert path.read_text() == "x,y\n1,2\n"
    assert run.provenance["artifacts"] == [str(path)]
    report = write_report().read_text()
    assert "- file: [points.csv](tiny/toy.table9/points.csv)" in report


def test_timing_flag_marks_a_ratio_of_timings(toy):
    spec_text = SPEC.replace(
        '[columns.build_s]\nunit = "s"', '[columns.build_s]\nunit = "x"\ntiming = true'
    )
    (toy / "toy" / "table9.toml").write_text(spec_text)
    spec = load_spec(toy / "toy" / "table9.toml")
    assert spec.columns["build_s"].is_timing
    assert not spec.columns["1-recall@1"].is_timing
    (toy / "toy" / "table9.toml").write_text(spec_text.replace("timing = true", 'timing = "yes"'))
    with pytest.raises(SpecError, match="timing must be true or false"):
        load_spec(toy / "toy" / "table9.toml")


# ------------------------------------------------------------------ units, intervals, results
def _one(spec_text, toy, **cols):
    (toy / "toy" / "table9.toml").write_text(spec_text)

    @register("toy.table9")
    def produce(spec, ctx):
        return [{"dataset": "Toy", "row": "A", **cols}]

    return run_table(load_spec(toy / "toy" / "table9.toml"), "tiny", write=False)


UNITS_IN_USE = {  # every unit of paper_tables/*/*.toml: (producer's value, published value)
    "%": (0.25, 25.0),
    "GB": (1.19e9, 1.19),
    "h": (7200.0, 2.0),
    "ms": (0.5, 500.0),
    "s": (3.0, 3.0),
    "x": (2.5, 2.5),
    "bits": (64, 64.0),
    "dims": (24, 24.0),
    "fraction": (0.3, 0.3),
    "points": (79, 79.0),
    "q/s": (1000.0, 1000.0),
    "queries": (5, 5.0),
    "vectors": (10, 10.0),
    "": (0.7, 0.7),
}


def test_every_unit_in_use_is_converted_once(toy):
    import glob
    import tomllib
    from pathlib import Path

    from annrepro.paths import tables_root

    used = set()
    for f in glob.glob(str(tables_root() / "*" / "*.toml")):
        cols = tomllib.loads(Path(f).read_text()).get("columns", {})
        used |= {c.get("unit", "") for c in cols.values()}
    assert used <= set(UNITS_IN_USE), f"units without a test: {used - set(UNITS_IN_USE)}"
    for unit, (given, published) in UNITS_IN_USE.items():
        text = SPEC.replace('[columns.build_s]\nunit = "s"', f'[columns.build_s]\nunit = "{unit}"')
        run = _one(text, toy, build_s=given)
        assert run.error is None, (unit, run.error)
        assert run.measured[("Toy", "A", "build_s")][0] == pytest.approx(published), unit


def test_a_producer_that_converted_itself_is_refused(toy):
    gb = SPEC.replace('[columns.build_s]\nunit = "s"', '[columns.build_s]\nunit = "GB"')
    run = _one(gb, toy, build_s=1.19)  # already GB: would print 1.19e-09
    assert "bytes is implausibly small" in run.error and "build_s" in run.error
    run = _one(SPEC, toy, **{"1-recall@1": 36.0})  # already a percentage: would print 3600
    assert "36.0 is not a fraction in [0, 1]" in run.error


def test_per_query_values_give_a_bootstrap_interval(toy, tmp_path):
    import numpy as np

    per_query = np.random.default_rng(0).random(400) * 0.6  # 10-recall-like values, not 0/1

    @register("toy.table9")
    def produce(spec, ctx):
        v = float(per_query.mean())
        return [{"dataset": "Toy", "row": "A", "1-recall@1": v, "1-recall@1:per_query": per_query}]

    (spec,) = find_specs("toy.table9")
    run = run_table(spec, "tiny")
    lo, hi = run.intervals[("Toy", "A", "1-recall@1")]
    mean, sem = 100 * per_query.mean(), 100 * per_query.std(ddof=1) / np.sqrt(400)
    assert lo < mean < hi
    assert hi - lo == pytest.approx(2 * 1.96 * sem, rel=0.15)  # the normal interval, roughly
    again = run_table(spec, "tiny")  # seeded: the same interval every run
    assert again.intervals == run.intervals
    from annrepro.tables import load_run

    assert load_run(spec, "tiny").intervals[("Toy", "A", "1-recall@1")] == pytest.approx((lo, hi))
    assert f"[{lo:.1f}, {hi:.1f}]" in write_report().read_text()


def test_no_binomial_interval_on_values_that_are_not_zero_one(toy):
    from annrepro.tables.report import _ci

    text = SPEC.replace('"1-recall@1"', '"10-recall@10"').replace("1-recall@1", "10-recall@10")
    (toy / "toy" / "table9.csv").write_text(CSV.replace("1-recall@1", "10-recall@10"))
    (toy / "toy" / "table9.toml").write_text(text)

    @register("toy.table9")
    def produce(spec, ctx):
        ctx.dataset("Toy")
        return [{"dataset": "Toy", "row": "A", "10-recall@10": 0.5}]

    spec = load_spec(toy / "toy" / "table9.toml")
    comp = compare_run(spec, run_table(spec, "tiny"))
    (cell,) = [c for c in comp.cells if c.row == "A" and c.column == "10-recall@10"]
    assert _ci(comp, cell) == ""


def test_a_failing_rerun_keeps_the_good_result(toy, tmp_path):
    state = {"fail": False}

    @register("toy.table9")
    def produce(spec, ctx):
        ctx.dataset("Toy")
        if state["fail"]:
            raise RuntimeError("out of memory")
        return [{"dataset": "Toy", "row": "A", "1-recall@1": 0.9}]

    (spec,) = find_specs("toy.table9")
    out = tmp_path / "results" / "tiny"
    assert run_table(spec, "tiny").error is None
    good = (out / "toy.table9.csv").read_bytes()
    state["fail"] = True
    assert "out of memory" in run_table(spec, "tiny").error
    assert (out / "toy.table9.csv").read_bytes() == good
    report = write_report().read_text()
    assert "The latest rerun failed" in report and "out of memory" in report
    assert "| Toy | A | 1-recall@1 | 90.0 | 90.00" in report  # still shown
    state["fail"] = False
    assert run_table(spec, "tiny").error is None
    assert not (out / "toy.table9.failed.json").exists()
    assert "The latest rerun failed" not in write_report().read_text()


def test_reproduce_resumes_what_is_up_to_date(toy, tmp_path):
    from annrepro.tables.reproduce import reproduce

    calls = []

    @register("toy.table9")
    def produce(spec, ctx):
        ctx.dataset("Toy")
        calls.append(ctx.params["k"])
        return [{"dataset": "Toy", "row": "A", "1-recall@1": 0.9}]

    lines = []
    specs = find_specs("toy.table9")
    assert reproduce(specs, "tiny", echo=lines.append)[0][1] == "ran"
    assert reproduce(specs, "tiny", echo=lines.append)[0][1] == "up to date"
    assert calls == [3] and any("up to date" in ln for ln in lines)
    assert any(ln.startswith("timings [tiny]") for ln in lines)
    assert reproduce(specs, "tiny", force=True, echo=lines.append)[0][1] == "ran"
    assert reproduce(specs, "tiny", seed=1, echo=lines.append)[0][1] == "ran"  # another seed
    (toy / "toy" / "table9.toml").write_text(SPEC.replace("k = 3", "k = 4"))  # spec changed
    assert reproduce(find_specs("toy.table9"), "tiny", echo=lines.append)[0][1] == "ran"
    assert calls == [3, 3, 3, 4]


def _install_entry_point(site: Path, paper: str, module: str) -> None:
    """What `pip install` leaves for a paper package: its `annrepro.tables` entry point, the
    one way the runner finds producers."""
    info = site / f"{paper}_plugin-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {paper}-plugin\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text(f"[annrepro.tables]\n{paper} = {module}\n")


TOY_PRODUCERS = """
import os, time
from annrepro.tables import register

@register("toy.table8")
def table8(spec, ctx):
    ctx.dataset("Toy")
    with open(os.environ["TOY_LOG"], "a") as f:
        f.write("table8\\n")
    return [{"dataset": "Toy", "row": "A", "1-recall@1": 0.9}]

@register("toy.table9")
def table9(spec, ctx):
    ctx.dataset("Toy")
    with open(os.environ["TOY_LOG"], "a") as f:
        f.write("table9\\n")
    while os.environ.get("TOY_BLOCK"):
        time.sleep(0.05)  # killed here
    return [{"dataset": "Toy", "row": "A", "1-recall@1": 0.8}]
"""


def test_reproduce_killed_mid_run_resumes_where_it_stopped(toy, tmp_path):
    """kill -9 during the second table; the rerun keeps the first and computes the second."""
    import os
    import signal
    import subprocess
    import sys
    import time

    (toy / "toy" / "table8.csv").write_text(CSV)
    (toy / "toy" / "table8.toml").write_text(SPEC.replace("toy.table9", "toy.table8"))
    pkg = tmp_path / "plugins" / "toy"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "tables.py").write_text(TOY_PRODUCERS)
    _install_entry_point(tmp_path / "plugins", "toy", "toy.tables")
    log = tmp_path / "calls.log"
    # the plugin folder first; a PYTHONPATH already set (a checkout's sources) is kept
    path = os.pathsep.join(filter(None, [str(tmp_path / "plugins"), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path, TOY_LOG=str(log), TOY_BLOCK="1")
    cmd = [sys.executable, "-m", "annrepro", "reproduce", "--scale", "tiny", "--tables", "toy.*"]
    cmd.append("--no-progress")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while "table9" not in (log.read_text() if log.exists() else ""):
            assert proc.poll() is None and time.monotonic() < deadline, "reproduce did not start"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    out = tmp_path / "results" / "tiny"
    assert (out / "toy.table8.csv").exists() and not (out / "toy.table9.csv").exists()
    del env["TOY_BLOCK"]
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert "toy.table8 [tiny]: up to date" in rerun.stdout
    assert log.read_text().split() == ["table8", "table9", "table9"]
    assert (out / "toy.table9.csv").exists()


def test_rows_skipped_for_missing_data_are_listed_at_the_top(toy, tmp_path, monkeypatch):
    spec_path = toy / "toy" / "table9.toml"
    spec_path.write_text(
        SPEC.replace(
            'datasets = { Toy = "synth-sift-2K" }',
            'datasets = { Toy = "synth-sift-2K", Gone = "sift-1M" }',
        )
    )
    monkeypatch.setenv("ANNREPRO_DATA", str(tmp_path / "empty"))

    @register("toy.table9")
    def produce(spec, ctx):
        return [{"dataset": name, "row": "A", "1-recall@1": 0.9} for name, _ in ctx.each_dataset()]

    run = run_table(load_spec(spec_path), "tiny")
    assert run.error is None and "Gone" in run.provenance["skipped_datasets"]
    top = write_report().read_text().split("## Scale")[0]
    assert "Rows skipped for missing data** (1): toy.table9 [tiny] Gone" in top


SUBSTITUTE = """
[datasets.gone-with-sub]
scale = "small"
metric = "l2"
base = "gone/base.fvecs"
query = "gone/query.fvecs"
substitute = "synth-sift-2K"
"""


def test_missing_data_with_a_substitute_is_measured_on_it_and_says_so(toy, tmp_path, monkeypatch):
    """A fresh machine without a data set's files measures its rows on the registry's
    substitute: named in the notes, the provenance and at the top of REPORT.md; once the files
    are there the result is no longer up to date; a file that is there but wrong is an error,
    never a reason to substitute."""
    import numpy as np
    from annrepro import datasets as dsmod
    from annrepro.tables.runner import up_to_date
    from annrepro.vecio import write_vectors

    with open(toy / "datasets.toml", "a") as f:
        f.write(SUBSTITUTE)
    spec_path = toy / "toy" / "table9.toml"
    spec_path.write_text(SPEC.replace('Toy = "synth-sift-2K"', 'Toy = "gone-with-sub"'))
    data = tmp_path / "data"
    monkeypatch.setenv("ANNREPRO_DATA", str(data))
    monkeypatch.setenv("ANNREPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(dsmod, "_cache", {})

    @register("toy.table9")
    def produce(spec, ctx):
        ds = ctx.dataset("Toy")
        return [{"dataset": "Toy", "row": "A", "1-recall@1": float(ds.d) / 1000}]

    spec = load_spec(spec_path)
    run = run_table(spec, "tiny")
    assert run.error is None
    sub = run.provenance["substituted_datasets"]["Toy"]
    assert sub["wanted"] == "gone-with-sub" and sub["used"] == "synth-sift-2K"
    assert "gone/base.fvecs" in sub["why"]
    assert run.provenance["datasets"]["Toy"]["name"] == "synth-sift-2K"
    assert any("measured on synth-sift-2K" in n for n in run.provenance["notes"])
    top = write_report().read_text().split("## Scale")[0]
    assert "substitute data** (1" in top and "toy.table9 [tiny] Toy on synth-sift-2K" in top
    assert up_to_date(spec, "tiny", 0) is not None

    rng = np.random.default_rng(0)
    write_vectors(data / "gone" / "base.fvecs", rng.standard_normal((40, 8), dtype=np.float32))
    write_vectors(data / "gone" / "query.fvecs", rng.standard_normal((4, 8), dtype=np.float32))
    assert up_to_date(spec, "tiny", 0) is None  # the real data arrived: rerun on it
    dsmod._cache.clear()
    run = run_table(spec, "tiny")
    assert run.error is None and not run.provenance["substituted_datasets"]
    assert run.provenance["datasets"]["Toy"]["name"] == "gone-with-sub"

    (data / "gone" / "query.fvecs").write_bytes(b"\x08\x00\x00")  # truncated, not absent
    dsmod._cache.clear()
    run = run_table(spec, "tiny")
    assert run.error is not None and "gone/query.fvecs" in run.error
