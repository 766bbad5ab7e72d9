"""`annrepro` command line: reproduce tables, write the report, manage data sets.

annrepro reproduce --scale small --tables 'catalyzer.*'
annrepro report
annrepro tables                      # list tables and which have producers
annrepro data list | info NAME | fetch NAME | check NAME
"""

from __future__ import annotations

import argparse
import logging
import sys

from .datasets import DatasetError, get_dataset, list_datasets, registry
from .tables.spec import SCALES, SpecError

__all__ = ["main", "reproduce_paper"]


def _reproduce(args) -> int:
    from .paths import results_root
    from .tables import find_specs, write_report
    from .tables.reproduce import reproduce

    specs = find_specs(args.tables)
    done = reproduce(
        specs,
        args.scale,
        seed=args.seed,
        n_threads=args.threads,
        out_dir=results_root() / args.scale,
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


def _report(args) -> int:
    from .tables import write_report
    from .tables.report import collect

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
    ds.check()  # "check": load, validate, compare the shipped ground truth
    ds.gt(min(100, ds.nb))
    print(f"{args.name}: ok ({ds.nb} base, {ds.nq} queries, {ds.nt} learn, d={ds.d})")
    return 0


def reproduce_paper(paper: str, argv: list[str]) -> int:
    """`<paper> reproduce [OPTIONS]` of a paper package: `annrepro reproduce` on its tables
    (a later `--tables` in OPTIONS narrows the selection)."""
    return main(["reproduce", "--tables", f"{paper}.*", *argv])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="annrepro", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("reproduce", help="regenerate tables and compare with the papers")
    r.add_argument("--scale", choices=SCALES, default="small")
    r.add_argument("--tables", default="*", help="glob(s) on table ids, comma-separated")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=None, help="threads for index building")
    r.add_argument("--no-progress", action="store_true")
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

    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        return args.fn(args)
    except (SpecError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
