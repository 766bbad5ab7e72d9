"""What a table's result depends on: its fingerprint (`fingerprint`), stored in its provenance.

A result on disk (results/, results-reference/) is up to date when its fingerprint is the one
HEAD's code gives: the spec and published CSV, the scale and seed, the data sets' registry
entries and the code that computes the table. The code is every .py file of annrepro and of the
paper's package but those that cannot move the table's numbers (NOT_IN_FINGERPRINT), and the
one interface (INTERFACE: annrepro.methods and the ladders / cross-paper table that run through
it) only for the tables that use it. Too much code counted marks hours of results stale for an
edit of a report; too little hides a change of the numbers: the test of this module reads every
import of the paper tables' code to keep INTERFACE out of it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

from .spec import TableSpec

__all__ = ["fingerprint", "source_digest", "NOT_IN_FINGERPRINT", "INTERFACE"]


def source_digest(module_name: str, exclude=()) -> str:
    """sha256 over the .py files of an installed package (its code version, dirty or not), but
    the files `exclude` names (paths relative to the package, e.g. "tables/report.py")."""
    try:
        mod = importlib.import_module(module_name)
    except ImportError:
        return "absent"
    h = hashlib.sha256()
    root = Path(mod.__file__).parent
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root).as_posix()
        if rel in exclude:
            continue
        h.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


# Code that cannot move a table's numbers, left out of its fingerprint so that editing it does
# not mark hours of committed results stale: annrepro's reporting, its comparison with the
# paper (verdicts are recomputed from the stored numbers at report time), the CLI, the
# reference store, the checksum-verified downloads and this module (it decides what is stale,
# it computes nothing); a paper package's CLI.
NOT_IN_FINGERPRINT = (
    "__main__.py", "cli.py", "reference.py", "fetch.py", "tables/compare.py", "tables/report.py",
    "tables/fingerprint.py",
)  # fmt: skip

# The one interface (annrepro.methods) and what runs through it: counted only for the tables
# that run methods through it, the ladders and annrepro.crosspaper (the ladders use
# crosspaper's settings parser). The paper tables compute with their packages' own code, which
# never imports these (tests/shared/test_fingerprint.py reads every import to make sure).
INTERFACE = ("ladder.py", "crosspaper.py", "methods.py", "evaluate.py", "points.py", "bench.py")


def _code_parts(spec: TableSpec) -> dict:
    """{package: digest} of the code a table's numbers depend on (NOT_IN_FINGERPRINT, INTERFACE):
    a paper table, annrepro's and its paper's code but the one interface and the paper's plugin
    of it (its methods.py); a ladder, also those (it runs its paper's methods through the
    plugin); annrepro.crosspaper, annrepro's and every installed plugin package's (it runs all
    three papers' methods)."""
    skip = set(NOT_IN_FINGERPRINT)
    ladder = bool(spec.raw.get("ladders"))
    interface = ladder or spec.id == "annrepro.crosspaper"
    if not interface:
        skip.update(INTERFACE)
    elif not ladder:
        skip.add("ladder.py")
    parts = {"annrepro": source_digest("annrepro", exclude=skip)}
    if spec.paper != "annrepro":
        own = {"cli.py"} if interface else {"cli.py", "methods.py"}
        parts[spec.paper] = source_digest(spec.paper, exclude=own)
    if spec.id == "annrepro.crosspaper":
        for package in _plugin_packages():
            parts[package] = source_digest(package, exclude={"cli.py"})
    return parts


def _plugin_packages() -> list[str]:
    """The packages behind the installed method plugins (entry points of annrepro.methods)."""
    from importlib.metadata import entry_points

    from ..methods import GROUP

    return sorted({ep.value.split(":")[0].split(".")[0] for ep in entry_points(group=GROUP)})


def fingerprint(spec: TableSpec, scale: str, seed: int) -> str:
    """What a table's result depends on: its spec and published CSV, the scale and seed, the code
    of annrepro and of the paper's package (but NOT_IN_FINGERPRINT), and the registry entries
    (file checksums) of the data sets the spec names at this scale. Threads are left out: they
    move only timings (and the last bits of some sums)."""
    from ..registry import registry

    reg = registry()
    data = {}
    for paper_name, reg_name in sorted(spec.datasets(scale).items()):
        entry = reg["datasets"].get(reg_name, {})
        files = {
            r: reg["files"].get(entry[r], entry[r]) for r in entry if isinstance(entry[r], str)
        }
        data[paper_name] = {"entry": entry, "files": files}
    published = spec.path.with_suffix(".csv")
    parts = {
        "spec": spec.path.read_text(encoding="utf-8") if spec.path.is_file() else repr(spec.raw),
        "published": published.read_text(encoding="utf-8") if published.is_file() else "",
        "scale": scale,
        "seed": seed,
        "code": _code_parts(spec),
        "data": data,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
