"""Table specs (`paper_tables/<paper>/<table>.toml`) and published numbers (`<table>.csv`).

See paper_tables/README.md for the schema. Loading validates both files together: every column
of the CSV is declared in the spec, every claim names rows and columns that exist, every scale
names registered data sets for every paper data set, and published values parse as numbers.
"""

from __future__ import annotations

import csv
import fnmatch
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..paths import tables_root

__all__ = ["SpecError", "TableSpec", "Column", "Claim", "Cell", "load_spec", "find_specs"]

SCALES = ("tiny", "small", "medium", "full")
COMPARES = ("abs", "rel", "info", "ratio")
CSV_FIELDS = ["dataset", "row", "column", "published", "std", "source", "note"]

# What a producer returns for a column of each published unit, and the factor the runner applies
# to get the published unit. The one place units are converted: a producer never converts. A
# unit not listed here is returned as published (factor 1): "s", "x", "bits", "q/s", ...
MEASURED_UNITS = {
    "%": ("fraction", 100.0),  # recalls, NDCG, MRR: a fraction in [0, 1]
    "h": ("s", 1 / 3600),
    "min": ("s", 1 / 60),
    "ms": ("s", 1000.0),
    "GB": ("bytes", 1 / 1e9),
    "GiB": ("bytes", 1 / 2**30),
    "MB": ("bytes", 1 / 1e6),
}
UNIT_FACTORS = {unit: factor for unit, (_, factor) in MEASURED_UNITS.items()}
TIMING_UNITS = ("s", "h", "ms", "min", "q/s", "vec/s")


class SpecError(ValueError):
    """A table spec or its published CSV is malformed or inconsistent."""


def _opt_bool(path, column: str, v) -> bool | None:
    if v is None or isinstance(v, bool):
        return v
    raise SpecError(f"{path}: column {column!r}: timing must be true or false, got {v!r}")


@dataclass
class Column:
    """A column of a table spec: unit, comparison rule and tolerance, direction, timing."""

    name: str
    unit: str = ""
    compare: str = "abs"
    tol: float = 0.0
    higher_is_better: bool = True
    baseline_row: str | None = None
    description: str = ""
    timing: bool | None = None  # None: decided by the unit; true for e.g. a speed-up ("x")

    @property
    def is_timing(self) -> bool:
        """Timings and throughputs vary run to run: never snapshotted. A column whose unit
        says nothing of time (a speed-up "x", a ratio of two timings) sets `timing = true`."""
        if self.timing is not None:
            return bool(self.timing)
        return self.unit in TIMING_UNITS

    @property
    def factor(self) -> float:
        """Multiply a measured value (in `measured_unit`) by this to get the published unit."""
        return UNIT_FACTORS.get(self.unit, 1.0)

    @property
    def measured_unit(self) -> str:
        """The unit a producer returns for this column (MEASURED_UNITS), e.g. bytes for "GB"."""
        return MEASURED_UNITS.get(self.unit, (self.unit, 1.0))[0]

    def implausible(self, v: float) -> str | None:
        """Why v cannot be a value in `measured_unit` (a producer that converted itself), or None:
        a fraction outside [0, 1] (a recall of 36 is a percentage), or a positive byte count
        under 1 KiB (1.19 "bytes" of memory is a size already in GB)."""
        unit = self.measured_unit
        if unit == "fraction" and not -1e-9 <= v <= 1 + 1e-9:
            return f"{v} is not a fraction in [0, 1] (producers return fractions for % columns)"
        if unit == "bytes" and 0 < v < 1024:
            return (
                f"{v} bytes is implausibly small (producers return bytes for {self.unit} columns)"
            )
        return None


@dataclass
class Claim:
    """A claim of a table spec: better row beats worse row on a column by margin (or ratio)."""

    id: str
    text: str
    dataset: str
    column: str
    better: str
    worse: str
    margin: float = 0.0
    ratio: float | None = None
    scales: tuple = SCALES


@dataclass
class Cell:
    """A published cell: data set, row, column, the value as printed and its std, source, note."""

    dataset: str
    row: str
    column: str
    published: float | None
    published_text: str
    std: float | None
    source: str
    note: str


@dataclass
class TableSpec:
    """A table spec with its published cells: columns, scales, params, claims, notes."""

    id: str
    paper: str
    title: str
    source: str
    path: Path
    columns: dict[str, Column]
    scales: dict[str, dict]
    params: dict
    claims: list[Claim]
    cells: list[Cell]
    notes: str = ""
    raw: dict = field(default_factory=dict, repr=False)

    def datasets(self, scale: str) -> dict[str, str]:
        """Paper data set name -> registry name at this scale."""
        return dict(self.scales.get(scale, {}).get("datasets", {}))

    def params_for(self, scale: str) -> dict:
        p = dict(self.params)
        p.update(self.scales.get(scale, {}).get("params", {}))
        return p

    def published(self) -> dict[tuple, Cell]:
        return {(c.dataset, c.row, c.column): c for c in self.cells}

    def rows(self, dataset: str | None = None) -> list[str]:
        seen = []
        for c in self.cells:
            if (dataset is None or c.dataset == dataset) and c.row not in seen:
                seen.append(c.row)
        return seen


def _num(text: str, where: str) -> float | None:
    text = text.strip()
    if text == "":
        return None
    try:
        v = float(text.replace(",", ""))
    except ValueError:
        raise SpecError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(v):
        raise SpecError(f"{where}: {text!r} is not finite")
    return v


def _read_csv(path: Path) -> list[Cell]:
    if not path.is_file():
        raise SpecError(f"{path}: published CSV not found")
    with open(path, newline="", encoding="utf-8") as f:
        rd = csv.DictReader(f)
        if rd.fieldnames is None or [h.strip() for h in rd.fieldnames] != CSV_FIELDS:
            raise SpecError(f"{path}: header must be {','.join(CSV_FIELDS)}; got {rd.fieldnames}")
        cells, seen = [], set()
        for i, r in enumerate(rd, start=2):
            where = f"{path}:{i}"
            if None in r or any(v is None for v in r.values()):
                raise SpecError(f"{where}: expected {len(CSV_FIELDS)} fields")
            key = (r["dataset"], r["row"], r["column"])
            if not all(key):
                raise SpecError(f"{where}: dataset, row and column must not be empty")
            if key in seen:
                raise SpecError(f"{where}: duplicate cell {key}")
            seen.add(key)
            cells.append(
                Cell(
                    dataset=r["dataset"],
                    row=r["row"],
                    column=r["column"],
                    published=_num(r["published"], where),
                    published_text=r["published"].strip(),
                    std=_num(r["std"], where),
                    source=r["source"],
                    note=r["note"],
                )
            )
    return cells


def load_spec(path) -> TableSpec:
    """Load and validate one table spec with its published CSV."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise SpecError(f"{path}: not found") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: invalid TOML: {e}") from None
    t = raw.get("table")
    if not isinstance(t, dict) or "id" not in t:
        raise SpecError(f"{path}: missing [table] with an id")
    tid = t["id"]
    if tid != f"{path.parent.name}.{path.stem}":
        raise SpecError(f"{path}: table id {tid!r} must be {path.parent.name}.{path.stem!s}")
    paper = t.get("paper", tid.split(".")[0])
    if not tid.startswith(paper + "."):
        raise SpecError(f"{path}: table id {tid!r} must start with the paper name {paper!r}")

    columns = {}
    for name, c in raw.get("columns", {}).items():
        compare = c.get("compare", "abs")
        if compare not in COMPARES:
            raise SpecError(f"{path}: column {name!r}: compare {compare!r} not in {COMPARES}")
        if compare == "ratio" and not c.get("baseline_row"):
            raise SpecError(f"{path}: column {name!r}: compare = 'ratio' needs baseline_row")
        columns[name] = Column(
            name=name,
            unit=c.get("unit", ""),
            compare=compare,
            tol=float(c.get("tol", 0.0)),
            higher_is_better=bool(c.get("higher_is_better", True)),
            baseline_row=c.get("baseline_row"),
            description=c.get("description", ""),
            timing=_opt_bool(path, name, c.get("timing")),
        )

    cells = _read_csv(path.parent / t.get("published", path.with_suffix(".csv").name))
    for c in cells:
        if c.column not in columns:
            raise SpecError(
                f"{path}: the published CSV has column {c.column!r} (row {c.row!r}) that the "
                f"spec does not declare under [columns]"
            )

    scales = raw.get("scales", {})
    for s in scales:
        if s not in SCALES:
            raise SpecError(f"{path}: unknown scale {s!r}; expected {SCALES}")

    keys = {(c.dataset, c.row) for c in cells}
    claims = []
    for i, c in enumerate(raw.get("claims", [])):
        try:
            cl = Claim(
                id=c.get("id", f"claim{i + 1}"),
                text=c["text"],
                dataset=c["dataset"],
                column=c["column"],
                better=c["better"],
                worse=c["worse"],
                margin=float(c.get("margin", 0.0)),
                ratio=c.get("ratio"),
                scales=tuple(c.get("scales", SCALES)),
            )
        except KeyError as e:
            raise SpecError(f"{path}: claim {i + 1} lacks {e.args[0]!r}") from None
        if cl.column not in columns:
            raise SpecError(f"{path}: claim {cl.id!r} names undeclared column {cl.column!r}")
        for r in (cl.better, cl.worse):
            if (cl.dataset, r) not in keys:
                raise SpecError(
                    f"{path}: claim {cl.id!r} names row {r!r} on {cl.dataset!r}, which the "
                    "published CSV lacks"
                )
        claims.append(cl)

    for rows in raw.get("rows", {}).items():  # optional explicit row list per data set
        ds, names = rows
        for r in names:
            if (ds, r) not in keys:
                raise SpecError(
                    f"{path}: the spec declares row {r!r} on {ds!r}, but the published CSV lacks it"
                )

    return TableSpec(
        id=tid,
        paper=paper,
        title=t.get("title", ""),
        source=t.get("source", ""),
        path=path,
        columns=columns,
        scales=scales,
        params=raw.get("params", {}),
        claims=claims,
        cells=cells,
        notes=t.get("notes", ""),
        raw=raw,
    )


def find_specs(pattern: str = "*", root: Path | None = None) -> list[TableSpec]:
    """Specs whose id matches the glob `pattern` (comma-separated globs allowed)."""
    root = root or tables_root()
    paths = sorted(root.glob("*/*.toml"))
    pats = [p.strip() for p in pattern.split(",") if p.strip()] or ["*"]
    out = []
    for p in paths:
        tid = f"{p.parent.name}.{p.stem}"
        if any(fnmatch.fnmatchcase(tid, pat) for pat in pats):
            out.append(load_spec(p))
    if not out:
        known = ", ".join(f"{p.parent.name}.{p.stem}" for p in paths)
        raise SpecError(f"no table matches {pattern!r}; known tables: {known or '(none)'}")
    return out
