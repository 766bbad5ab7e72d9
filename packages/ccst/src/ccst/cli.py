"""`ccst` command line: `ccst reproduce [--scale tiny|small|full] [annrepro options]`.

A thin wrapper over `annrepro reproduce --tables 'ccst.*'`; every option after `reproduce` is
passed on to annrepro unchanged.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ccst", description="Reproduce the tables of the CCST paper."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "reproduce",
        help="run every ccst.* table (options such as --scale are passed to annrepro)",
        add_help=False,
    )
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)

    from annrepro.cli import main as annrepro_main

    if args.command == "reproduce":
        return annrepro_main(["reproduce", "--tables", "ccst.*", *rest])
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
