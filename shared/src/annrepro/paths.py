"""Where things are: the paper_tables folder, the data roots, the results folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import SettingError

__all__ = ["tables_root", "data_roots", "cache_dir", "results_root", "repo_root", "folder_problem"]


def repo_root() -> Path | None:
    """The checkout that holds `paper_tables/`: ANNREPRO_TABLES's parent, the nearest parent of
    the working directory, or the parent of this source tree (editable installs)."""
    env = os.environ.get("ANNREPRO_TABLES")
    if env:
        return Path(env).resolve().parent
    for start in (Path.cwd(), Path(__file__).resolve()):
        for p in (start, *start.parents):
            if (p / "paper_tables" / "datasets.toml").is_file():
                return p
    return None


def tables_root() -> Path:
    """The paper_tables/ folder: ANNREPRO_TABLES, else the checkout's."""
    env = os.environ.get("ANNREPRO_TABLES")
    if env:
        return Path(env)
    root = repo_root()
    if root is None:
        raise FileNotFoundError(
            "cannot find paper_tables/ (with datasets.toml): run from the annrepro checkout or "
            "set ANNREPRO_TABLES=/path/to/paper_tables"
        )
    return root / "paper_tables"


def cache_dir() -> Path:
    """ANNREPRO_CACHE, else ~/.cache/annrepro: ground truth, fetched data, models, stamps."""
    env = os.environ.get("ANNREPRO_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "annrepro"


def data_roots() -> list[Path]:
    """Folders searched for data files, in order: $ANNREPRO_DATA (os.pathsep-separated), then the
    user cache ($ANNREPRO_CACHE/data or ~/.cache/annrepro/data), where `fetch` writes."""
    roots = [Path(p) for p in os.environ.get("ANNREPRO_DATA", "").split(os.pathsep) if p]
    roots.append(cache_dir() / "data")
    return roots


def results_root(writable: bool = False) -> Path:
    """$ANNREPRO_RESULTS, else `results/` of the checkout (or of the working directory).

    Refuses (SettingError, naming the variable) a path that is a file or lies under one, and,
    with `writable`, a folder where no file can be created (read-only).
    """
    env = os.environ.get("ANNREPRO_RESULTS")
    if env:
        path, what = Path(env), f"ANNREPRO_RESULTS={env}"
    else:
        root = repo_root()
        path = (root if root is not None else Path.cwd()) / "results"
        what = f"results folder {path}"
    problem = folder_problem(path, writable)
    if problem:
        raise SettingError(f"{what}: {problem}")
    return path


def folder_problem(path: Path, writable: bool = True) -> str | None:
    """Why `path` cannot be (made into) a folder we write in, or None."""
    p = path
    while not p.exists():  # the nearest existing ancestor decides whether it can be created
        if p.parent == p:
            return None
        p = p.parent
    if not p.is_dir():
        return "is a file, not a folder" if p == path else f"{p} is a file, not a folder"
    if writable:
        try:
            with tempfile.TemporaryFile(dir=p):
                pass
        except OSError as e:
            return f"cannot write in {p}: {e.strerror or e} (read-only?)"
    return None
