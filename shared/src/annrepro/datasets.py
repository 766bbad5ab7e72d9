"""The `Dataset` object producers use, over the data set registry (`annrepro.registry`).

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
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from . import groundtruth as _gt
from .errors import AnnreproError, DatasetError, DatasetMissingError
from .paths import data_roots
from .registry import (  # noqa: F401  (re-exported: annrepro.datasets.registry etc.)
    check_registry,
    entry_file_refs,
    file_refs,
    list_datasets,
    locate_file,
    registry,
    sha256_file,
    verify_file,
)
from .validate import check_same_dim
from .vecio import check_finite_rows, read_vectors, vectors_shape

__all__ = ["DatasetError", "Dataset", "get_dataset", "registry", "list_datasets", "locate_file"]

log = logging.getLogger(__name__)


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
    if sub := entry.get("substitute"):
        lines.append(f"Tables measure its rows on its substitute {sub} meanwhile, and say so.")
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


def _pca_projection(path: Path, pca: dict, name: str):
    """`derive.pca = { dim, fit_rows }`: a centred PCA to `dim` dimensions fitted on the rows
    `fit_rows` of the source file (rows no split of the data set uses), as Deep1B's descriptors
    were made (Babenko & Lempitsky 2016: CNN features, PCA to 96-d, then L2-normalised; the
    normalisation is `derive.normalize`). Eigenvectors come from float64 `eigh` of the
    covariance, ordered by decreasing variance, each signed so its largest-magnitude component is
    positive (deterministic; signs and rotations within a tied eigenspace leave distances as
    they are). Returns x -> (x - mean) @ P, computed in float64 and stored as float32."""
    fit = read_vectors(path, *pca["fit_rows"]).astype(np.float64)
    dim = int(pca["dim"])
    if dim > fit.shape[1] or dim > fit.shape[0]:
        raise DatasetError(
            f"{name}: derive.pca.dim = {dim} needs at most d = {fit.shape[1]} and at most the "
            f"{fit.shape[0]} fitting rows of {path}"
        )
    mean = fit.mean(axis=0)
    cov = np.cov(fit - mean, rowvar=False)
    _, vecs = np.linalg.eigh(cov)
    P = vecs[:, ::-1][:, :dim]
    P *= np.sign(P[np.abs(P).argmax(axis=0), np.arange(dim)])

    def project(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((x.astype(np.float64) - mean) @ P, dtype=np.float32)

    return project


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
            raise DatasetMissingError(_missing_message(self.name, self.entry, missing, self.reg))
        return found

    def verify(self, rehash: bool = True) -> list[Path]:
        """Locate every file of the data set and check it against the registry (size, and
        sha256 again even where a stamp says it was verified, unless rehash=False)."""
        rels = entry_file_refs(self.entry)
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
        project = _pca_projection(path, dv["pca"], self.name) if "pca" in dv else None
        out = {}
        for role, x in parts.items():
            x = np.ascontiguousarray(x, dtype=np.float32)
            if project is not None:
                x = project(x)
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
        sums = {r: self.reg["files"].get(r, {}).get("sha256") for r in entry_file_refs(e)}
        return hashlib.sha256(json.dumps([e, sums], sort_keys=True).encode()).hexdigest()

    def gt(self, k: int) -> np.ndarray:
        """Exact top-k ids of the queries over the base, int64 (nq, k) (cached on disk).

        Where the data set ships a ground truth, it is checked once against ours (equal up to
        exactly tied distances) and a mismatch raises.
        """
        self.check()
        if k > self.nb:
            raise DatasetError(f"{self.name}: k={k} exceeds the base size {self.nb}")
        D, I = _gt.cached_knn(
            self.xq, self.xb, k, self.metric, key=self.content_key(), compute=self._sharded_gt(k)
        )
        self._check_shipped()
        return I

    def base_file(self) -> Path | None:
        """The base's file when the base is that whole file as stored (no derived split, row
        range or normalisation): what workers of a cluster can read themselves; else None."""
        e = self.entry
        if "base" not in e or "synthetic" in e or "derive" in e or "base_rows" in e:
            return None
        if e.get("normalize"):
            return None
        return self._require([e["base"]])[e["base"]]

    def _sharded_gt(self, k: int):
        """With ANNREPRO_ENGINE=dask (`annrepro.distributed.engine_client`) and a base that is
        one whole file: its exact top-k sharded over the cluster (the same ids as one process);
        else None (one process)."""
        if os.environ.get("ANNREPRO_ENGINE", "single") in ("", "single"):
            return None
        path = self.base_file()
        if path is None:
            return None
        from .distributed import engine_client, knn_sharded

        client = engine_client()

        def compute():
            log.info("%s: exact top-%d over %s on Dask", self.name, k, path)
            return knn_sharded(self.xq, path, k, self.metric, client=client, progress=True)

        return compute

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
