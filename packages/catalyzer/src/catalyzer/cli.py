"""Command line of the catalyzer package.

`catalyzer reproduce [OPTIONS]` runs the catalyzer tables through the annrepro runner: it is
`annrepro reproduce --tables 'catalyzer.*' [OPTIONS]` (a later `--tables catalyzer.table1`
narrows the selection). The learned catalyzer's own commands (train, evaluate) come later.
"""

from __future__ import annotations

import sys

USAGE = """usage: catalyzer reproduce [OPTIONS]

Run the catalyzer.* tables (OPTIONS as for `annrepro reproduce`, e.g. --scale tiny|small|full,
--tables catalyzer.table1)."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "reproduce":
        from annrepro.cli import main as annrepro_main

        return annrepro_main(["reproduce", "--tables", "catalyzer.*", *rest])
    print(f"catalyzer: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
