"""Measured results kept with the code: `results-reference/<scale>/` (issue 13).

    annrepro reference save --scale small --tables 'ccst.table2,ccst.table5'
    annrepro reference check --scale small --tables 'ccst.table2,ccst.table5' [--results DIR]
    annrepro reference stale --scale medium [--missing]
    annrepro reference regenerate --scale small --jobs 2 [--group 'ccst.table3+ccst.table5']
    annrepro reference regenerate --scale medium --jobs 2 --hours 2.5     # one session's worth
    annrepro reference keep --scale medium --tables 'ccst.ladder' --results DIR

`save` copies a finished run (`<table>.csv`, `<table>.json` with its provenance: commit,
versions, threads, wall time, fingerprint; and its PNG / CSV artifacts) from the results folder
into `results-reference/<scale>/`, where it is committed like the result tables model zoos
commit. `check` compares a fresh run with the committed one, CI's regression test on real data:

- every measured cell must equal the reference within `cell_tolerance`: the spec column's own
  tolerance, at least `queries` queries' worth for per-query-mean % columns (a fresh machine may
  order floating-point sums differently: 1-2 queries of 100 move, see the tiny snapshots), and
  1e-6 (relative) for the other columns; timing columns are not compared;
- no claim verdict may change (regenerate the reference in the same commit, with the reason),
  except a claim on a timing column (a speed-up on a loaded or another machine; its cells are
  not compared either).
  On another kind of CPU than the reference's (its provenance's `machine.kind`; for runs made
  before it was recorded, the folder's `MACHINE.txt`, written by the first `save`), a moved cell
  or a changed verdict is a warning, not a failure: the BLAS kernels sum in another order there,
  and a network trained for minutes takes another path (the tiny snapshots allow 2 queries on
  another CPU; a small-scale training can move further). Threads are part of the setting: the
  reference and the check both run at 1 thread (`nox -s regression`).

A reference made by other code than HEAD's (its fingerprint differs from the table's current
one) is *stale*: the report marks it so and never mixes it silently with fresh results. The
fingerprint counts the code that computes a table, not the report, the comparison with the
paper, the CLI or this module (annrepro.tables.fingerprint).

`stale` lists the references that HEAD's code no longer made (with `--missing`, also the tables
that have none at that scale) and what they cost when last made; `regenerate` remakes them:
each table (or `--group` of tables that share fits through the run memo, e.g. the CSST of ccst
Tables 3 and 5) runs `annrepro reproduce` at 1 thread in its own process, `--jobs` of them at a
time, the longest (by its recorded wall time) first, and is saved into results-reference/ as
soon as it finishes. It is resumable: a table saved is no longer stale, and a finished run left
in the results folder by an interrupted regeneration is up to date, so reproduce skips it.

A table that runs through finished pieces (annrepro.points: the ladders' and crosspaper's runs, one
file per method, rung and seed) can outlast a session, whose files are gone when it stops: `keep`
copies the pieces finished so far (`<results>/<table>/runs/*.json`) into
`results-reference/<scale>/<table>/runs/` to be committed, and `regenerate` puts the committed
pieces back into the results folder before it runs, so the next session computes only what is
missing (`regenerate` keeps them as they come, so a stopped or failed run loses none).
`regenerate --hours H` plans a session of H hours of wall: it starts no table whose last recorded
wall time would end past it, stops the running ones at it (their finished pieces kept) and says
what is left for the next session. A piece is keyed by everything it depends on (its method,
settings, data, seed and the code that computes it): a piece of other code is never read, only
ignored. `save` keeps a finished table's pieces too, so an edit that stales a ladder without moving
its runs (its assembly, its plot) costs a re-assembly, not the runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import AnnreproError

__all__ = [
    "reference_root",
    "save",
    "check",
    "is_stale",
    "load_reference",
    "cell_tolerance",
    "machine_kind",
    "plan",
    "regenerate",
    "run_jobs",
    "keep",
    "restore_points",
]

POINTS = "runs"  # annrepro.points' folder of a table's finished pieces (ladder, crosspaper)


def machine_kind() -> str:
    """What decides the kernels' summation order: CPU vendor, model and widest SIMD level."""
    vendor = model = ""
    flags: set = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "vendor_id" and not vendor:
                vendor = value.strip()
            elif key == "model name" and not model:
                model = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        import platform

        return f"{platform.machine()} {platform.processor()}".strip()
    simd = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "sse"
    return f"{vendor} | {model} | {simd}"


def reference_root() -> Path:
    """`results-reference/` of the checkout (ANNREPRO_REFERENCE overrides)."""
    import os

    from .paths import repo_root

    env = os.environ.get("ANNREPRO_REFERENCE")
    if env:
        return Path(env)
    root = repo_root()
    if root is None:
        raise AnnreproError(
            "cannot find the checkout's results-reference/ (set ANNREPRO_REFERENCE)"
        )
    return root / "results-reference"


def save(specs, scale: str, results_dir: Path, echo=print) -> list[Path]:
    """Copy each spec's finished run at `scale` into results-reference/<scale>/."""
    from .tables.runner import load_run

    out = reference_root() / scale
    written = []
    out.mkdir(parents=True, exist_ok=True)
    stamp = out / "MACHINE.txt"  # only for runs older than their own machine.kind
    if not stamp.is_file():
        stamp.write_text(machine_kind() + "\n")
    for spec in specs:
        run = load_run(spec, scale, results_dir)
        if run is None:
            raise AnnreproError(f"{spec.id}: no run at {scale} in {results_dir}")
        if run.error:
            raise AnnreproError(f"{spec.id}: its run at {scale} failed ({run.error}): not saved")
        out.mkdir(parents=True, exist_ok=True)
        for ext in (".csv", ".json"):
            src = results_dir / f"{spec.id}{ext}"
            shutil.copyfile(src, out / src.name)
            written.append(out / src.name)
        arts = results_dir / spec.id
        if arts.is_dir():
            dst = out / spec.id
            shutil.rmtree(dst, ignore_errors=True)
            dst.mkdir()
            for f in sorted(arts.iterdir()):
                if f.is_file() and f.suffix in (".png", ".csv", ".json"):
                    shutil.copyfile(f, dst / f.name)
            _copy_points(arts / POINTS, dst / POINTS)
        commit = str(run.provenance.get("git_commit", "?"))[:12]
        echo(f"{spec.id} [{scale}]: saved to {out} (commit {commit})")
    return written


def _copy_points(src: Path, dst: Path) -> tuple[int, int]:
    """Copy the piece files of `src` that `dst` lacks (a piece's name is the hash of its key, so
    one name is one content): (files copied, their bytes)."""
    from .atomic import atomic_write_bytes

    n = size = 0
    if not src.is_dir():
        return n, size
    for f in sorted(src.glob("*.json")):
        out = dst / f.name
        if out.is_file():
            continue
        data = f.read_bytes()
        dst.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, data)
        n, size = n + 1, size + len(data)
    return n, size


def keep(specs, scale: str, results_dir: Path, echo=print) -> int:
    """Copy the finished pieces of each spec's run (finished or not) from `results_dir` into
    results-reference/<scale>/<table>/runs/ (module docstring); returns the files copied."""
    total = 0
    for spec in specs:
        src = Path(results_dir) / spec.id / POINTS
        dst = reference_root() / scale / spec.id / POINTS
        n, size = _copy_points(src, dst)
        total += n
        have = len(list(dst.glob("*.json"))) if dst.is_dir() else 0
        if n or have:
            echo(
                f"{spec.id} [{scale}]: kept {n} new finished piece(s) ({size / 1e6:.1f} MB), "
                f"{have} in {dst}"
            )
    return total


def restore_points(specs, scale: str, results_dir: Path, echo=print) -> int:
    """Put the committed pieces of each spec (results-reference/<scale>/<table>/runs/) into the
    results folder, where its run finds them; returns the files copied."""
    total = 0
    for spec in specs:
        n, _ = _copy_points(
            reference_root() / scale / spec.id / POINTS, Path(results_dir) / spec.id / POINTS
        )
        if n:
            echo(f"  {spec.id}: {n} finished piece(s) from results-reference")
        total += n
    return total


def load_reference(spec, scale: str):
    """The committed run of `spec` at `scale`, or None."""
    from .tables.runner import load_run

    d = reference_root() / scale
    return load_run(spec, scale, d) if (d / f"{spec.id}.json").is_file() else None


def is_stale(spec, run) -> bool:
    """True when the reference was made by other spec / code / data than the current ones."""
    from .tables.runner import fingerprint

    try:
        now = fingerprint(spec, run.scale, int(run.provenance.get("seed", 0)))
    except Exception:  # a data set not at hand: its checksum cannot be read here
        return False
    return run.provenance.get("fingerprint") != now


def cell_tolerance(spec, column: str, nq: int | None, queries: int = 2) -> float:
    """How far a fresh cell may be from the reference (module docstring), in published units."""
    col = spec.columns[column]
    tol = float(col.tol or 0.0)
    if col.unit == "%" and nq:
        return max(tol, queries * 100.0 / nq) + 1e-6
    return tol


def _nq(run, dataset):
    return (run.provenance.get("datasets", {}).get(dataset) or {}).get("nq")


def _data_name(run, dataset):
    return (run.provenance.get("datasets", {}).get(dataset) or {}).get("name")


def check(specs, scale: str, results_dir: Path, warn=print) -> list[str]:
    """Problems of the fresh runs in `results_dir` against the committed references (empty: ok);
    verdict changes on another CPU kind go to `warn` instead."""
    from .tables.compare import compare_run
    from .tables.runner import load_run

    stamp = reference_root() / scale / "MACHINE.txt"
    folder_kind = stamp.read_text().strip() if stamp.is_file() else None
    here = machine_kind()
    problems = []
    for spec in specs:
        ref = load_reference(spec, scale)
        if ref is None:
            problems.append(f"{spec.id} [{scale}]: no reference in {reference_root() / scale}")
            continue
        same_machine = made_on(ref, folder_kind) == here
        new = load_run(spec, scale, results_dir)
        if new is None or new.error:
            why = "no fresh run" if new is None else f"the fresh run failed: {new.error}"
            problems.append(f"{spec.id} [{scale}]: {why}")
            continue
        other_data = {
            name
            for name in ref.provenance.get("datasets", {})
            if _data_name(new, name) not in (None, _data_name(ref, name))
        }
        for name in sorted(other_data):
            warn(
                f"warning: {spec.id} [{scale}] {name}: measured on {_data_name(new, name)}, the "
                f"reference on {_data_name(ref, name)}; its cells are not compared"
            )
        for key, (v_ref, _) in ref.measured.items():
            dataset, row, column = key
            if column not in spec.columns or spec.columns[column].is_timing:
                continue
            if dataset in other_data:
                continue
            if key not in new.measured:
                problems.append(f"{spec.id} [{scale}] {dataset} / {row} / {column}: not produced")
                continue
            v_new = new.measured[key][0]
            tol = cell_tolerance(spec, column, _nq(ref, dataset))
            if abs(v_new - v_ref) > tol + 1e-6 * max(1.0, abs(v_ref)):
                msg = (
                    f"{spec.id} [{scale}] {dataset} / {row} / {column}: {v_new:.6g} vs the "
                    f"reference's {v_ref:.6g} (tolerance {tol:g})"
                )
                if same_machine:
                    problems.append(msg)
                else:
                    warn(f"warning (another CPU kind than the reference's): {msg}")
        verdicts_ref = {c.claim.id: c for c in compare_run(spec, ref).claims}
        for c in compare_run(spec, new).claims:
            if spec.columns[c.claim.column].is_timing:  # speed claims move with the machine's load
                continue
            if c.claim.dataset in other_data:
                continue
            old = verdicts_ref.get(c.claim.id)
            if old is not None and old.ours != c.ours:
                msg = (
                    f"{spec.id} [{scale}] claim {c.claim.id!r}: {c.ours} now, {old.ours} in the "
                    "reference (regenerate the reference in the same commit, saying why)"
                )
                if same_machine:
                    problems.append(msg)
                else:
                    warn(f"warning (another CPU kind than the reference's): {msg}")
    return problems


def made_on(run, folder_kind: str | None = None) -> str | None:
    """The CPU kind a run was made on: its provenance's, else its folder's MACHINE.txt."""
    return (run.provenance.get("machine") or {}).get("kind") or folder_kind


def summary(specs, scale: str) -> list[tuple]:
    """[(spec, reference run or None, stale)] for the report."""
    out = []
    for spec in specs:
        ref = load_reference(spec, scale)
        out.append((spec, ref, ref is not None and is_stale(spec, ref)))
    return out


def plan(specs, scale: str, missing: bool = False) -> list[tuple]:
    """[(spec, why, recorded wall seconds or None)] of the references to remake at `scale`:
    the stale ones ("stale", made by commit ...) and, with `missing`, the tables without one;
    the longest first, those of unknown cost before all (they may be the longest)."""
    todo = []
    for spec, ref, stale in summary(specs, scale):
        if ref is None:
            if missing:
                todo.append((spec, "missing", None))
        elif stale:
            commit = str(ref.provenance.get("git_commit", "?"))[:12]
            wall = ref.provenance.get("wall_s")
            todo.append((spec, f"stale (commit {commit})", float(wall) if wall else None))
    return sorted(todo, key=lambda t: (t[2] is not None, -(t[2] or 0.0), t[0].id))


def _jobs_of(todo, groups) -> list[tuple[list, float | None]]:
    """Group the planned tables into jobs: each `groups` entry ('a+b') that names planned tables
    becomes one job (its cost the sum of theirs), every other table its own; longest first."""
    by_id = {spec.id: (spec, wall) for spec, _, wall in todo}
    jobs, taken = [], set()
    for group in groups:
        ids = [i.strip() for i in group.split("+") if i.strip()]
        unknown = [i for i in ids if i not in by_id and i not in taken]
        members = [i for i in ids if i in by_id and i not in taken]
        if unknown and not members:
            continue  # nothing of this group to remake
        taken.update(members)
        walls = [by_id[i][1] for i in members]
        cost = None if any(w is None for w in walls) else sum(walls)
        jobs.append(([by_id[i][0] for i in members], cost))
    jobs += [([spec], wall) for spec, _, wall in todo if spec.id not in taken]
    return sorted(jobs, key=lambda j: (j[1] is not None, -(j[1] or 0.0), j[0][0].id))


def _makespan(costs, jobs: int) -> float:
    """Wall time of running `costs` longest first on `jobs` workers (unknown costs count 0)."""
    load = [0.0] * max(1, jobs)
    for c in costs:
        i = load.index(min(load))
        load[i] += c or 0.0
    return max(load)


def regenerate(
    specs,
    scale: str,
    results_dir: Path,
    jobs: int = 1,
    groups=(),
    missing: bool = False,
    dry_run: bool = False,
    echo=print,
    poll_s: float = 2.0,
    hours: float | None = None,
) -> int:
    """Remake the planned references (module docstring): returns the number of failed jobs.
    With `hours`, stop at that much wall (a session's length): start no job whose last
    recorded wall time would end past it, stop the running ones at it; the finished runs of a
    ladder or crosspaper are kept in results-reference/ as they come, whatever stops them."""
    import time

    todo = plan(specs, scale, missing)
    work = _jobs_of(todo, groups)
    if not work:
        echo(f"every reference at {scale} is up to date ({len(specs)} table(s) looked at)")
        return 0
    why = {spec.id: w for spec, w, _ in todo}
    for members, cost in work:
        walls = "?" if cost is None else f"{cost / 60:.1f} min"
        names = " + ".join(f"{s.id} [{why[s.id]}]" for s in members)
        echo(f"  {names}: last made in {walls}")
    known = [c for _, c in work if c is not None]
    echo(
        f"{len(work)} job(s) at {scale}, {jobs} at a time: {sum(known) / 3600:.1f} core-h as last "
        f"made, about {_makespan(known, jobs) / 3600:.1f} h of wall"
        + (f" and {len(work) - len(known)} of unknown cost" if len(known) < len(work) else "")
    )
    if dry_run:
        return 0
    restore_points([s for members, _ in work for s in members], scale, Path(results_dir), echo)

    def keep_running(members):
        keep(members, scale, Path(results_dir), echo=lambda *_: None)

    def save_each(members, returncode):
        saved = []
        keep_running(members)  # a failed or stopped ladder's finished runs, for the next session
        for spec in members:
            try:
                save([spec], scale, Path(results_dir), echo=lambda *_: None)
                saved.append(spec.id)
            except AnnreproError as e:
                echo(f"not saved: {e}")
        ok = returncode == 0 and len(saved) == len(members)
        return ok, f"saved {', '.join(saved) or 'nothing'}"

    t_start = time.perf_counter()
    deadline = None if hours is None else t_start + 3600.0 * float(hours)
    left: list = []
    failed = run_jobs(
        work, scale, results_dir, jobs, on_done=save_each, echo=echo, poll_s=poll_s,
        deadline=deadline, on_tick=keep_running, not_done=left,
    )  # fmt: skip
    took = (time.perf_counter() - t_start) / 3600
    done = len(work) - failed - len(left)
    echo(
        f"regenerated {done} of {len(work)} job(s) at {scale} in {took:.2f} h"
        + (f"; {len(left)} left for another session ({', '.join(left)})" if left else "")
    )
    return failed


def run_jobs(
    work,
    scale: str,
    results_dir: Path,
    jobs: int,
    threads: int = 1,
    extra=(),
    on_done=None,
    echo=print,
    poll_s: float = 2.0,
    deadline: float | None = None,
    on_tick=None,
    not_done: list | None = None,
) -> int:
    """Run each job (a list of specs, with its cost) as `annrepro reproduce --tables <its
    tables> --threads <threads>` in its own process, `jobs` at a time in the given order, its
    output in `results_dir/logs/<first table>[+N].log`; `on_done(specs, exit code) -> (ok,
    note)` runs as each one ends, `on_tick(specs)` for each running job at every poll. Fewer
    jobs than `jobs` share the spare processes through ANNREPRO_LADDER_JOBS (a ladder table
    computes its runs in that many; annrepro.ladder). With `deadline` (a time.perf_counter()
    time): a job of known cost that would end past it is not started, and the running ones
    are stopped at it (on_done gets their exit code); their names go to `not_done`.
    Returns the number of failed jobs (not those left for the deadline); an interrupt stops
    them, each with the processes it started (a ladder's workers)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    def stop(proc):
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the ladder's workers too
        except (ProcessLookupError, PermissionError, AttributeError):
            proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError, AttributeError):
                proc.kill()
            proc.wait()

    left = not_done if not_done is not None else []

    root = Path(results_dir)
    if root.name != scale:
        raise AnnreproError(f"{root}: the results folder of a {scale} run ends in /{scale}")
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, ANNREPRO_RESULTS=str(root.parent))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    if "ANNREPRO_LADDER_JOBS" not in env and len(work) < jobs:  # spare slots: a ladder's runs
        env["ANNREPRO_LADDER_JOBS"] = str(max(1, jobs // max(1, len(work))))  # in processes
    pending, running, failed = list(work), [], 0
    try:
        while pending or running:
            while pending and len(running) < max(1, jobs):
                members, cost = pending.pop(0)
                name = "+".join(s.id for s in members)
                now = time.perf_counter()
                if deadline is not None and (now >= deadline or (cost and now + cost > deadline)):
                    left.append(name)
                    last = f"last made in {cost / 60:.1f} min, " if cost else ""
                    mins = max(0.0, deadline - now) / 60
                    echo(f"not started: {name} ({last}{mins:.1f} min left)")
                    continue
                short = members[0].id + (f"+{len(members) - 1}" if len(members) > 1 else "")
                log = open(logs / f"{short}.log", "w")
                cmd = [sys.executable, "-m", "annrepro", "reproduce", "--scale", scale,
                       "--tables", ",".join(s.id for s in members), "--threads", str(threads),
                       "--no-progress", *extra]  # fmt: skip
                proc = subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
                )
                running.append((proc, members, name, log, time.perf_counter()))
                echo(f"started {name} ({threads} thread(s), log {logs / (short + '.log')})")
            time.sleep(poll_s)
            late = deadline is not None and time.perf_counter() >= deadline
            for item in list(running):
                proc, members, name, log, t0 = item
                if on_tick is not None:
                    on_tick(members)
                stopped = late and proc.poll() is None
                if stopped:
                    stop(proc)
                    left.append(name)
                if proc.poll() is None:
                    continue
                running.remove(item)
                log.close()
                ok, note = (proc.returncode == 0, "")
                if on_done is not None:
                    ok, note = on_done(members, proc.returncode)
                failed += not ok and not stopped
                status = (
                    "stopped at the deadline" if stopped else
                    "done" if ok else f"FAILED (exit {proc.returncode}, see its log)"
                )  # fmt: skip
                echo(
                    f"{status}: {name} in {(time.perf_counter() - t0) / 60:.1f} min"
                    + (f"; {note}" if note else "")
                    + f"; {len(pending)} job(s) waiting, {len(running)} running"
                )
    finally:
        for proc, *_, log, _t0 in running:  # interrupted: no orphan keeps computing
            stop(proc)
            log.close()
    return failed
