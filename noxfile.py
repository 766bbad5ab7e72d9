"""Orchestration only: each session installs what it needs and calls a package CLI.

    nox -s reproduce                         # every table at the `small` scale -> results/REPORT.md
    nox -s reproduce -- --scale tiny --tables 'ccst.*'
    nox -s tests                             # the test suite (default session)
    nox -s references -- --scale small       # remake the stale committed runs (hours)

Data: ANNREPRO_DATA if set, else ../shared/data beside the checkout if it exists, else the
small stand-ins are fetched (checksum-verified) into the user cache on first use.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_venv = "yes"  # installs are re-checked each run; pip skips what is satisfied
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent
PAPERS = ("catalyzer", "ccst", "kdindex")
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))
# CI's regression test on real data (`nox -s regression`): fast `small` tables (about 5-6 min on
# 2 cores), recomputed and checked against their committed runs in results-reference/small.
REGRESSION_TABLES = (
    "catalyzer.text,ccst.table2,ccst.table4,ccst.table5,kdindex.table6,kdindex.table7"
)


def _env() -> dict:
    env = {}
    if "ANNREPRO_DATA" not in os.environ:
        shared = ROOT.parent / "shared" / "data"
        if shared.is_dir():
            env["ANNREPRO_DATA"] = str(shared)
        else:  # fresh machine: fetch the stand-ins on first use
            env["ANNREPRO_AUTO_FETCH"] = "1"
    return env


def _install(session, *papers, extra=()):
    # torch first and pinned: the CPU wheel from PIP_FIND_LINKS, never the CUDA build.
    session.install("torch==2.13.0", *CONSTRAINTS)
    pkgs = ["-e", str(ROOT / "shared[fetch,plots,dask]")]
    for p in papers:
        pkgs += ["-e", str(ROOT / "packages" / p)]
    session.install(*pkgs, *extra, *CONSTRAINTS)


@nox.session
def tests(session):
    """Unit tests, bad-input tests, and every table end to end at `tiny` against snapshots."""
    _install(session, *PAPERS, extra=("pytest",))
    session.run("pytest", *session.posargs, env=_env())


@nox.session
def fast(session):
    """The edit-test loop: the unit and bad-input tests, without the `slow` tiny-table runs."""
    _install(session, *PAPERS, extra=("pytest",))
    session.run("pytest", "-m", "not slow", *session.posargs, env=_env())


@nox.session
def reproduce(session):
    """Every registered table (default scale `small`), then results/REPORT.md."""
    _install(session, *PAPERS)
    session.run("annrepro", "reproduce", *session.posargs, env=_env())


@nox.session
def regression(session):
    """The fast `small` tables (REGRESSION_TABLES) recomputed from scratch on ../shared/data and
    compared with results-reference/small: every cell within its column's tolerance (and 2
    queries' worth), no claim verdict changed. After an intended change: rerun them and
    `annrepro reference save --scale small --tables ...` in the same commit, saying why."""
    _install(session, *PAPERS)
    out = Path(session.create_tmp()) / "regression-results"
    # 1 thread, as the reference was made: the thread count changes float sums, hence trained nets
    env = {**_env(), "ANNREPRO_RESULTS": str(out), "OMP_NUM_THREADS": "1"}
    tables = ["--tables", REGRESSION_TABLES]
    session.run("annrepro", "reproduce", "--scale", "small", *tables, "--force", "--no-progress",
                "--threads", "1", env=env)  # fmt: skip
    session.run("annrepro", "reference", "check", "--scale", "small", *tables, "--results",
                str(out / "small"), env=env)  # fmt: skip


@nox.session
def ladder(session):
    """The budget ladders (`<paper>.ladder`, default scale small): not in CI, about 1-2 hours on
    2 cores; resumable (each finished run is kept under results/<scale>/<table>/runs)."""
    _install(session, *PAPERS)
    jobs = [] if "--jobs" in session.posargs else ["--jobs", "2"]  # a ladder per core, 1 thread
    session.run(
        "annrepro", "reproduce", "--tables", "*.ladder", *jobs, *session.posargs, env=_env()
    )


# the ccst tables that train the same CSST (same data, factor and ccst_* params: ccst.experiments'
# run memo) run in one process: at medium the factor-4 models of Tables 1 / 3 / 4 / 5 take about
# 30 min of one core, trained once instead of four times
CCST_SHARED_FITS = "ccst.table1+ccst.table3+ccst.table4+ccst.table5"


@nox.session
def references(session):
    """Remake the stale results-reference/ runs (`annrepro reference regenerate`; default scale
    small, 2 jobs of 1 thread, the CSST of ccst Tables 1, 3, 4 and 5 shared): hours, not in CI;
    resumable, each table saved as it finishes, a ladder's committed finished runs put back
    first (`annrepro reference keep`). `nox -s references -- --scale medium --dry-run` prints
    the plan and its cost as last measured."""
    _install(session, *PAPERS)
    args = list(session.posargs)
    if "--scale" not in args:
        args += ["--scale", "small"]
    if "--jobs" not in args:
        args += ["--jobs", "2"]
    session.run(
        "annrepro", "reference", "regenerate", "--group", CCST_SHARED_FITS, *args,
        env=_env(),
    )  # fmt: skip


def _paper_session(paper):
    def run(session):
        _install(session, paper)  # only annrepro and this paper: proves it installs alone
        session.run(paper, "reproduce", *session.posargs, env=_env())

    run.__doc__ = f"The {paper} tables only, in a venv with only annrepro and {paper}."
    return run


for _p in PAPERS:
    nox.session(name=f"reproduce-{_p}")(_paper_session(_p))


@nox.session
def reference(session):
    """The authors' released catalyzer protocol on sift-10K (`catalyzer reference-run`; 160
    epochs by default: hours on 2 cores). E.g. nox -s reference -- --seeds 0 1 2 --threads 2"""
    _install(session, "catalyzer")
    session.run("catalyzer", "reference-run", *session.posargs, env=_env())


@nox.session
def report(session):
    """Rewrite results/REPORT.md from the results on disk (no computation)."""
    _install(session)
    session.run("annrepro", "report", *session.posargs)


@nox.session
def lint(session):
    """ruff check and ruff format --check over the code and the READMEs' code blocks (CI)."""
    session.install("ruff", *CONSTRAINTS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def bench(session):
    """Benchmarks, each printing ratios measured side by side in one run with its thread counts
    (run on an idle machine): IO and ground truth against bare numpy / faiss; KDindex search
    against faiss IndexPQ / IndexIVFPQ; catalyzer epochs (plain vs fast step); CCST; and the
    per-table wall times of the tiny reproduction. `nox -s bench -- shared` runs one of them."""
    _install(session, *PAPERS, extra=("matplotlib",))
    which = session.posargs or ["shared", "kdindex", "catalyzer", "ccst", "tables"]
    env = _env()
    if "shared" in which:
        session.run("python", "benchmarks/bench_shared.py", env=env)
    if "kdindex" in which:
        session.run("python", "benchmarks/bench_kdindex.py", "--quick", env=env)
    if "catalyzer" in which:
        session.run("python", "benchmarks/bench_catalyzer.py", "--epochs", "1", env=env)
    if "ccst" in which:
        session.run("python", "benchmarks/bench_ccst.py", "--quick", env=env)
    if "tables" in which:  # the per-table timing summary closes the run
        session.run("annrepro", "reproduce", "--scale", "tiny", "--force", "--no-progress", env=env)
