"""Run registered producers and write their results with provenance, atomically.

Outputs per table and scale, under `results/<scale>/`:
- `<table>.csv`: `dataset,row,column,measured,measured_std` (measured in the published unit);
- `<table>.json`: provenance (git commit, package versions, seed, threads, scale, data sets with
  what they stand in for, parameters, wall time, the producer's notes, error if any).
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import logging
import math
import platform
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from ..datasets import Dataset, DatasetError, get_dataset
from ..paths import repo_root, results_root
from ..threads import default_threads, threads
from ..vecio import atomic_write_text
from .spec import TableSpec

__all__ = ["register", "producers", "Context", "run_table", "TableRun", "ProducerError"]

log = logging.getLogger(__name__)

_PRODUCERS: dict[str, object] = {}


class ProducerError(RuntimeError):
    """A producer returned something the runner cannot accept."""


def register(table_id: str):
    """Decorator: register `fn(spec, ctx) -> list[dict]` as the producer of `table_id`."""

    def deco(fn):
        if table_id in _PRODUCERS and _PRODUCERS[table_id] is not fn:
            other = _PRODUCERS[table_id]
            if other.__module__ != fn.__module__:  # the same module may re-register (reloads)
                raise ProducerError(f"two producers registered for {table_id}")
        _PRODUCERS[table_id] = fn
        return fn

    return deco


def _load_plugins(paper: str | None = None) -> None:
    """Import the paper packages' producers: entry points `annrepro.tables`, `<paper>.tables`."""
    for ep in metadata.entry_points(group="annrepro.tables"):
        if paper is None or ep.name == paper:
            try:
                ep.load()
            except ImportError as e:
                log.warning("cannot load table producers %s: %s", ep.value, e)
    if paper is not None:
        try:
            importlib.import_module(f"{paper}.tables")
        except ModuleNotFoundError as e:
            if e.name not in (paper, f"{paper}.tables"):
                raise


def producers(paper: str | None = None) -> dict:
    _load_plugins(paper)
    return dict(_PRODUCERS)


@dataclass
class Context:
    """What a producer gets besides its spec. See paper_tables/README.md."""

    spec: TableSpec
    scale: str
    seed: int = 0
    threads: int = field(default_factory=default_threads)
    progress_enabled: bool = True
    notes: list = field(default_factory=list)
    used: dict = field(default_factory=dict)
    out_dir: Path | None = None  # where results go; artifacts land in out_dir/<table id>/
    artifacts: list = field(default_factory=list)

    def __post_init__(self):
        self.log = logging.getLogger(f"annrepro.{self.spec.id}")
        self.params = self.spec.params_for(self.scale)

    def dataset(self, paper_name: str) -> Dataset:
        """The registry data set standing in for the paper's `paper_name` at this scale."""
        mapping = self.spec.datasets(self.scale)
        if paper_name not in mapping:
            raise ProducerError(
                f"{self.spec.id}: no data set for {paper_name!r} at scale {self.scale!r} "
                f"(spec [scales.{self.scale}].datasets has {sorted(mapping)})"
            )
        ds = get_dataset(mapping[paper_name])
        ds.check()
        self.used[paper_name] = ds
        return ds

    def each_dataset(self, names=None):
        """Yield `(paper_name, Dataset)` for this scale's data sets (or `names`), skipping those
        that are not available with a note, so one missing stand-in does not sink the table."""
        names = list(self.spec.datasets(self.scale)) if names is None else list(names)
        missing = []
        for name in names:
            try:
                ds = self.dataset(name)
            except DatasetError as e:
                self.note(f"{name} skipped: {e}")
                missing.append(name)
                continue
            yield name, ds
        if missing and len(missing) == len(names):
            raise DatasetError(
                f"no data set of {self.spec.id} is available at {self.scale}: "
                + "; ".join(self.notes[-len(missing) :])
            )

    def progress(self, iterable=None, desc: str = "", total=None, **kw):
        from tqdm.auto import tqdm

        return tqdm(
            iterable,
            desc=f"{self.spec.id} {desc}".strip(),
            total=total,
            disable=not self.progress_enabled,
            leave=False,
            **kw,
        )

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def artifact(self, name: str) -> Path:
        """Path for a file the producer writes beside its results (a plot, the points of a
        figure): `<results>/<scale>/<table id>/<name>`. The folder is created; the producer
        writes atomically (`annrepro.vecio.atomic_write_text`, `annrepro.plotting.save_figure`);
        the path is listed in the table's provenance."""
        if "/" in name or name.startswith("."):
            raise ValueError(f"artifact name must be a plain file name, got {name!r}")
        root = self.out_dir if self.out_dir is not None else results_root() / self.scale
        path = Path(root) / self.spec.id / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if str(path) not in self.artifacts:
            self.artifacts.append(str(path))
        return path


@dataclass
class TableRun:
    spec: TableSpec
    scale: str
    measured: dict  # (dataset, row, column) -> (value in published unit, std or None)
    provenance: dict
    error: str | None = None


def _faiss_simd_level() -> str:
    """The SIMD level faiss dispatches to (results can differ in the last bits between levels)."""
    try:
        import faiss

        return str(faiss.SIMDConfig.get_level_name())
    except Exception:  # older faiss without SIMDConfig
        return "unknown"


def _git_commit() -> str:
    root = repo_root()
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        commit = out.stdout.strip() or "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _versions(paper: str) -> dict:
    out = {"python": platform.python_version()}
    for dist in ("annrepro", f"annrepro-{paper}", "numpy", "faiss-cpu", "torch", "hnswlib", "pot"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _accept(spec: TableSpec, rows) -> dict:
    """Validate producer rows; return (dataset, row, column) -> (value, std) in published units."""
    if not isinstance(rows, list):
        raise ProducerError(f"{spec.id}: producer returned {type(rows).__name__}, not a list")
    known_ds = set(spec.datasets("tiny")) | set(spec.datasets("small")) | set(spec.datasets("full"))
    known_ds |= {c.dataset for c in spec.cells}
    out = {}
    for r in rows:
        if not isinstance(r, dict) or "dataset" not in r or "row" not in r:
            raise ProducerError(f"{spec.id}: each row must be a dict with 'dataset' and 'row': {r}")
        ds, name = r["dataset"], r["row"]
        if ds not in known_ds:
            raise ProducerError(f"{spec.id}: row {name!r} names unknown data set {ds!r}")
        for key, v in r.items():
            if key in ("dataset", "row") or key.endswith(":std"):
                continue
            if key not in spec.columns:
                raise ProducerError(
                    f"{spec.id}: row {name!r} has column {key!r} that the spec does not declare"
                )
            if v is None:
                continue
            v = float(v)
            if not math.isfinite(v):
                raise ProducerError(f"{spec.id}: {ds} / {name} / {key} is {v}: not a number")
            col = spec.columns[key]
            std = r.get(f"{key}:std")
            std = None if std is None else float(std) * col.factor
            if (ds, name, key) in out:
                raise ProducerError(f"{spec.id}: {ds} / {name} / {key} returned twice")
            out[(ds, name, key)] = (v * col.factor, std)
    return out


def _write_results(run: TableRun, out_dir: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "row", "column", "measured", "measured_std"])
    for (ds, row, col), (v, s) in run.measured.items():
        w.writerow([ds, row, col, repr(round(v, 10)), "" if s is None else repr(round(s, 10))])
    atomic_write_text(out_dir / f"{run.spec.id}.csv", buf.getvalue())
    atomic_write_text(
        out_dir / f"{run.spec.id}.json", json.dumps(run.provenance, indent=2, sort_keys=True) + "\n"
    )


def run_table(
    spec: TableSpec,
    scale: str,
    seed: int = 0,
    n_threads: int | None = None,
    out_dir: Path | None = None,
    progress: bool = True,
    write: bool = True,
) -> TableRun:
    """Run the producer of `spec` at `scale`; write results unless write=False.

    A failing producer yields a TableRun with `error` set (and a provenance file saying so);
    no partial CSV is written.
    """
    prods = producers(spec.paper)
    ctx = Context(
        spec,
        scale,
        seed=seed,
        progress_enabled=progress,
        threads=n_threads or default_threads(),
        out_dir=out_dir or results_root() / scale,
    )
    prov = {
        "table": spec.id,
        "title": spec.title,
        "source": spec.source,
        "scale": scale,
        "seed": seed,
        "threads": ctx.threads,
        "params": ctx.params,
        "git_commit": _git_commit(),
        "versions": _versions(spec.paper),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "faiss_simd": _faiss_simd_level(),
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    measured, error = {}, None
    t0 = time.perf_counter()
    if scale not in spec.scales:
        error = f"{spec.id} declares no [scales.{scale}]"
    elif spec.id not in prods:
        # Not a failure: the table is declared and its method has not landed yet (or the paper's
        # package is not installed). Every cell shows as `not measured`.
        prov["pending"] = (
            f"no producer registered for {spec.id} (its method is not implemented "
            f"yet, or the {spec.paper} package is not installed)"
        )
    else:
        try:
            with threads(ctx.threads):
                rows = prods[spec.id](spec, ctx)
            measured = _accept(spec, rows)
        except (DatasetError, ProducerError) as e:
            error = str(e)
        except Exception as e:  # a bug in a producer: keep the traceback in the provenance
            error = f"{type(e).__name__}: {e}"
            prov["traceback"] = traceback.format_exc()
    prov["wall_s"] = round(time.perf_counter() - t0, 3)
    prov["datasets"] = {k: ds.info() for k, ds in ctx.used.items() if _loaded(ds)}
    prov["notes"] = ctx.notes
    prov["artifacts"] = ctx.artifacts
    prov["error"] = error
    run = TableRun(spec, scale, measured, prov, error)
    if write:
        out_dir = out_dir or results_root() / scale
        if error is None:
            _write_results(run, out_dir)
        else:
            (out_dir / f"{spec.id}.csv").unlink(missing_ok=True)
            atomic_write_text(out_dir / f"{spec.id}.json", json.dumps(prov, indent=2) + "\n")
    return run


def _loaded(ds: Dataset) -> bool:
    try:
        ds.info()
        return True
    except DatasetError:
        return False


def load_run(spec: TableSpec, scale: str, out_dir: Path | None = None) -> TableRun | None:
    """Read a written run back (None if this table was never run at this scale)."""
    out_dir = out_dir or results_root() / scale
    pj = out_dir / f"{spec.id}.json"
    if not pj.exists():
        return None
    prov = json.loads(pj.read_text())
    measured = {}
    pc = out_dir / f"{spec.id}.csv"
    if prov.get("error") is None and pc.exists():
        with open(pc, newline="") as f:
            for r in csv.DictReader(f):
                s = r["measured_std"]
                measured[(r["dataset"], r["row"], r["column"])] = (
                    float(r["measured"]),
                    float(s) if s else None,
                )
    return TableRun(spec, scale, measured, prov, prov.get("error"))
