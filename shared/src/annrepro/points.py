"""Finished pieces of a long table run kept on disk, so that a rerun computes only what is missing.

    res = cached_point(ctx, "runs", [spec, settings, data_key, seed, code], lambda: run(...))

The point is a JSON file `<results>/<scale>/<table>/<folder>/<hash>.json`, keyed by everything
the piece depends on (the caller's key, plus the annrepro modules that compute it, the code of
the packages named in `code_of` and faiss's version); an unreadable point is recomputed. numpy
arrays in the result are stored as lists and come back as float64 arrays under the same keys.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

__all__ = ["cached_point", "code_digest"]

PACKAGES = {"annrepro": "annrepro", "catalyzer": "catalyzer", "csst": "ccst", "srp": "ccst"}
PACKAGES["kdindex"] = "kdindex"


# the annrepro modules a point's numbers depend on (not the report, plots, CLI or runner: editing
# those must not throw away hours of finished runs)
ANNREPRO_FILES = ("methods.py", "evaluate.py", "metrics.py", "groundtruth.py")


def code_digest(plugins=()) -> str:
    """sha256 over the annrepro modules that compute a point (ANNREPRO_FILES), the whole code of
    the packages behind `plugins` (method plugins), and faiss's version."""
    from pathlib import Path

    import faiss

    from .tables.fingerprint import source_digest

    h = hashlib.sha256(faiss.__version__.encode())
    here = Path(__file__).parent
    for name in ANNREPRO_FILES:
        h.update(name.encode() + (here / name).read_bytes())
    for m in sorted({PACKAGES.get(p, p) for p in plugins if p not in ("faiss", "annrepro")}):
        h.update(source_digest(m).encode())
    return h.hexdigest()


def cached_point(ctx, folder: str, key, fn, code_of=()):
    """fn()'s dict result, read from its point file when one exists for this key and code."""
    from .atomic import atomic_write_text

    blob = json.dumps([key, code_digest(code_of)], sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:20]
    from pathlib import Path

    from .paths import results_root

    root = Path(ctx.out_dir) if ctx.out_dir is not None else results_root() / ctx.scale
    path = root / ctx.spec.id / folder / f"{digest}.json"  # beside, not among, the artifacts
    if path.is_file():
        try:
            raw = json.loads(path.read_text())
            return {k: np.asarray(v) if isinstance(v, list) else v for k, v in raw.items()}
        except (OSError, ValueError):
            pass
    res = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in res.items()}
    atomic_write_text(path, json.dumps(plain))
    return res
