"""The data set registry, `paper_tables/datasets.toml`: reading it, validating it, and finding
a registered file under the data roots (verified against its size and sha256).

Both `annrepro.datasets` (the `Dataset` object) and `annrepro.fetch` (getting files on a fresh
machine) build on this module; neither needs the other at import time.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from pathlib import Path

from .errors import DatasetError
from .paths import cache_dir, data_roots, tables_root
from .validate import METRICS

__all__ = [
    "SCALES",
    "ROLES",
    "registry",
    "check_registry",
    "list_datasets",
    "file_refs",
    "entry_file_refs",
    "sha256_file",
    "verify_file",
    "locate_file",
]

SCALES = ("tiny", "small", "medium", "full")  # annrepro.tables.spec.SCALES (not imported: no cycle)
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
            pca = dv.get("pca")
            if pca is not None:
                rows = pca.get("fit_rows") if isinstance(pca, dict) else None
                if not isinstance(pca, dict) or (p := _int_problem(pca.get("dim"), 1)):
                    bad(where, "derive.pca needs dim = <integer >= 1> and fit_rows = [start, stop)")
                if (
                    not isinstance(rows, list)
                    or len(rows) != 2
                    or any(_int_problem(x) for x in rows)
                    or rows[0] >= rows[1]
                ):
                    bad(where, f"derive.pca.fit_rows = {rows!r}: expected [start, stop) integers")
        sub = e.get("substitute")
        if sub is not None:
            if not isinstance(sub, str) or sub not in reg["datasets"]:
                bad(where, f"substitute = {sub!r} is not a data set of this registry")
            if sub == name or "substitute" in reg["datasets"][sub]:
                bad(where, f"substitute = {sub!r}: a substitute must not have one itself")
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
    """Names of the registered data sets (of one scale, or all), in registry order."""
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
    return cache_dir() / "verified" / key[:32]


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """The sha256 hex digest of a file, read in chunks."""
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


def entry_file_refs(entry: dict) -> list[str]:
    """The file paths a registry entry (one `[datasets.NAME]` table) refers to."""
    refs = [entry[r] for r in ("base", "learn", "query", "groundtruth") if r in entry]
    if "derive" in entry:
        refs.append(entry["derive"]["from"])
    return refs


def file_refs(name: str) -> list[str]:
    """The registry's file paths a data set needs."""
    return entry_file_refs(registry()["datasets"][name])
