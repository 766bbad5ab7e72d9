"""annrepro.reference: committed runs, CI's regression check against them, and staleness."""

import csv
from pathlib import Path

import pytest
from annrepro.cli import main
from annrepro.reference import cell_tolerance, check, is_stale, load_reference, save
from annrepro.tables import find_specs, run_table


@pytest.fixture
def ran(tmp_path, monkeypatch):
    monkeypatch.setenv("ANNREPRO_REFERENCE", str(tmp_path / "ref"))
    spec = find_specs("ccst.table2")[0]  # two claims, about a second at tiny
    out = tmp_path / "results" / "tiny"
    run_table(spec, "tiny", out_dir=out, progress=False)
    return spec, out


def _edit_reference(tmp_path, spec, fn):
    path = tmp_path / "ref" / "tiny" / f"{spec.id}.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    fn(rows)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_saved_reference_matches_its_own_run(ran, tmp_path):
    spec, out = ran
    save([spec], "tiny", out, echo=lambda *_: None)
    assert (tmp_path / "ref" / "tiny" / "MACHINE.txt").is_file()
    assert load_reference(spec, "tiny") is not None
    assert check([spec], "tiny", out) == []
    assert not is_stale(spec, load_reference(spec, "tiny"))


def test_a_moved_cell_is_a_problem_naming_it(ran, tmp_path):
    spec, out = ran
    save([spec], "tiny", out, echo=lambda *_: None)
    col = None

    def bump(rows):
        nonlocal col
        for r in rows:
            if not spec.columns[r["column"]].is_timing:
                r["measured"] = str(float(r["measured"]) + 50.0)
                col = (r["dataset"], r["row"], r["column"])
                return

    _edit_reference(tmp_path, spec, bump)
    problems = check([spec], "tiny", out)
    assert any(f"{col[0]} / {col[1]} / {col[2]}" in p for p in problems), problems


def test_stale_when_the_spec_changed(ran, tmp_path):
    spec, out = ran
    save([spec], "tiny", out, echo=lambda *_: None)
    ref = load_reference(spec, "tiny")
    ref.provenance["fingerprint"] = "made-by-older-code"
    assert is_stale(spec, ref)


def test_cell_tolerance_allows_two_queries_on_recall_columns():
    spec = find_specs("ccst.table5")[0]
    assert cell_tolerance(spec, "1-recall@1", 200) == pytest.approx(
        max(spec.columns["1-recall@1"].tol, 1.0) + 1e-6
    )


def test_cli_save_and_check(ran, tmp_path, capsys):
    spec, out = ran
    args = ["--scale", "tiny", "--tables", spec.id, "--results", str(out)]
    assert main(["reference", "check", *args]) == 1  # nothing saved yet
    assert main(["reference", "save", *args]) == 0
    assert main(["reference", "check", *args]) == 0
    assert "match" in capsys.readouterr().out
    assert Path(tmp_path / "ref" / "tiny" / f"{spec.id}.json").is_file()
