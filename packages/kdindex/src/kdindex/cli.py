"""Command line of the kdindex package.

`kdindex reproduce [OPTIONS]` runs the KDindex tables through the annrepro runner: it is
`annrepro reproduce --tables 'kdindex.*' [OPTIONS]` (a later `--tables kdindex.table2` narrows the
selection). The learned method's own commands (train, evaluate) come later.
"""

from __future__ import annotations

import sys

USAGE = """usage: kdindex reproduce [OPTIONS]

Run the kdindex.* tables (OPTIONS as for `annrepro reproduce`, e.g. --scale tiny|small|full,
--tables kdindex.table2, --seed 0, --threads 1)."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "reproduce":
        from annrepro.cli import reproduce_paper

        return reproduce_paper("kdindex", rest)
    print(f"kdindex: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
