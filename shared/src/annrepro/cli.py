"""`annrepro` command line: reproduce tables, write the report, manage data sets.

annrepro reproduce --scale small --tables 'catalyzer.*'
annrepro report
annrepro tables                      # list tables and which have producers
annrepro data list | info NAME | fetch NAME | check NAME
annrepro groundtruth --base xb.fvecs --queries xq.fvecs -k 100 --out gt.ivecs [--engine dask]
annrepro recall --results I.ivecs --gt gt.ivecs [-k 100]
annrepro reference save|check --scale small --tables 'ccst.table5'   # results-reference/
annrepro reference keep --scale medium --tables 'ccst.ladder'  # a long run's finished pieces
annrepro bench --base xb.fvecs --queries xq.fvecs [--learn xt.fvecs] [--gt gt.ivecs] \
    --methods 'catalyzer24,zn_79;kdindex,PQ8x256;OPQ8_64,PQ8' -k 100 --metric l2 --out DIR

Bad input (a file, an option, a variable, a registry entry) ends in one line
`annrepro: error: <what>: <problem>` on stderr and exit code 2 (`run_cli`).
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from .datasets import DatasetError, get_dataset, list_datasets, registry
from .errors import AnnreproError
from .tables.spec import SCALES, SpecError

__all__ = [
    "main",
    "reproduce_paper",
    "run_cli",
    "ArgumentParser",
    "positive_int",
    "UsageError",
    "check_outputs",
    "announce_threads",
]


class UsageError(AnnreproError):
    """A command line that argparse rejects (unknown option, bad value)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error raises UsageError (one line through `run_cli`) instead of
    printing the usage and exiting. Subparsers made by `add_subparsers` inherit this class."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} -h)")


def positive_int(text: str) -> int:
    """argparse `type=` for counts such as --threads: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        v = None
    if v is None or v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return v


def positive_float(text: str) -> float:
    """argparse `type=` for durations such as --hours: a finite number > 0."""
    import math

    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return v


def check_outputs(*paths) -> None:
    """Raise InputError for an output whose folder cannot be made or written: checked before
    any work, so a training that cannot save is found out at once, not after an hour."""
    from pathlib import Path

    from .errors import InputError
    from .paths import folder_problem

    for path in paths:
        problem = folder_problem(Path(path).parent)
        if problem:
            raise InputError(f"{path}: {problem}")


def announce_threads(prog: str, requested: int | None) -> int:
    """--threads, else ANNREPRO_THREADS / OMP_NUM_THREADS, else the cores; said on stderr."""
    from .threads import default_threads

    n = requested or default_threads()
    print(f"{prog}: {n} thread(s)", file=sys.stderr)
    return n


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# the table engine's errors are bad input too (SpecError is not an AnnreproError subclass yet)
_INPUT_ERRORS = (AnnreproError, SpecError)


def run_cli(prog: str, main_fn, argv=None) -> int:
    """Run `main_fn(argv) -> int` as the command `prog`.

    Bad input, i.e. any AnnreproError (VectorFileError, DatasetError, GroundTruthError,
    InputError, SettingError, UsageError), a table SpecError, or an OSError that names a file,
    becomes one line `<prog>: error: <message>` on stderr and exit code 2, without a
    traceback. Anything else is a bug and propagates with its traceback.
    """
    try:
        return main_fn(argv)
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
        import os

        try:  # no "Exception ignored ... BrokenPipeError" when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 0
    except _INPUT_ERRORS as e:
        msg = str(e)
    except OSError as e:
        if e.filename is None:
            raise
        names = f"{e.filename} -> {e.filename2}" if e.filename2 else str(e.filename)
        msg = f"{names}: {e.strerror or type(e).__name__}"
    print(f"{prog}: error: {_one_line(msg)}", file=sys.stderr)
    return 2


def _selected(specs, pattern: str) -> list:
    """Drop on-demand tables (`on_demand = true` in [table]: the budget ladders, hours of
    training) unless a pattern names them beyond "*" or "<paper>.*" (e.g. '*.ladder')."""
    import fnmatch

    pats = [p.strip() for p in pattern.split(",") if p.strip()] or ["*"]
    keep, skipped = [], []
    for spec in specs:
        wide = all(
            p == "*" or p == f"{spec.paper}.*" for p in pats if fnmatch.fnmatchcase(spec.id, p)
        )
        if spec.raw.get("table", {}).get("on_demand") and wide:
            skipped.append(spec.id)
        else:
            keep.append(spec)
    if skipped:
        print(
            f"not run (on demand: --tables '{','.join(skipped)}' or nox -s ladder): "
            + ", ".join(skipped),
            file=sys.stderr,
        )
    return keep


def _reproduce(args) -> int:
    from .paths import results_root
    from .tables import find_specs, write_report
    from .tables.reproduce import reproduce
    from .threads import default_threads

    # settings first: a bad ANNREPRO_THREADS / ANNREPRO_RESULTS fails before any table runs
    if args.threads is None:
        default_threads()
    out_dir = results_root(writable=True) / args.scale
    specs = _selected(find_specs(args.tables), args.tables)
    if args.jobs > 1:
        return _reproduce_in_jobs(specs, args, out_dir)
    done = reproduce(
        specs,
        args.scale,
        seed=args.seed,
        n_threads=args.threads,
        out_dir=out_dir,
        progress=not args.no_progress,
        force=args.force,
        echo=lambda line: print(line, flush=True),
    )
    path = write_report()
    print(f"report: {path}")
    failed = sum(status == "failed" for _, status, *_ in done)
    if failed:
        print(f"{failed} of {len(specs)} tables failed (see the report)", file=sys.stderr)
    return 1 if failed else 0


def _reproduce_in_jobs(specs, args, out_dir) -> int:
    """`reproduce --jobs N`: the tables of one paper in one process (they share fits through
    the run memo: the teacher HNSW, the CSST of Tables 3 and 5), each on-demand table (a
    ladder) in its own, N processes at a time at --threads each (default 1), the longest by
    its last run first; then one report."""
    from .reference import load_reference, run_jobs
    from .tables import write_report
    from .tables.runner import load_run

    def last_wall(spec):
        run = load_run(spec, args.scale, out_dir) or load_reference(spec, args.scale)
        wall = run.provenance.get("wall_s") if run is not None else None
        return float(wall) if wall else None

    groups: dict = {}
    for spec in specs:
        alone = bool(spec.raw.get("table", {}).get("on_demand"))
        groups.setdefault(spec.id if alone else spec.paper, []).append(spec)
    work = []
    for members in groups.values():
        walls = [last_wall(s) for s in members]
        work.append((members, None if None in walls else sum(walls)))
    work.sort(key=lambda j: (j[1] is not None, -(j[1] or 0.0), j[0][0].id))
    extra = ["--seed", str(args.seed)] + (["--force"] if args.force else [])
    failed = run_jobs(
        work, args.scale, out_dir, args.jobs, threads=args.threads or 1, extra=extra,
        echo=lambda line: print(line, flush=True),
    )  # fmt: skip
    print(f"report: {write_report()}")
    if failed:
        print(f"{failed} of {len(work)} jobs failed (see their logs)", file=sys.stderr)
    return 1 if failed else 0


def _report(args) -> int:
    from .paths import results_root
    from .tables import write_report
    from .tables.report import collect

    results_root(writable=True)  # REPORT.md goes there: a file or read-only folder is refused
    for c in collect(args.tables):
        print(c.summary_line())
    print(f"report: {write_report(args.tables)}")
    return 0


def _tables(args) -> int:
    from .tables import find_specs, producers

    for spec in find_specs(args.tables):
        has = spec.id in producers(spec.paper)
        scales = ",".join(s for s in SCALES if s in spec.scales)
        print(
            f"{spec.id:24s} {'producer' if has else 'no producer':12s} [{scales}] "
            f"{len(spec.cells)} cells, {len(spec.claims)} claims  {spec.source}: {spec.title}"
        )
    return 0


def _data(args) -> int:
    if args.action == "list":
        reg = registry()
        for name in list_datasets():
            e = reg["datasets"][name]
            print(
                f"{name:22s} {e.get('scale', ''):6s} {e.get('metric', ''):3s} "
                f"{e.get('description', '')}"
            )
        return 0
    if not args.name:
        raise DatasetError(f"annrepro data {args.action} needs a data set name")
    if args.action == "fetch":
        from .fetch import fetch_dataset

        for p in fetch_dataset(args.name, force=args.force):
            print(p)
        return 0
    ds = get_dataset(args.name)
    if args.action == "info":
        print(ds.describe())
        return 0
    # "check": re-hash every file (a verified stamp is not trusted here), load, validate, and
    # compare the shipped ground truth
    ds.verify(rehash=True)
    ds.check()
    ds.gt(min(100, ds.nb))
    print(f"{args.name}: ok ({ds.nb} base, {ds.nq} queries, {ds.nt} learn, d={ds.d})")
    return 0


def _groundtruth(args) -> int:
    """Exact top-k of the user's queries over the user's base, single process or on Dask."""
    import time
    from pathlib import Path

    from .groundtruth import knn_exact
    from .vecio import mmap_vectors, read_vectors, write_vectors

    out = Path(args.out)
    outputs = (out, *([Path(args.distances)] if args.distances else []))
    check_outputs(*outputs)
    for path in outputs:
        if path.suffix.lower() not in (".ivecs", ".ibin", ".npy", ".fvecs", ".fbin"):
            raise AnnreproError(f"{path}: unsupported extension (.ivecs/.ibin/.npy)")
    xq = read_vectors(args.queries)
    t0 = time.perf_counter()
    if args.engine == "dask":
        from .distributed import knn_sharded, local_client

        if args.scheduler:
            from distributed import Client

            client = Client(args.scheduler)
        else:
            client = local_client(args.workers, args.max_memory)
        print(f"Dask dashboard: {client.dashboard_link}", flush=True)
        try:
            D, I = knn_sharded(
                xq,
                args.base,
                args.k,
                args.metric,
                client=client,
                shard_rows=args.shard_rows,
                progress=not args.no_progress,
            )
        finally:
            client.close()
    else:
        xb = mmap_vectors(args.base)  # chunked by knn_exact: bases larger than memory work
        D, I = knn_exact(xq, xb, args.k, args.metric, progress=not args.no_progress)
    write_vectors(out, I.astype(np.int32) if out.suffix.lower() != ".npy" else I)
    if args.distances:
        write_vectors(args.distances, D)
    print(
        f"{out}: exact top-{args.k} ({args.metric}) of {len(xq)} queries over {args.base} in "
        f"{time.perf_counter() - t0:.1f} s ({args.engine})"
    )
    return 0


def _recall(args) -> int:
    """Recalls of a result file (ids, nearest first) against a ground-truth file."""
    from .bench import recall_columns
    from .metrics import n_recall_at, one_recall_at
    from .validate import read_ground_truth
    from .vecio import read_vectors

    I = read_vectors(args.results)
    if I.dtype.kind not in "iu":
        raise AnnreproError(f"{args.results}: result ids must be integers, got {I.dtype}")
    I = I.astype(np.int64)
    gt = read_ground_truth(args.gt, args.nb, len(I), 1)
    k = min(args.k or I.shape[1], I.shape[1])
    if args.k and args.k > I.shape[1]:
        raise AnnreproError(
            f"{args.results}: -k {args.k} but the file holds {I.shape[1]} ids per query"
        )
    parts = []
    for name, n, m in recall_columns(k, gt.shape[1]):
        v = one_recall_at(I, gt, m, args.nb) if n == 1 else n_recall_at(I, gt, n, m, args.nb)
        parts.append(f"{name} {v:.4f}")
    if k >= 1 and k not in (1, 10, 100) and gt.shape[1] >= k:
        parts.append(f"{k}-recall@{k} {n_recall_at(I, gt, k, k, args.nb):.4f}")
    print(
        f"{args.results} ({len(I)} queries, {I.shape[1]} ids each) vs {args.gt}: "
        + "  ".join(parts)
    )
    return 0


def _reference(args) -> int:
    """save: copy finished runs into results-reference/<scale>/; check: compare fresh runs with
    them (cells within tolerance, unchanged claim verdicts), exit 1 on a difference."""
    from pathlib import Path

    from .errors import AnnreproError
    from .paths import results_root
    from .reference import check, keep, plan, reference_root, regenerate, save
    from .tables import find_specs

    if args.tables is None and args.action in ("save", "check", "keep"):
        raise AnnreproError(f"reference {args.action}: --tables is required")
    specs = find_specs(args.tables or "*")
    results = Path(args.results) if args.results else results_root() / args.scale
    if args.action == "stale":
        todo = plan(specs, args.scale, missing=args.missing)
        for spec, why, wall in todo:
            last = "" if wall is None else f", last made in {wall / 60:.1f} min"
            print(f"{spec.id} [{args.scale}]: {why}{last}")
        print(f"{len(todo)} of {len(specs)} table(s) to remake at {args.scale}")
        return 0
    if args.action == "regenerate":
        if not args.dry_run:
            results = (
                Path(args.results) if args.results else results_root(writable=True) / args.scale
            )
        return 1 if regenerate(
            specs, args.scale, results, jobs=args.jobs, groups=args.group or (),
            missing=args.missing, dry_run=args.dry_run, hours=args.hours,
        ) else 0  # fmt: skip
    if args.action == "save":
        save(specs, args.scale, results)
        return 0
    if args.action == "keep":
        n = keep(specs, args.scale, results)
        print(f"kept {n} finished piece(s) of {len(specs)} table(s) at {args.scale} from {results}")
        return 0
    problems = check(specs, args.scale, results, warn=lambda m: print(m, file=sys.stderr))
    for p in problems:
        print(p, file=sys.stderr)
    where = reference_root() / args.scale
    if problems:
        print(f"{len(problems)} difference(s) from {where}", file=sys.stderr)
        return 1
    print(f"{len(specs)} table(s) at {args.scale} match {where}")
    return 0


def _bench(args) -> int:
    """Every method of --methods on the user's vectors: bench.csv / .md / .json and two plots."""
    from pathlib import Path

    from .bench import run_bench, write_outputs
    from .methods import parse_overrides, plugin_name
    from .validate import check_same_dim, read_ground_truth
    from .vecio import read_vectors

    out = Path(args.out)
    check_outputs(out / "bench.csv")
    methods = [m.strip() for m in args.methods.split(";") if m.strip()]
    if not methods:
        raise AnnreproError(f"--methods {args.methods!r}: no method given")
    overrides = parse_overrides(args.set)
    unknown = sorted(set(overrides) - {plugin_name(m) for m in methods})
    if unknown:
        raise AnnreproError(f"--set names {unknown}, which none of --methods uses")
    from .threads import set_threads

    set_threads(announce_threads("annrepro bench", args.threads))
    xb, xq = read_vectors(args.base), read_vectors(args.queries)
    xt = read_vectors(args.learn) if args.learn else None
    paths = {"base": args.base, "queries": args.queries}
    roles = {"base": xb, "queries": xq}
    if xt is not None:
        paths["learn"], roles["learn"] = args.learn, xt
    check_same_dim(paths=paths, **roles)
    if args.k > len(xb):
        raise AnnreproError(f"-k {args.k} exceeds the {len(xb)} base vectors of {args.base}")
    gt = None
    if args.gt:
        gt = read_ground_truth(
            args.gt, len(xb), len(xq), min(args.k, 10), xb=xb, xq=xq, metric=args.metric
        )
    if xt is None:
        print("annrepro bench: no --learn: the methods are trained on the base", file=sys.stderr)

    def show(row):
        rec = "  ".join(f"{n} {v:.4f}" for n, v in row.recalls.items())
        print(
            f"{row.method}: {row.bytes_per_vector:g} B/vector  {rec}  "
            f"{row.queries_per_s:.0f} q/s  train {row.train_s:.1f} s  encode {row.encode_s:.1f} s",
            flush=True,
        )

    rows = run_bench(
        xb,
        xq,
        methods,
        args.k,
        args.metric,
        xt=xt,
        gt=gt,
        overrides=overrides,
        repeats=args.repeats,
        on_row=show,
    )
    written = write_outputs(
        rows, out, title=args.title or f"{Path(args.base).name} ({args.metric})"
    )
    print(f"annrepro bench: wrote {', '.join(str(p) for p in written.values())}")
    return 0


def reproduce_paper(paper: str, argv: list[str]) -> int:
    """`<paper> reproduce [OPTIONS]` of a paper package: `annrepro reproduce` on its tables
    (a later `--tables` in OPTIONS narrows the selection)."""
    return main(["reproduce", "--tables", f"{paper}.*", *argv])


def main(argv=None) -> int:
    """`annrepro` (console script): exit code 0, 1 (a table failed) or 2 (bad input)."""
    return run_cli("annrepro", _main, argv)


def _main(argv=None) -> int:
    p = ArgumentParser(
        prog="annrepro", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("reproduce", help="regenerate tables and compare with the papers")
    r.add_argument("--scale", choices=SCALES, default="small")
    r.add_argument("--tables", default="*", help="glob(s) on table ids, comma-separated")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=positive_int, default=None, help="threads for index building")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="processes at once (each paper's tables, or a ladder, in one; --threads each)",
    )
    r.add_argument(
        "--force", action="store_true", help="recompute tables whose results are up to date"
    )
    r.set_defaults(fn=_reproduce)

    rp = sub.add_parser("report", help="(re)write results/REPORT.md from the results on disk")
    rp.add_argument("--tables", default="*")
    rp.set_defaults(fn=_report)

    t = sub.add_parser("tables", help="list the declared tables")
    t.add_argument("--tables", default="*")
    t.set_defaults(fn=_tables)

    d = sub.add_parser("data", help="data sets: list, info, fetch, check")
    d.add_argument("action", choices=("list", "info", "fetch", "check"))
    d.add_argument("name", nargs="?")
    d.add_argument("--force", action="store_true")
    d.set_defaults(fn=_data)

    g = sub.add_parser("groundtruth", help="exact k-NN of your queries over your base")
    g.add_argument("--base", required=True, help=".fvecs/.bvecs/.fbin/.u8bin/.npy")
    g.add_argument("--queries", required=True)
    g.add_argument("-k", "--k", type=positive_int, default=100)
    g.add_argument("--metric", choices=("l2", "ip"), default="l2")
    g.add_argument("--out", required=True, help="ids: .ivecs / .ibin / .npy")
    g.add_argument("--distances", help="also write the distances (.fvecs / .fbin / .npy)")
    g.add_argument("--engine", choices=("single", "dask"), default="single")
    g.add_argument("--scheduler", help="address of a running Dask scheduler (else a local one)")
    g.add_argument("--workers", type=positive_int, help="local Dask workers (default: cores)")
    g.add_argument("--max-memory", help="memory of all local workers together, e.g. 16GB")
    g.add_argument("--shard-rows", type=positive_int, default=1 << 20)
    g.add_argument("--no-progress", action="store_true")
    g.set_defaults(fn=_groundtruth)

    rf = sub.add_parser(
        "reference", help="results-reference/: save finished runs, check fresh ones"
    )
    rf.add_argument("action", choices=("save", "check", "stale", "regenerate", "keep"))
    rf.add_argument("--scale", choices=SCALES, default="small")
    rf.add_argument(
        "--tables", help="glob(s) on table ids, comma-separated (stale / regenerate: all)"
    )
    rf.add_argument("--results", help="results folder of the runs (default: results/<scale>)")
    rf.add_argument("--jobs", type=positive_int, default=1, help="regenerate: tables at once")
    rf.add_argument("--group", action="append", help="regenerate: tables run in one process, 'a+b'")
    rf.add_argument("--missing", action="store_true", help="also tables without a reference")
    rf.add_argument("--dry-run", action="store_true", help="regenerate: print the plan only")
    rf.add_argument(
        "--hours", type=positive_float, help="regenerate: stop at this much wall (a session's)"
    )
    rf.set_defaults(fn=_reference)

    rc = sub.add_parser("recall", help="recalls of a result file against a ground truth file")
    rc.add_argument(
        "--results", required=True, help="ids per query, nearest first (.ivecs/.ibin/.npy)"
    )
    rc.add_argument("--gt", required=True, help="exact ids per query (.ivecs/.ibin/.npy)")
    rc.add_argument("-k", "--k", type=positive_int, default=None, help="results considered")
    rc.add_argument("--nb", type=positive_int, default=None, help="base size (checks id range)")
    rc.set_defaults(fn=_recall)

    b = sub.add_parser("bench", help="any methods on your vectors: recalls, speed, bytes, plots")
    b.add_argument("--base", required=True, help=".fvecs/.bvecs/.fbin/.u8bin/.npy")
    b.add_argument("--queries", required=True)
    b.add_argument("--learn", help="training vectors (default: the base)")
    b.add_argument("--gt", help="ground truth ids (default: computed exactly, cached)")
    b.add_argument(
        "--methods",
        required=True,
        help="';'-separated specs: faiss factory strings (OPQ8_64,PQ8, LSQ8x8, HNSW32,SQ8) or "
        "a paper's method (catalyzer24,zn_79, csst4x,PQ16, kdindex,AQ8x256)",
    )
    b.add_argument("-k", "--k", type=positive_int, default=100)
    b.add_argument("--metric", choices=("l2", "ip"), default="l2")
    b.add_argument("--out", required=True, help="folder for bench.csv, bench.md and the plots")
    b.add_argument(
        "--set",
        action="append",
        metavar="PLUGIN.KEY=VALUE",
        help="a setting of a learned method, e.g. catalyzer.epochs=8 (repeatable)",
    )
    b.add_argument("--repeats", type=positive_int, default=1, help="timed searches (best kept)")
    b.add_argument("--threads", type=positive_int, default=None)
    b.add_argument("--title")
    b.set_defaults(fn=_bench)

    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
