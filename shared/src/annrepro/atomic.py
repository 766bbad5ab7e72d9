"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

Every result, model, index, cache entry and figure goes through `atomic_path`:
- the temporary file has a unique name beside the target (two processes writing the same target
  never share a temporary, so neither can rename or delete the other's);
- it is renamed onto the target only when the write succeeded; on failure it is removed and the
  previous target, if any, is left untouched;
- the new file gets the permissions the user's umask gives an ordinary new file (mkstemp alone
  would leave it 0600).

Model and index files go through `atomic_save` (torch) or `atomic_savez` (.npz): each writes
one `format_version` key (and a torch file a `kind`, the class that reads it back), so every
loader asks the same question of a file it did not write.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

__all__ = [
    "FORMAT_KEY",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_torch_save",
    "atomic_save",
    "atomic_savez",
]

FORMAT_KEY = "format_version"  # the one key saying which layout a model or index file has


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a unique temporary path beside `path`; rename it onto `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the target's suffix kept last: np.save appends ".npy" to a name without it
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    """Write bytes to path atomically (see the module docstring)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path, text: str) -> None:
    """Write text (UTF-8) to path atomically (see atomic_path)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj, path) -> None:
    """`torch.save(obj, path)` through a unique temporary file and an atomic rename."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _stamped(content: dict, stamp: dict, what: str) -> dict:
    """`stamp` first, then `content`; a key of `stamp` already in `content` is a bug."""
    clash = sorted(set(stamp) & set(content))
    if clash:
        raise ValueError(f"{what} already has {', '.join(clash)}: the helper writes it")
    return {**stamp, **content}


def atomic_save(path, blob: dict, format_version: int, kind: str) -> Path:
    """`torch.save` of `blob` plus `format_version` and `kind` (e.g. "ccst.CCST", the class that
    loads it), atomically. Returns the path.

    Errors (OSError, torch's RuntimeError) propagate: the caller names the file in its own
    error type.
    """
    full = _stamped(blob, {FORMAT_KEY: int(format_version), "kind": kind}, "the blob")
    atomic_torch_save(full, path)
    return Path(path)


def atomic_savez(path, arrays: dict, meta: dict, format_version: int) -> Path:
    """One uncompressed .npz archive at exactly `path` (no ".npz" appended), atomically:
    `arrays` (name -> numpy array) and "meta", a JSON string of `meta` plus `format_version`
    (read back with `json.loads(str(z["meta"]))`). Returns the path."""
    import numpy as np

    if "meta" in arrays:
        raise ValueError("arrays has a 'meta' entry: the helper writes it")
    header = _stamped(meta, {FORMAT_KEY: int(format_version)}, "meta")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(header)), **arrays)
    return Path(path)
