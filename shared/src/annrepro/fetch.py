"""`annrepro data fetch NAME`: get a data set's files on a fresh machine, checksum-verified.

Recipes (datasets.toml `[sources]`): a PyPI sdist (tiledb-vector-search 0.16.0 ships siftsmall as
texmex files and bigann10k / fmnistsmall as TileDB arrays) and an npm tarball (GloVe 100-d as
JSON). Downloads are verified against their sha256 before anything is extracted; every file
written is verified against the registry's sha256, and written atomically, so a corrupted or
interrupted download never leaves a file that looks valid.
"""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .paths import cache_dir
from .registry import file_refs, locate_file, registry, sha256_file
from .vecio import write_vectors

__all__ = ["fetch_dataset", "fetch_file"]

log = logging.getLogger(__name__)


def _download(src: dict, name: str) -> Path:
    """Download a source archive into the cache (once), verified against its sha256."""
    dest = cache_dir() / "downloads" / src["filename"]
    if dest.exists() and sha256_file(dest) == src["sha256"]:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s", src["url"])
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(src["url"], timeout=120) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 20)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DatasetError(f"source {name}: download of {src['url']} failed: {e}") from None
    digest = sha256_file(tmp)
    if digest != src["sha256"]:
        tmp.unlink(missing_ok=True)
        raise DatasetError(
            f"source {name}: download of {src['url']} has sha256 {digest}, expected "
            f"{src['sha256']} (corrupted download or changed upstream); nothing was written"
        )
    tmp.replace(dest)
    return dest


def _extract(archive: Path, prefix: str, member: str, into: Path) -> Path:
    """Extract one member (file or folder) of a tar.gz into `into`; returns its path."""
    full = prefix + member
    with tarfile.open(archive) as tf:
        names = [m for m in tf.getmembers() if m.name == full or m.name.startswith(full + "/")]
        if not names:
            raise DatasetError(f"{archive}: has no member {full!r}")
        tf.extractall(into, members=names, filter="data")
    return into / full


def _tiledb_array(path: Path) -> np.ndarray:
    try:
        import tiledb
    except ImportError:
        raise DatasetError(
            "converting the TileDB arrays of bigann10k / fmnistsmall needs the `tiledb` package: "
            "pip install tiledb (or use ANNREPRO_DATA=../shared/data)"
        ) from None
    with tiledb.open(str(path)) as A:
        a = A[:]
    if isinstance(a, dict):
        a = next(iter(a.values()))
    return np.ascontiguousarray(np.asarray(a).T)  # stored column-major d x n


def _wink_json(path: Path) -> np.ndarray:
    with open(path) as f:
        obj = json.load(f)
    # {"words": [...], "vectors": {word: [v_0 .. v_{d-1}, l2 norm, index]}, "dimensions": d}:
    # keep the d values, in the order of "words" (frequency order, as words.txt)
    d, vecs = obj["dimensions"], obj["vectors"]
    return np.asarray([vecs[w][:d] for w in obj["words"]], dtype=np.float32)


def fetch_file(rel: str, reg: dict | None = None, force: bool = False) -> Path:
    """Make `rel` exist under the user cache's data root, from its registered source."""
    reg = reg or registry()
    entry = reg["files"].get(rel)
    if entry is None:
        raise DatasetError(f"{rel}: not in the registry's [files]")
    if not force and (p := locate_file(rel, reg)) is not None:
        return p
    if "source" not in entry:
        raise DatasetError(f"{rel}: no automatic source. {entry.get('how_to_get', '')}")
    src = reg["sources"][entry["source"]]
    archive = _download(src, entry["source"])
    dest = cache_dir() / "data" / rel
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        got = _extract(archive, src["prefix"], entry["member"], Path(tmp))
        conv = entry.get("convert")
        if conv is None:
            staged = got
        else:
            x = _tiledb_array(got) if conv == "tiledb-array" else _wink_json(got)
            if list(x.shape) != entry["shape"]:
                raise DatasetError(f"{rel}: converted shape {x.shape}, registry {entry['shape']}")
            staged = Path(tmp) / ("out" + Path(rel).suffix)
            write_vectors(staged, x)
        digest = sha256_file(staged)
        if digest != entry["sha256"]:
            raise DatasetError(
                f"{rel}: built from {entry['source']} with sha256 {digest}, expected "
                f"{entry['sha256']}; nothing was written"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), str(dest.with_suffix(dest.suffix + ".part")))
        dest.with_suffix(dest.suffix + ".part").replace(dest)
    log.info("fetched %s", dest)
    return dest


def fetch_dataset(name: str, force: bool = False) -> list[Path]:
    """Fetch every file of a registered data set; returns their paths."""
    reg = registry()
    if name not in reg["datasets"]:
        raise DatasetError(f"unknown data set {name!r}; registered: {', '.join(reg['datasets'])}")
    if "synthetic" in reg["datasets"][name]:
        return []
    return [fetch_file(rel, reg, force) for rel in file_refs(name)]
