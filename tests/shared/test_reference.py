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


def test_speed_claims_are_not_compared(tmp_path, monkeypatch):
    """A claim on a timing column (a speed-up) moves with the machine's load: a reference that
    says the opposite of the fresh run on every speed claim is no problem."""
    from annrepro.tables.compare import compare_run
    from annrepro.tables.runner import load_run

    monkeypatch.setenv("ANNREPRO_REFERENCE", str(tmp_path / "ref"))
    spec = find_specs("ccst.table4")[0]
    out = tmp_path / "results" / "tiny"
    run_table(spec, "tiny", out_dir=out, progress=False)
    save([spec], "tiny", out, echo=lambda *_: None)
    fresh = {c.claim.id: c.ours for c in compare_run(spec, load_run(spec, "tiny", out)).claims}
    flips = {}  # (dataset, row, column) -> a value that turns the speed claim's verdict around
    for cl in spec.claims:
        if spec.columns[cl.column].is_timing and fresh[cl.id] in ("holds", "fails"):
            up = (fresh[cl.id] == "fails") == spec.columns[cl.column].higher_is_better
            flips[(cl.dataset, cl.better, cl.column)] = 1e9 if up else 1e-9
            flips[(cl.dataset, cl.worse, cl.column)] = 1e-9 if up else 1e9
    assert flips

    def flip(rows):
        for r in rows:
            key = (r["dataset"], r["row"], r["column"])
            if key in flips:
                r["measured"] = repr(flips[key])

    _edit_reference(tmp_path, spec, flip)
    ref = {c.claim.id: c.ours for c in compare_run(spec, load_reference(spec, "tiny")).claims}
    assert any(ref[i] != fresh[i] for i in ref)  # the reference's speed verdicts differ now
    assert check([spec], "tiny", out) == []


def test_fingerprint_leaves_out_code_that_cannot_move_numbers(monkeypatch):
    """Editing the report, the comparison, the CLI or the reference store does not mark a
    committed result stale; editing what computes it does, and the one interface (methods,
    evaluate, ladder / crosspaper producers) counts only for the tables that run through it
    (tests/shared/test_fingerprint.py checks that no other table's code imports it)."""
    import annrepro.tables.fingerprint as fp

    excluded = {}
    real = fp.source_digest

    def spy(module, exclude=()):
        excluded[module] = set(exclude)
        return real(module, exclude)

    monkeypatch.setattr(fp, "source_digest", spy)
    fp._code_parts(find_specs("ccst.table2")[0])
    assert {"tables/report.py", "tables/compare.py", "cli.py", "reference.py"} <= excluded[
        "annrepro"
    ]
    assert {"ladder.py", "crosspaper.py", "methods.py", "evaluate.py"} <= excluded["annrepro"]
    assert not {"metrics.py", "groundtruth.py", "tables/runner.py"} & excluded["annrepro"]
    assert excluded["ccst"] == {"cli.py", "methods.py"}
    fp._code_parts(find_specs("ccst.ladder")[0])
    assert not {"ladder.py", "crosspaper.py", "methods.py", "evaluate.py"} & excluded["annrepro"]
    assert excluded["ccst"] == {"cli.py"}
    fp._code_parts(find_specs("annrepro.crosspaper")[0])
    assert "crosspaper.py" not in excluded["annrepro"] and "ladder.py" in excluded["annrepro"]
    assert excluded["kdindex"] == {"cli.py"}  # every plugin package counts for it
    # the digest moves with a counted file and not with an excluded one
    assert real("annrepro", {"cli.py"}) != real("annrepro", {"cli.py", "metrics.py"})
    assert real("annrepro", {"cli.py", "nonexistent.py"}) == real("annrepro", {"cli.py"})


def _mark_stale(tmp_path, spec, wall_s=None):
    import json

    path = tmp_path / "ref" / "tiny" / f"{spec.id}.json"
    prov = json.loads(path.read_text())
    prov["fingerprint"] = "made-by-older-code"
    if wall_s is not None:
        prov["wall_s"] = wall_s
    path.write_text(json.dumps(prov))


def test_plan_lists_stale_references_longest_first_and_missing_on_request(ran, tmp_path):
    from annrepro.reference import plan

    spec, out = ran
    other = find_specs("ccst.table5")[0]
    run_table(other, "tiny", out_dir=out, progress=False)
    save([spec, other], "tiny", out, echo=lambda *_: None)
    assert plan([spec, other], "tiny") == []  # both made by this code
    _mark_stale(tmp_path, spec, wall_s=10.0)
    _mark_stale(tmp_path, other, wall_s=99.0)
    todo = plan([spec, other], "tiny")
    assert [s.id for s, _, _ in todo] == ["ccst.table5", "ccst.table2"]
    assert todo[0][1].startswith("stale") and todo[0][2] == 99.0
    never = find_specs("ccst.table4")[0]
    assert plan([never], "tiny") == []
    assert plan([never], "tiny", missing=True) == [(never, "missing", None)]


def test_groups_make_one_job_of_tables_that_share_fits():
    from annrepro.reference import _jobs_of, _makespan

    a, b, c = (find_specs(f"ccst.table{i}")[0] for i in (2, 3, 5))
    todo = [(a, "stale", 60.0), (b, "stale", 50.0), (c, "stale", 30.0)]
    jobs = _jobs_of(todo, ["ccst.table3+ccst.table5", "kdindex.table9+kdindex.table10"])
    assert [[s.id for s in m] for m, _ in jobs] == [["ccst.table3", "ccst.table5"], ["ccst.table2"]]
    assert jobs[0][1] == 80.0
    assert _makespan([80.0, 60.0], 2) == 80.0 and _makespan([80.0, 60.0], 1) == 140.0


def test_regenerate_remakes_a_stale_reference_and_is_resumable(ran, tmp_path, monkeypatch):
    """The CLI runs the stale table in its own process at 1 thread, saves it, and a second call
    has nothing left to do."""
    from annrepro.reference import plan

    spec, out = ran
    save([spec], "tiny", out, echo=lambda *_: None)
    _mark_stale(tmp_path, spec)
    assert plan([spec], "tiny")
    fresh = tmp_path / "regen" / "tiny"
    args = ["reference", "regenerate", "--scale", "tiny", "--tables", spec.id]
    assert main([*args, "--dry-run"]) == 0 and plan([spec], "tiny")  # a dry run changes nothing
    assert main([*args, "--results", str(fresh)]) == 0
    assert plan([spec], "tiny") == []
    assert (fresh / "logs" / f"{spec.id}.log").is_file()
    ref = load_reference(spec, "tiny")
    assert ref.provenance.get("threads") == 1
    assert check([spec], "tiny", out) == []  # the same numbers as the run it replaced
    assert main([*args, "--results", str(fresh)]) == 0  # nothing stale: nothing run


def test_regenerate_refuses_a_results_folder_of_another_scale(ran, tmp_path):
    spec, out = ran
    save([spec], "tiny", out, echo=lambda *_: None)
    _mark_stale(tmp_path, spec)
    args = ["reference", "regenerate", "--scale", "tiny", "--tables", spec.id]
    assert main([*args, "--results", str(tmp_path / "small")]) == 2


def test_save_and_check_still_need_tables(capsys):
    assert main(["reference", "check", "--scale", "tiny"]) == 2
    assert "--tables is required" in capsys.readouterr().err


def test_the_cpu_kind_is_each_references_own(ran, tmp_path):
    """A reference names the CPU kind it was made on: a moved cell of one made on another kind
    is a warning, whatever the folder's MACHINE.txt (written once, for older runs) says."""
    import json

    from annrepro.reference import machine_kind, made_on

    spec, out = ran
    save([spec], "tiny", out, echo=lambda *_: None)
    stamp = tmp_path / "ref" / "tiny" / "MACHINE.txt"
    stamp.write_text("an older machine\n")
    save([spec], "tiny", out, echo=lambda *_: None)
    assert stamp.read_text() == "an older machine\n"  # not rewritten by a later save
    assert made_on(load_reference(spec, "tiny")) == machine_kind()

    def bump(rows):
        for r in rows:
            if not spec.columns[r["column"]].is_timing:
                r["measured"] = str(float(r["measured"]) + 50.0)
                return

    _edit_reference(tmp_path, spec, bump)
    assert check([spec], "tiny", out)  # made here: a moved cell is a problem
    path = tmp_path / "ref" / "tiny" / f"{spec.id}.json"
    prov = json.loads(path.read_text())
    prov["machine"]["kind"] = "GenuineIntel | another CPU | avx512f"
    path.write_text(json.dumps(prov))
    warned = []
    assert check([spec], "tiny", out, warn=warned.append) == []
    assert any("another CPU kind" in w for w in warned)
    del prov["machine"]["kind"]  # a run from before the kind was recorded: MACHINE.txt decides
    path.write_text(json.dumps(prov))
    stamp.write_text(machine_kind() + "\n")
    assert check([spec], "tiny", out)


def test_reproduce_in_parallel_jobs(tmp_path, monkeypatch, capsys):
    """`reproduce --jobs 2`: each paper's tables in one process, two at a time, one report."""
    from annrepro.tables.runner import load_run

    monkeypatch.setenv("ANNREPRO_RESULTS", str(tmp_path / "results"))
    ids = "ccst.table2,ccst.table5,kdindex.table6"
    assert main(["reproduce", "--scale", "tiny", "--tables", ids, "--jobs", "2"]) == 0
    out = tmp_path / "results" / "tiny"
    for spec in find_specs(ids):
        run = load_run(spec, "tiny", out)
        assert run is not None and run.error is None and run.provenance["threads"] == 1
    assert sorted(p.name for p in (out / "logs").iterdir()) == [
        "ccst.table2+1.log",
        "kdindex.table6.log",
    ]
    assert (tmp_path / "results" / "REPORT.md").is_file()
    assert capsys.readouterr().out.count("done: ") == 2


@pytest.mark.parametrize(("n_work", "jobs", "preset", "want"), [
    (1, 2, None, "2"), (1, 3, None, "3"), (2, 4, None, "2"), (3, 2, None, None), (1, 2, "1", "1"),
])  # fmt: skip
def test_spare_processes_go_to_a_lone_ladder(tmp_path, monkeypatch, n_work, jobs, preset, want):
    """Fewer jobs than --jobs: each gets jobs // n of the processes for its ladder's runs
    (ANNREPRO_LADDER_JOBS), unless the user set it."""
    import subprocess

    from annrepro.reference import run_jobs

    if preset is None:
        monkeypatch.delenv("ANNREPRO_LADDER_JOBS", raising=False)
    else:
        monkeypatch.setenv("ANNREPRO_LADDER_JOBS", preset)
    seen = []

    class Done:
        returncode = 0

        def __init__(self, cmd, env, **kw):
            seen.append(env.get("ANNREPRO_LADDER_JOBS"))

        def poll(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", Done)
    spec = find_specs("ccst.ladder")[0]
    work = [([spec], None)] * n_work
    assert run_jobs(work, "tiny", tmp_path / "tiny", jobs, echo=lambda _: None, poll_s=0) == 0
    assert seen == [want] * n_work


def test_finished_pieces_outlast_a_session(tmp_path, monkeypatch):
    """`keep` copies a ladder's finished runs into results-reference/<scale>/<table>/runs/; put
    back into an empty results folder (as regenerate does), the ladder computes nothing again."""
    import annrepro.evaluate as evaluate
    from annrepro.cli import main
    from annrepro.ladder import run_ladders
    from annrepro.reference import keep, restore_points
    from annrepro.testing import FakeContext, SyntheticDataset

    monkeypatch.setenv("ANNREPRO_REFERENCE", str(tmp_path / "ref"))
    spec = find_specs("catalyzer.ladder")[0]
    spec.raw = {**spec.raw, "ladders": [{
        "id": "pq", "dataset": "BigAnn1M", "better": "PQ8x4np", "worse": "PQ2x4np",
        "column": "1-recall@10", "budget": "ntrain",
    }]}  # fmt: skip
    ds = SyntheticDataset(d=16, nb=300, nq=40, nt=400, seed=2)

    def ladder(out):
        ctx = FakeContext(spec, {"BigAnn1M": ds}, out_dir=out, n_seeds=1, k=10)
        ctx.params["values"] = {"pq": [200, 400]}
        return [r["margin"] for r in run_ladders(spec, ctx)]

    session1, session2 = tmp_path / "s1" / "tiny", tmp_path / "s2" / "tiny"
    first = ladder(session1)
    assert keep([spec], "tiny", session1, echo=lambda *_: None) == 4  # 2 methods x 2 rungs
    kept = tmp_path / "ref" / "tiny" / spec.id / "runs"
    assert len(list(kept.glob("*.json"))) == 4
    assert keep([spec], "tiny", session1, echo=lambda *_: None) == 0  # nothing new
    assert restore_points([spec], "tiny", session2, echo=lambda *_: None) == 4
    calls = []
    real = evaluate.run_method
    monkeypatch.setattr(evaluate, "run_method", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert ladder(session2) == first and calls == []
    assert main(["reference", "keep", "--scale", "tiny"]) == 2  # --tables is required


def test_save_keeps_a_finished_tables_pieces(ran, tmp_path):
    spec, out = ran
    pieces = out / spec.id / "runs"
    pieces.mkdir(parents=True)
    (pieces / "0123abcd.json").write_text('{"1-recall@10": 0.5}')
    save([spec], "tiny", out, echo=lambda *_: None)
    assert (tmp_path / "ref" / "tiny" / spec.id / "runs" / "0123abcd.json").is_file()


def test_a_deadline_stops_the_running_jobs_and_starts_none_that_would_end_past_it(
    tmp_path, monkeypatch
):
    """run_jobs with a deadline (regenerate --hours): a job whose last wall time would end
    past it is not started; a running one is stopped at it with the processes it started,
    reported as left for another session, not as failed."""
    import os
    import subprocess
    import sys
    import time

    from annrepro.reference import run_jobs

    real = subprocess.Popen
    started, ended, ticks = [], [], []
    child = tmp_path / "child.pid"
    script = (  # a job that starts a worker of its own, as a ladder does, then works on
        "import subprocess, sys, time; "
        "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        f"open({str(child)!r}, 'w').write(str(w.pid)); time.sleep(120)"
    )

    def popen(cmd, **kw):
        started.append(cmd[cmd.index("--tables") + 1])
        return real([sys.executable, "-c", script], **kw)

    monkeypatch.setattr(subprocess, "Popen", popen)
    by_id = {s.id: s for s in find_specs("ccst.table2,ccst.ladder")}
    work = [([by_id["ccst.ladder"]], None), ([by_id["ccst.table2"]], 3600.0)]  # unknown cost first
    left = []
    t0 = time.perf_counter()
    failed = run_jobs(
        work, "tiny", tmp_path / "tiny", 2, echo=lambda _: None, poll_s=0.2,
        deadline=t0 + 3.0, not_done=left, on_tick=ticks.append,
        on_done=lambda members, rc: ended.append((members[0].id, rc)) or (rc == 0, ""),
    )  # fmt: skip
    assert time.perf_counter() - t0 < 60
    assert failed == 0 and started == ["ccst.ladder"]
    assert sorted(left) == ["ccst.ladder", "ccst.table2"]
    assert ended and ended[0][0] == "ccst.ladder" and ended[0][1] != 0 and ticks
    pid = int(child.read_text())

    def gone():  # no such process, or a zombie that nothing reaps yet
        try:
            os.kill(pid, 0)
            stat = Path(f"/proc/{pid}/stat")
            return stat.is_file() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except (ProcessLookupError, FileNotFoundError):
            return True

    for _ in range(50):  # the worker went with its job
        if gone():
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the job's worker process outlived the deadline")


def test_hours_must_be_a_positive_number(capsys):
    assert main(["reference", "regenerate", "--scale", "tiny", "--hours", "0"]) == 2
    assert "not a positive number" in capsys.readouterr().err
