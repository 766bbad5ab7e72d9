"""annrepro.tables.fingerprint: the code counted in a table's fingerprint. The one interface
(INTERFACE: annrepro.methods and what runs through it) is counted only for the ladders and the
cross-paper table; that is right only while no other table's code imports it, which this test
reads from every import statement (function-level ones too) of annrepro and the paper packages."""

import ast
from pathlib import Path

import pytest
from annrepro.tables import find_specs
from annrepro.tables.fingerprint import INTERFACE, NOT_IN_FINGERPRINT, _code_parts

ROOT = Path(__file__).resolve().parents[2]
PAPERS = ("catalyzer", "ccst", "kdindex")
INTERFACE_MODULES = {"annrepro." + f.removesuffix(".py") for f in INTERFACE}
# a paper's tables module registers its ladder's producer with annrepro (it computes nothing)
REGISTRATION = {("annrepro.ladder", "register_ladder")}


def _imports(src: Path, rel: str, package: str):
    """(module, name) of every import in the file `rel` of a package's folder `src`, relative
    ones made absolute."""
    tree = ast.parse((src / rel).read_text(encoding="utf-8"))
    parts = (package, *Path(rel).with_suffix("").parts)  # a/b/__init__ stands for a.b's level
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(parts[: len(parts) - node.level])
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            for a in node.names:
                yield mod, a.name
                yield f"{mod}.{a.name}", None  # "from . import methods"


def _files(src: Path, skip):
    for f in sorted(src.rglob("*.py")):
        rel = f.relative_to(src).as_posix()
        if rel not in skip:
            yield rel


def test_no_table_code_imports_the_interface():
    bad = []
    src = ROOT / "shared/src/annrepro"
    for rel in _files(src, set(INTERFACE) | set(NOT_IN_FINGERPRINT)):
        for mod, _name in _imports(src, rel, "annrepro"):
            if mod in INTERFACE_MODULES:
                bad.append(f"annrepro/{rel} imports {mod}")
    for paper in PAPERS:
        src = ROOT / f"packages/{paper}/src/{paper}"
        for rel in _files(src, {"cli.py", "methods.py"}):
            for mod, name in _imports(src, rel, paper):
                if (mod, name) in REGISTRATION:
                    continue
                if mod in INTERFACE_MODULES or mod == f"{paper}.methods":
                    bad.append(f"{paper}/{rel} imports {mod}" + (f".{name}" if name else ""))
    assert sorted(set(bad)) == [], "table code importing the one interface: " + "; ".join(bad)


def test_the_import_reader_sees_relative_and_lazy_imports():
    src = ROOT / "shared/src/annrepro"
    mods = {m for m, _ in _imports(src, "ladder.py", "annrepro")}
    assert {"annrepro.points", "annrepro.evaluate", "annrepro.tables.runner"} <= mods
    mods = {m for m, _ in _imports(src, "tables/reproduce.py", "annrepro")}
    assert "annrepro.tables.runner" in mods


@pytest.mark.parametrize("table", ["ccst.table1", "catalyzer.ladder", "annrepro.crosspaper"])
def test_interface_edits_stale_only_the_tables_that_use_it(table, monkeypatch):
    import annrepro.tables.fingerprint as fp

    spec = find_specs(table)[0]
    before = _code_parts(spec)
    real = fp.source_digest

    def edited(module, exclude=()):  # as if methods.py had changed
        return real(module, exclude) + ("" if "methods.py" in exclude else "+edit")

    monkeypatch.setattr(fp, "source_digest", edited)
    moved = _code_parts(spec)["annrepro"] != before["annrepro"]
    assert moved == (table != "ccst.table1")


def test_the_plugins_count_for_the_tables_that_run_them(monkeypatch):
    """A paper's methods.py (its plugin) moves its ladder's and the cross-paper table's
    fingerprint, not its paper tables'; another paper's code moves only the cross-paper
    table's."""
    import annrepro.tables.fingerprint as fp

    real = fp.source_digest

    def edited(module, exclude=()):  # as if ccst/methods.py had changed
        return real(module, exclude) + (
            "+edit" if module == "ccst" and "methods.py" not in exclude else ""
        )

    specs = {
        t: find_specs(t)[0]
        for t in ("ccst.table5", "ccst.ladder", "annrepro.crosspaper", "catalyzer.ladder")
    }
    before = {t: _code_parts(s) for t, s in specs.items()}
    monkeypatch.setattr(fp, "source_digest", edited)
    moved = {t for t, s in specs.items() if _code_parts(s) != before[t]}
    assert moved == {"ccst.ladder", "annrepro.crosspaper"}
