"""Run registered producers and write their results with provenance, atomically.

Outputs per table and scale, under `results/<scale>/`:
- `<table>.csv`: `dataset,row,column,measured,measured_std` (measured in the published unit);
- `<table>.json`: provenance (git commit, package versions, seed, threads, scale, data sets with
  what they stand in for, parameters, wall time, the producer's notes, error if any).
"""

from __future__ import annotations

import csv
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

from ..atomic import atomic_write_text
from ..datasets import Dataset, DatasetError, get_dataset
from ..errors import DatasetMissingError
from ..paths import repo_root, results_root
from ..threads import default_threads, threads
from .fingerprint import fingerprint
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
    """Import the producers of `paper` (all papers if None): the modules its distribution names
    under the entry point group `annrepro.tables` (`<paper> = "<paper>.tables"`, or
    `annrepro = "annrepro.crosspaper"`); that is the one way producers are found."""
    for ep in metadata.entry_points(group="annrepro.tables"):
        if paper is None or ep.name == paper:
            try:
                ep.load()
            except ImportError as e:
                log.warning("cannot load table producers %s: %s", ep.value, e)


def producers(paper: str | None = None) -> dict:
    """{table id: producer} of the installed packages (entry points annrepro.tables)."""
    _load_plugins(paper)
    return dict(_PRODUCERS)


_MISSING = object()


class RunMemo:
    """Results shared by the tables of one run (one process): a trained model, a built index.

    `get(key, fn, nbytes)` returns the stored value or computes `fn()` and stores it. Values are
    kept while their total declared size stays within `budget_bytes` (ANNREPRO_MEMO_GB, default
    4): the least recently used go first; the newest is always kept. A value without `nbytes`
    counts as its numpy / torch payload where that can be measured, else as 0."""

    def __init__(self, budget_bytes: float | None = None):
        if budget_bytes is None:
            import os

            budget_bytes = float(os.environ.get("ANNREPRO_MEMO_GB", "4")) * 1e9
        self.budget = budget_bytes
        self._items: dict = {}  # key -> (value, nbytes), in recency order
        self.hits = self.misses = 0

    @staticmethod
    def _size(value) -> int:
        n = getattr(value, "nbytes", None)
        if isinstance(n, int):
            return n
        if isinstance(value, (tuple, list)):
            return sum(RunMemo._size(v) for v in value)
        return 0

    def get(self, key, fn, nbytes: int | None = None):
        if key in self._items:
            self.hits += 1
            self._items[key] = self._items.pop(key)  # most recent last
            return self._items[key][0]
        self.misses += 1
        value = fn()
        size = self._size(value) if nbytes is None else int(nbytes)
        self._items[key] = (value, size)
        while len(self._items) > 1 and sum(n for _, n in self._items.values()) > self.budget:
            self._items.pop(next(iter(self._items)))  # least recently used
        return value

    def clear(self) -> None:
        self._items.clear()


RUN_MEMO = RunMemo()


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
    skipped: dict = field(default_factory=dict)  # paper data set -> why it was not available
    substituted: dict = field(default_factory=dict)  # paper data set -> {wanted, used, why}

    def __post_init__(self):
        self.log = logging.getLogger(f"annrepro.{self.spec.id}")
        self.params = self.spec.params_for(self.scale)

    # ------------------------------------------------------------ what every producer needs
    def seeds(self, n: int | str = "n_seeds") -> list[int]:
        """The run's seeds: ctx.seed, ctx.seed + 1, ... (n, or the int parameter named n)."""
        count = int(self.param(n) if isinstance(n, str) else n)
        return [self.seed + i for i in range(count)]

    def param(self, name: str, dataset: str | None = None, default=_MISSING):
        """The spec parameter `name` at this scale; a dict-valued one is indexed by the paper's
        data set name (e.g. efSearch = { SIFT1M = 100, GIST1M = 512 })."""
        if name not in self.params:
            if default is _MISSING:
                raise ProducerError(f"{self.spec.id}: no parameter {name!r} at {self.scale}")
            return default
        value = self.params[name]
        if isinstance(value, dict):
            if dataset not in value:
                if default is not _MISSING:
                    return default
                raise ProducerError(
                    f"{self.spec.id}: parameter {name!r} has no value for data set {dataset!r}"
                )
            return value[dataset]
        return value

    def param_list(self, name: str, dataset: str | None = None, default=_MISSING) -> list:
        """`param` as a list (a scalar becomes a one-element list)."""
        v = self.param(name, dataset, default)
        return list(v) if isinstance(v, (list, tuple)) else [v]

    def memo(self, key, fn, nbytes: int | None = None):
        """`fn()` computed once per run and shared by every table of the run (RUN_MEMO)."""
        return RUN_MEMO.get(key, fn, nbytes)

    def dataset(self, paper_name: str) -> Dataset:
        """The registry data set standing in for the paper's `paper_name` at this scale."""
        mapping = self.spec.datasets(self.scale)
        if paper_name not in mapping:
            raise ProducerError(
                f"{self.spec.id}: no data set for {paper_name!r} at scale {self.scale!r} "
                f"(spec [scales.{self.scale}].datasets has {sorted(mapping)})"
            )
        ds = get_dataset(mapping[paper_name])
        try:
            ds.check()
        except DatasetMissingError as e:
            sub = ds.entry.get("substitute")
            if sub is None:
                raise
            ds = self._substitute(paper_name, ds.name, sub, e)
        self.used[paper_name] = ds
        return ds

    def _substitute(self, paper_name: str, wanted: str, sub: str, why: DatasetMissingError):
        """The registry's substitute for a data set whose files are absent (datasets.toml
        `substitute`), recorded in the notes and the provenance (`substituted_datasets`)."""
        ds = get_dataset(sub)
        ds.check()
        missing = str(why).split(" (looked in")[0]
        self.substituted[paper_name] = {"wanted": wanted, "used": sub, "why": missing}
        self.note(
            f"{paper_name}: measured on {sub}, the registry's substitute for {wanted}, whose "
            f"files are not on this machine ({missing}); these rows are not {wanted}'s numbers"
        )
        self.log.warning(
            "%s: %s is missing, measuring on its substitute %s", paper_name, wanted, sub
        )
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
                self.skipped[name] = str(e)
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
        writes atomically (`annrepro.atomic.atomic_write_text`, `annrepro.plotting.save_figure`);
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
    """A table's run read back: measured cells (stds, intervals), provenance, error."""

    spec: TableSpec
    scale: str
    measured: dict  # (dataset, row, column) -> (value in published unit, std or None)
    provenance: dict
    error: str | None = None
    # (dataset, row, column) -> (lo, hi): 95 % bootstrap interval over the queries, published unit
    intervals: dict = field(default_factory=dict)
    # a later rerun that failed while these (older, good) results were kept: its provenance
    failed_rerun: dict | None = None


BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def bootstrap_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-query values (seeded, deterministic).

    values: (nq,) per-query values, e.g. each query's 10-recall@10 (not 0/1, so the binomial
    interval does not apply), BOOTSTRAP_RESAMPLES resamples of the queries with replacement; or
    (n_seeds, nq), one row per training seed: then each resample draws the seeds and the queries
    (a two-level bootstrap), so the interval covers the spread of training from seed to seed as
    well as the choice of queries (with one seed it is the queries' interval)."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError(
            "per-query values must be a non-empty (nq,) or (n_seeds, nq) array of finite numbers"
        )
    ns, nq = v.shape
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = np.empty(BOOTSTRAP_RESAMPLES)
    step = max(1, 2_000_000 // v.size)  # resamples per block: bounded memory for large nq
    for i in range(0, BOOTSTRAP_RESAMPLES, step):
        n = min(step, BOOTSTRAP_RESAMPLES - i)
        q = rng.integers(0, nq, size=(n, nq))
        if ns == 1:
            means[i : i + n] = v[0][q].mean(axis=1)
        else:
            s = rng.integers(0, ns, size=(n, ns))
            means[i : i + n] = v[s[:, :, None], q[:, None, :]].mean(axis=(1, 2))
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _faiss_simd_level() -> str:
    """The SIMD level faiss dispatches to (results can differ in the last bits between levels)."""
    try:
        import faiss

        return str(faiss.SIMDConfig.get_level_name())
    except Exception:  # older faiss without SIMDConfig
        return "unknown"


def _machine_kind() -> str:
    from ..reference import machine_kind

    return machine_kind()


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


PER_QUERY = ":per_query"


def _accept(spec: TableSpec, rows) -> tuple[dict, dict]:
    """Validate producer rows; return ((dataset, row, column) -> (value, std),
    (dataset, row, column) -> (lo, hi)), both in published units.

    A row's value for a column is in the column's `measured_unit` (spec.MEASURED_UNITS: a
    fraction for "%", bytes for "GB", seconds for "h"); the runner alone converts. A row may give
    `"<column>:std"` (same unit) and `"<column>:per_query"`: the per-query values whose mean is
    the cell (same unit), or one row of them per seed (n_seeds, nq), from which the runner
    computes a 95 % bootstrap interval (`bootstrap_interval`)."""
    if not isinstance(rows, list):
        raise ProducerError(f"{spec.id}: producer returned {type(rows).__name__}, not a list")
    known_ds = set(spec.datasets("tiny")) | set(spec.datasets("small")) | set(spec.datasets("full"))
    known_ds |= {c.dataset for c in spec.cells}
    out, intervals = {}, {}
    for r in rows:
        if not isinstance(r, dict) or "dataset" not in r or "row" not in r:
            raise ProducerError(f"{spec.id}: each row must be a dict with 'dataset' and 'row': {r}")
        ds, name = r["dataset"], r["row"]
        if ds not in known_ds:
            raise ProducerError(f"{spec.id}: row {name!r} names unknown data set {ds!r}")
        for key, v in r.items():
            if key in ("dataset", "row") or key.endswith(":std") or key.endswith(PER_QUERY):
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
            why = col.implausible(v)
            if why:
                raise ProducerError(f"{spec.id}: {ds} / {name} / {key}: {why}")
            std = r.get(f"{key}:std")
            std = None if std is None else float(std) * col.factor
            if (ds, name, key) in out:
                raise ProducerError(f"{spec.id}: {ds} / {name} / {key} returned twice")
            out[(ds, name, key)] = (v * col.factor, std)
            pq = r.get(key + PER_QUERY)
            if pq is not None:
                try:
                    lo, hi = bootstrap_interval(pq)
                except ValueError as e:
                    raise ProducerError(f"{spec.id}: {ds} / {name} / {key}{PER_QUERY}: {e}") from e
                intervals[(ds, name, key)] = (lo * col.factor, hi * col.factor)
    for key in {k for r in rows for k in r if k.endswith(PER_QUERY)}:
        if key[: -len(PER_QUERY)] not in spec.columns:
            raise ProducerError(f"{spec.id}: {key!r} is for a column the spec does not declare")
    return out, intervals


def _write_results(run: TableRun, out_dir: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "row", "column", "measured", "measured_std", "ci_lo", "ci_hi"])

    def num(x):
        return "" if x is None else repr(round(x, 10))

    for key, (v, s) in run.measured.items():
        lo, hi = run.intervals.get(key, (None, None))
        w.writerow([*key, num(v), num(s), num(lo), num(hi)])
    atomic_write_text(out_dir / f"{run.spec.id}.csv", buf.getvalue())
    atomic_write_text(
        out_dir / f"{run.spec.id}.json", json.dumps(run.provenance, indent=2, sort_keys=True) + "\n"
    )
    (out_dir / f"{run.spec.id}{FAILED_SUFFIX}").unlink(missing_ok=True)


FAILED_SUFFIX = ".failed.json"


def up_to_date(spec: TableSpec, scale: str, seed: int, out_dir: Path | None = None):
    """The good result on disk if it was made from exactly this spec, code, data and seed."""
    run = load_run(spec, scale, out_dir)
    if (
        run is None
        or run.error is not None
        or not run.measured
        and not run.provenance.get("pending")
    ):
        return None
    try:
        now = fingerprint(spec, scale, seed)
    except (DatasetError, OSError):
        return None
    if now is None or run.provenance.get("fingerprint") != now:
        return None
    return None if _data_arrived(spec, scale, run) else run


def _data_arrived(spec: TableSpec, scale: str, run: TableRun) -> bool:
    """True when a data set that `run` skipped or replaced by its substitute is now at hand:
    the table is rerun on the real data (the fingerprint names the registry, not the files)."""
    from ..registry import entry_file_refs, locate_file, registry

    reg = registry()
    mapping = spec.datasets(scale)
    wanted = [mapping.get(n) for n in run.provenance.get("skipped_datasets") or {}]
    wanted += [v.get("wanted") for v in (run.provenance.get("substituted_datasets") or {}).values()]
    for name in filter(None, wanted):
        entry = reg["datasets"].get(name)
        if entry is None or "synthetic" in entry:
            continue
        try:
            if all(locate_file(r, reg) is not None for r in entry_file_refs(entry)):
                return True
        except DatasetError:
            return True  # there but bad: rerun, and let the run say what is wrong
    return False


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

    A failing producer yields a TableRun with `error` set and no partial CSV. A good result of
    an earlier run is never destroyed by a failing rerun: it stays, and the failure is written
    beside it (`<table>.failed.json`, shown in the report) until a rerun succeeds.
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
            "kind": _machine_kind(),  # what the reference check compares (annrepro.reference)
            "platform": platform.platform(),
            "processor": platform.processor(),
            "faiss_simd": _faiss_simd_level(),
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        prov["fingerprint"] = fingerprint(spec, scale, seed)
    except (DatasetError, OSError) as e:  # a broken registry fails the table below, not here
        prov["fingerprint"] = None
        log.debug("no fingerprint for %s: %s", spec.id, e)
    measured, intervals, error = {}, {}, None
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
            measured, intervals = _accept(spec, rows)
        except (DatasetError, ProducerError) as e:
            error = str(e)
        except Exception as e:  # a bug in a producer: keep the traceback in the provenance
            error = f"{type(e).__name__}: {e}"
            prov["traceback"] = traceback.format_exc()
    prov["wall_s"] = round(time.perf_counter() - t0, 3)
    prov["datasets"] = {k: ds.info() for k, ds in ctx.used.items() if _loaded(ds)}
    prov["notes"] = ctx.notes
    prov["skipped_datasets"] = ctx.skipped
    prov["substituted_datasets"] = ctx.substituted
    prov["artifacts"] = ctx.artifacts
    prov["error"] = error
    run = TableRun(spec, scale, measured, prov, error, intervals)
    if write:
        out_dir = Path(out_dir or results_root() / scale)
        if error is None:
            _write_results(run, out_dir)
        else:
            previous = load_run(spec, scale, out_dir)
            text = json.dumps(prov, indent=2, sort_keys=True) + "\n"
            if previous is not None and previous.error is None and previous.measured:
                atomic_write_text(out_dir / f"{spec.id}{FAILED_SUFFIX}", text)
                log.warning(
                    "%s failed; the earlier result (%s) is kept, the failure is in %s",
                    spec.id,
                    previous.provenance.get("started", "?"),
                    out_dir / f"{spec.id}{FAILED_SUFFIX}",
                )
            else:
                atomic_write_text(out_dir / f"{spec.id}.json", text)
                (out_dir / f"{spec.id}.csv").unlink(missing_ok=True)
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
    measured, intervals = {}, {}
    pc = out_dir / f"{spec.id}.csv"
    if prov.get("error") is None and pc.exists():
        with open(pc, newline="") as f:
            for r in csv.DictReader(f):
                key = (r["dataset"], r["row"], r["column"])
                s = r["measured_std"]
                measured[key] = (float(r["measured"]), float(s) if s else None)
                if r.get("ci_lo") and r.get("ci_hi"):
                    intervals[key] = (float(r["ci_lo"]), float(r["ci_hi"]))
    pf = out_dir / f"{spec.id}{FAILED_SUFFIX}"
    failed = json.loads(pf.read_text()) if pf.exists() else None
    return TableRun(spec, scale, measured, prov, prov.get("error"), intervals, failed)
