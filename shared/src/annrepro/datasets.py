"""Data set registry (`paper_tables/datasets.toml`) and the `Dataset` object producers use.

A data set is found by name (`get_dataset("sift-10K")`); its files are looked up under each data
root in turn (`paths.data_roots()`: $ANNREPRO_DATA, then the user cache), checked against the
registry (size at every load; sha256 once per file version, re-hashed by `annrepro data check`),
and loaded lazily. The registry itself is validated when read (known metric and scale, integer
sizes and row ranges, no inf / NaN), and every problem with a data set's files or values is a
`DatasetError` naming the data set, the file and the problem. Splits that the
stand-ins lack are derived deterministically (row ranges or a seeded permutation), and the `tiny`
data sets are seeded Gaussian mixtures. A missing data set raises `DatasetError` with one message
that says how to get it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from . import groundtruth as _gt
from .errors import AnnreproError, DatasetError
from .paths import data_roots, tables_root
from .validate import METRICS, check_same_dim
from .vecio import check_finite_rows, read_vectors, vectors_shape

__all__ = ["DatasetError", "Dataset", "get_dataset", "registry", "list_datasets", "locate_file"]

log = logging.getLogger(__name__)

SCALES = ("tiny", "small", "full")  # annrepro.tables.spec.SCALES (not imported: no cycle)
ROLES = ("base", "learn", "query", "groundtruth")


def registry(path: Path | None = None) -> dict:
    """The parsed and validated `datasets.toml` ({'sources', 'files', 'datasets'})."""
    path = path or tables_root() / "datasets.toml"
    try:
        with open(path, "rb") as f:
            reg = tomllib.load(f)
    except FileNotFoundError:
        raise DatasetError(f"data set registry {path} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise DatasetError(f"{path}: invalid TOML: {e}") from None
    for key in ("sources", "files", "datasets"):
        reg.setdefault(key, {})
    check_registry(reg, path)
    return reg


def _int_problem(v, minimum: int = 0) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int):
        kind = "inf / NaN" if isinstance(v, float) and not math.isfinite(v) else type(v).__name__
        return f"{v!r} ({kind}): expected an integer >= {minimum}"
    return None if v >= minimum else f"{v!r}: expected an integer >= {minimum}"


def check_registry(reg: dict, path) -> None:
    """Raise DatasetError naming `path`, the entry and the problem for the first bad value:
    unknown metric or scale, a non-string file reference, a size, shape, row range or split
    that is not a non-negative integer (TOML's inf / nan included), a bad sha256."""

    def bad(where: str, problem: str):
        raise DatasetError(f"{path}: {where}: {problem}")

    for rel, e in reg["files"].items():
        where = f"[files.{rel!r}]"
        if not isinstance(e, dict):
            bad(where, "expected a table")
        if "bytes" in e and (p := _int_problem(e["bytes"])):
            bad(where, f"bytes = {p}")
        if "shape" in e:
            sh = e["shape"]
            if not isinstance(sh, list) or any(_int_problem(v, 1) for v in sh):
                bad(where, f"shape = {sh!r}: expected a list of positive integers")
        sha = e.get("sha256")
        if sha is not None and not (
            isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)
        ):
            bad(where, f"sha256 = {sha!r}: expected 64 lowercase hex digits")
        if "source" in e and e["source"] not in reg["sources"]:
            bad(where, f"source = {e['source']!r} is not in [sources]")
    for name, e in reg["datasets"].items():
        where = f"[datasets.{name!r}]"
        if not isinstance(e, dict):
            bad(where, "expected a table")
        if e.get("metric", "l2") not in METRICS:
            bad(where, f"unknown metric {e['metric']!r}; expected one of {', '.join(METRICS)}")
        if "scale" in e and e["scale"] not in SCALES:
            bad(where, f"unknown scale {e['scale']!r}; expected one of {', '.join(SCALES)}")
        for role in ROLES:
            if role in e and not isinstance(e[role], str):
                bad(where, f"{role} = {e[role]!r}: expected a file path")
            rows = e.get(f"{role}_rows")
            if rows is not None and (
                not isinstance(rows, list)
                or len(rows) != 2
                or any(_int_problem(v) for v in rows)
                or rows[0] >= rows[1]
            ):
                bad(where, f"{role}_rows = {rows!r}: expected [start, stop) integers")
        for key in ("n", "d"):
            if key in e and (p := _int_problem(e[key], 1)):
                bad(where, f"{key} = {p}")
        dv = e.get("derive")
        if dv is not None:
            if not isinstance(dv, dict) or not isinstance(dv.get("from"), str):
                bad(where, "derive needs from = <file path>")
            for role in ("base", "learn", "query"):
                v = dv.get(role)
                if v is None:
                    continue
                if "seed" in dv:
                    if p := _int_problem(v, 1):
                        bad(where, f"derive.{role} = {p}")
                elif (
                    not isinstance(v, list) or len(v) != 2 or any(_int_problem(x) for x in v)
                ) or v[0] >= v[1]:
                    bad(where, f"derive.{role} = {v!r}: expected [start, stop) integers")
            if "seed" in dv and (p := _int_problem(dv["seed"])):
                bad(where, f"derive.seed = {p}")
        syn = e.get("synthetic")
        if syn is not None:
            for key in ("d", "nb", "nt", "nq", "clusters"):
                if key in syn and (p := _int_problem(syn[key], 1)):
                    bad(where, f"synthetic.{key} = {p}")
            for key in ("d", "nb", "nt", "nq"):
                if key not in syn:
                    bad(where, f"synthetic needs {key}")
            sp = syn.get("spread", 0.5)
            if isinstance(sp, bool) or not isinstance(sp, (int, float)) or not 0 < sp < math.inf:
                bad(where, f"synthetic.spread = {sp!r}: expected a finite number > 0")


def list_datasets(scale: str | None = None) -> list[str]:
    return [n for n, e in registry()["datasets"].items() if scale in (None, e.get("scale"))]


# ------------------------------------------------------------------------------- file lookup
def _verified_stamp(path: Path, entry: dict) -> Path:
    """The cache file saying `path` was hashed and matched `entry`'s sha256.

    Size and mtime alone are not trusted (a write that keeps the size and restores the mtime
    would pass): the key also holds the inode, the change time (which no user call can set
    back) and the expected digest, so a rewritten file or an edited registry is hashed again.
    """
    st = path.stat()
    ident = (
        f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_dev}|"
        f"{st.st_ino}|{entry.get('sha256')}"
    )
    key = hashlib.sha256(ident.encode()).hexdigest()
    return _gt.cache_dir() / "verified" / key[:32]


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def verify_file(path: Path, entry: dict, rehash: bool = False) -> None:
    """Check size (always) and sha256 (once per file version, remembered in the cache; every
    time with `rehash`, as `annrepro data check` does)."""
    size = path.stat().st_size
    if "bytes" in entry and size != entry["bytes"]:
        raise DatasetError(
            f"{path}: {size} bytes, the registry says {entry['bytes']}: truncated or another "
            "file; delete it and fetch again (annrepro data fetch)"
        )
    if "sha256" not in entry:
        return
    stamp = _verified_stamp(path, entry)
    if stamp.exists() and not rehash:
        return
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise DatasetError(
            f"{path}: sha256 {digest} does not match the registry's {entry['sha256']}: "
            "corrupted or another file; delete it and fetch again (annrepro data fetch)"
        )
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(f"{path}\n{digest}\n")


def locate_file(
    rel: str, reg: dict | None = None, verify: bool = True, rehash: bool = False
) -> Path | None:
    """The first data root holding `rel` (verified against the registry), or None."""
    reg = reg or registry()
    for root in data_roots():
        p = root / rel
        if p.is_file():
            if verify and rel in reg["files"]:
                verify_file(p, reg["files"][rel], rehash=rehash)
            return p
    return None


def _missing_message(name: str, entry: dict, rels: list[str], reg: dict) -> str:
    roots = ", ".join(str(r) for r in data_roots())
    lines = [f"data set {name!r} is not available: missing {', '.join(rels)} (looked in {roots})."]
    fetchable = [r for r in rels if reg["files"].get(r, {}).get("source")]
    if fetchable and len(fetchable) == len(rels):
        lines.append(f"Get it with: annrepro data fetch {name}")
    else:
        how = entry.get("how_to_get") or "; ".join(
            reg["files"].get(r, {}).get("how_to_get", "") for r in rels
        )
        if how.strip("; "):
            lines.append(f"How to get it: {how}")
    lines.append(
        "Or point ANNREPRO_DATA at a folder that has it (e.g. ANNREPRO_DATA=../shared/data)."
    )
    return " ".join(lines)


# ------------------------------------------------------------------------------- synthetic
def synthetic_split(spec: dict):
    """Seeded Gaussian mixture: returns (xb, xt, xq) float32. See datasets.toml."""
    rng = np.random.default_rng(spec.get("seed", 0))
    d, k = spec["d"], spec.get("clusters", 50)
    centres = rng.standard_normal((k, d)).astype(np.float32)
    if spec.get("norm_spread"):  # inner-product data: make norms matter
        centres *= rng.uniform(0.2, 2.0, size=(k, 1)).astype(np.float32)

    def draw(n):
        lab = rng.integers(0, k, size=n)
        x = centres[lab] + spec.get("spread", 0.5) * rng.standard_normal((n, d)).astype(np.float32)
        if spec.get("normalize"):
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        if spec.get("uint8"):
            x = np.clip(np.round(x * 32 + 128), 0, 255)
        return np.ascontiguousarray(x, dtype=np.float32)

    return draw(spec["nb"]), draw(spec["nt"]), draw(spec["nq"])


# ------------------------------------------------------------------------------- Dataset
@dataclass
class Dataset:
    """A resolved data set. Arrays load lazily on first use.

    `xb: float32 (nb, d)`, `xq: float32 (nq, d)`, `xt: float32 (nt, d)` (the learn / training
    set; the base where a data set has none, which `describe()` says), `gt(k): int64 (nq, k)`.
    For `mmap = true` data sets (billion scale) `xb` is the raw memory map (e.g. uint8): convert
    chunk by chunk.
    """

    name: str
    entry: dict
    reg: dict = field(repr=False)

    @property
    def metric(self) -> str:
        return self.entry.get("metric", "l2")

    @property
    def scale(self) -> str:
        return self.entry.get("scale", "?")

    # -- loading
    @contextlib.contextmanager
    def _errors(self):
        """Any bad-input error of the layers below (a bad file, NaN / inf, a dimension
        mismatch, a bad ground truth) leaves as one DatasetError naming this data set."""
        try:
            yield
        except DatasetError:
            raise
        except AnnreproError as e:
            raise DatasetError(f"{self.name}: {e}") from None

    def _require(self, rels: list[str], rehash: bool = False) -> dict[str, Path]:
        found, missing = {}, []
        for rel in rels:
            p = locate_file(rel, self.reg, rehash=rehash)
            (found.__setitem__(rel, p) if p else missing.append(rel))
        if missing and os.environ.get("ANNREPRO_AUTO_FETCH") == "1":
            if all(self.reg["files"].get(r, {}).get("source") for r in missing):
                from .fetch import fetch_file

                log.info("%s: fetching %s (ANNREPRO_AUTO_FETCH=1)", self.name, ", ".join(missing))
                for rel in missing:
                    found[rel] = fetch_file(rel, self.reg)
                missing = []
        if missing:
            raise DatasetError(_missing_message(self.name, self.entry, missing, self.reg))
        return found

    def verify(self, rehash: bool = True) -> list[Path]:
        """Locate every file of the data set and check it against the registry (size, and
        sha256 again even where a stamp says it was verified, unless rehash=False)."""
        rels = _file_refs(self.entry)
        found = self._require(rels, rehash=rehash)
        return [found[r] for r in rels]

    def _source(self, role: str) -> str | None:
        """Where a role's vectors come from, for messages."""
        e = self.entry
        if "derive" in e:
            return f"{e['derive']['from']} ({role} split)"
        return e.get(role)

    def _read(self, role: str) -> np.ndarray | None:
        with self._errors():
            return self._read_role(role)

    def _read_role(self, role: str) -> np.ndarray | None:
        e = self.entry
        if "synthetic" in e:
            xb, xt, xq = self._synthetic
            return {"base": xb, "learn": xt, "query": xq}[role]
        if "derive" in e:
            return self._derived[role]
        rel = e.get(role)
        if rel is None:
            return None
        path = self._require([rel])[rel]
        rows = e.get(f"{role}_rows", [0, None])
        if e.get("mmap") and role == "base":
            from .vecio import mmap_vectors

            return mmap_vectors(path, *rows)
        x = read_vectors(path, *rows)
        return np.ascontiguousarray(x, dtype=np.float32) if role != "groundtruth" else x

    @cached_property
    def _synthetic(self):
        return synthetic_split(self.entry["synthetic"])

    @cached_property
    def _derived(self) -> dict:
        with self._errors():
            return self._derive()

    def _derive(self) -> dict:
        dv = self.entry["derive"]
        path = self._require([dv["from"]])[dv["from"]]
        if "seed" in dv:  # seeded permutation: query, then learn, then base
            n, _ = vectors_shape(path)
            x = read_vectors(path)
            perm = np.random.default_rng(dv["seed"]).permutation(n)
            nq, nt, nb = dv["query"], dv["learn"], dv["base"]
            if nq + nt + nb > n:
                raise DatasetError(
                    f"{self.name}: split {nq}+{nt}+{nb} exceeds the {n} rows of {path}"
                )
            parts = {
                "query": x[perm[:nq]],
                "learn": x[perm[nq : nq + nt]],
                "base": x[perm[nq + nt : nq + nt + nb]],
            }
        else:
            parts = {r: read_vectors(path, *dv[r]) for r in ("base", "learn", "query") if r in dv}
        out = {}
        for role, x in parts.items():
            x = np.ascontiguousarray(x, dtype=np.float32)
            if dv.get("normalize"):
                norms = np.linalg.norm(x, axis=1, keepdims=True)
                if (norms == 0).any():
                    raise DatasetError(f"{self.name}: zero vector in {path}, cannot normalise")
                x /= norms
            out[role] = x
        return out

    @cached_property
    def xb(self) -> np.ndarray:
        return self._read("base")

    @cached_property
    def xq(self) -> np.ndarray:
        return self._read("query")

    @cached_property
    def xt(self) -> np.ndarray:
        xt = self._read("learn")
        return self.xb if xt is None else xt

    @property
    def has_learn(self) -> bool:
        e = self.entry
        return "synthetic" in e or "learn" in e or "learn" in e.get("derive", {})

    @property
    def d(self) -> int:
        return int(self.xb.shape[1])

    @property
    def nb(self) -> int:
        return int(self.xb.shape[0])

    @property
    def nq(self) -> int:
        return int(self.xq.shape[0])

    @property
    def nt(self) -> int:
        return int(self.xt.shape[0])

    def check(self) -> None:
        """Validate shapes and values: same d in base / query / learn (naming the two files
        that differ), finite floats."""
        roles = {"base": self.xb, "query": self.xq, "learn": self.xt}
        paths = {r: src for r in roles if (src := self._source(r))}
        if not self.has_learn:
            paths.pop("learn", None)
        with self._errors():
            check_same_dim(paths=paths, **roles)
            if not self.entry.get("mmap"):
                for role, x in roles.items():
                    check_finite_rows(x, f"{role} ({paths.get(role, 'synthetic')})")

    # -- ground truth
    def content_key(self) -> str:
        """Identifies the data: registry entry plus the files' checksums."""
        e = dict(self.entry)
        e.pop("description", None)
        sums = {r: self.reg["files"].get(r, {}).get("sha256") for r in _file_refs(e)}
        return hashlib.sha256(json.dumps([e, sums], sort_keys=True).encode()).hexdigest()

    def gt(self, k: int) -> np.ndarray:
        """Exact top-k ids of the queries over the base, int64 (nq, k) (cached on disk).

        Where the data set ships a ground truth, it is checked once against ours (equal up to
        exactly tied distances) and a mismatch raises.
        """
        self.check()
        if k > self.nb:
            raise DatasetError(f"{self.name}: k={k} exceeds the base size {self.nb}")
        D, I = _gt.cached_knn(self.xq, self.xb, k, self.metric, key=self.content_key())
        self._check_shipped()
        return I

    _shipped_checked: bool = field(default=False, repr=False)

    def _check_shipped(self) -> None:
        if self._shipped_checked or "groundtruth" not in self.entry:
            return
        shipped = self._read("groundtruth")
        with self._errors():
            _gt.check_groundtruth(
                shipped,
                self.xq,
                self.xb,
                self.metric,
                name=f"shipped ground truth ({self.entry['groundtruth']})",
            )
        self._shipped_checked = True

    def describe(self) -> str:
        e = self.entry
        s = f"{self.name} [{self.scale}]: {e.get('description', '')}"
        if e.get("stands_in_for"):
            s += f" — stands in for {e['stands_in_for']}"
        return s

    def info(self) -> dict:
        """Provenance record: name, scale, sizes, metric, what it stands in for."""
        return {
            "name": self.name,
            "scale": self.scale,
            "metric": self.metric,
            "nb": self.nb,
            "nq": self.nq,
            "nt": self.nt,
            "d": self.d,
            "learn_is_base": not self.has_learn,
            "description": self.entry.get("description", ""),
            "stands_in_for": self.entry.get("stands_in_for", ""),
        }


def _file_refs(entry: dict) -> list[str]:
    refs = [entry[r] for r in ("base", "learn", "query", "groundtruth") if r in entry]
    if "derive" in entry:
        refs.append(entry["derive"]["from"])
    return refs


_cache: dict[str, Dataset] = {}


def get_dataset(name: str) -> Dataset:
    """The registered data set `name` (arrays load on first use)."""
    reg = registry()
    if name not in reg["datasets"]:
        known = ", ".join(sorted(reg["datasets"]))
        raise DatasetError(f"unknown data set {name!r}; registered: {known}")
    if name not in _cache:
        _cache[name] = Dataset(name, reg["datasets"][name], reg)
    return _cache[name]


def file_refs(name: str) -> list[str]:
    """The registry's file paths a data set needs."""
    return _file_refs(registry()["datasets"][name])
