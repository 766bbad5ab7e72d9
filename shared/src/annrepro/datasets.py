"""Data set registry (`paper_tables/datasets.toml`) and the `Dataset` object producers use.

A data set is found by name (`get_dataset("sift-10K")`); its files are looked up under each data
root in turn (`paths.data_roots()`: $ANNREPRO_DATA, then the user cache), checked against the
registry (size at every load, sha256 once per file version), and loaded lazily. Splits that the
stand-ins lack are derived deterministically (row ranges or a seeded permutation), and the `tiny`
data sets are seeded Gaussian mixtures. A missing data set raises `DatasetError` with one message
that says how to get it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from . import groundtruth as _gt
from .paths import data_roots, tables_root
from .vecio import VectorFileError, check_finite_rows, read_vectors, vectors_shape

__all__ = ["DatasetError", "Dataset", "get_dataset", "registry", "list_datasets", "locate_file"]

log = logging.getLogger(__name__)


class DatasetError(RuntimeError):
    """A data set is unknown, missing, or does not match the registry."""


def registry(path: Path | None = None) -> dict:
    """The parsed `datasets.toml` ({'sources', 'files', 'datasets'})."""
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
    return reg


def list_datasets(scale: str | None = None) -> list[str]:
    return [n for n, e in registry()["datasets"].items() if scale in (None, e.get("scale"))]


# ------------------------------------------------------------------------------- file lookup
def _verified_stamp(path: Path) -> Path:
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    return _gt.cache_dir() / "verified" / key[:32]


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def verify_file(path: Path, entry: dict) -> None:
    """Check size (always) and sha256 (once per file version, remembered in the cache)."""
    size = path.stat().st_size
    if "bytes" in entry and size != entry["bytes"]:
        raise DatasetError(
            f"{path}: {size} bytes, the registry says {entry['bytes']}: truncated or another "
            "file; delete it and fetch again (annrepro data fetch)"
        )
    if "sha256" not in entry:
        return
    stamp = _verified_stamp(path)
    if stamp.exists():
        return
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise DatasetError(
            f"{path}: sha256 {digest} does not match the registry's {entry['sha256']}: "
            "corrupted or another file; delete it and fetch again (annrepro data fetch)"
        )
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(str(path))


def locate_file(rel: str, reg: dict | None = None, verify: bool = True) -> Path | None:
    """The first data root holding `rel` (verified against the registry), or None."""
    reg = reg or registry()
    for root in data_roots():
        p = root / rel
        if p.is_file():
            if verify and rel in reg["files"]:
                verify_file(p, reg["files"][rel])
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
    def _require(self, rels: list[str]) -> dict[str, Path]:
        found, missing = {}, []
        for rel in rels:
            p = locate_file(rel, self.reg)
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

    def _read(self, role: str) -> np.ndarray | None:
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
        """Validate shapes and values: same d everywhere, finite floats."""
        for role, x in (("base", self.xb), ("query", self.xq), ("learn", self.xt)):
            if x.shape[1] != self.xb.shape[1]:
                raise DatasetError(
                    f"{self.name}: {role} dimension {x.shape[1]} differs from base dimension "
                    f"{self.xb.shape[1]}"
                )
            if not self.entry.get("mmap"):
                try:
                    check_finite_rows(x, f"{self.name} {role}")
                except VectorFileError as e:
                    raise DatasetError(str(e)) from None

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
        try:
            _gt.check_groundtruth(
                shipped, self.xq, self.xb, self.metric, name=f"{self.name} shipped ground truth"
            )
        except _gt.GroundTruthError as e:
            raise DatasetError(str(e)) from None
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
