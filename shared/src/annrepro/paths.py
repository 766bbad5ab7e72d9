"""Where things are: the paper_tables folder, the data roots, the results folder."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["tables_root", "data_roots", "results_root", "repo_root"]


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


def data_roots() -> list[Path]:
    """Folders searched for data files, in order: $ANNREPRO_DATA (os.pathsep-separated), then the
    user cache ($ANNREPRO_CACHE/data or ~/.cache/annrepro/data), where `fetch` writes."""
    from .groundtruth import cache_dir

    roots = [Path(p) for p in os.environ.get("ANNREPRO_DATA", "").split(os.pathsep) if p]
    roots.append(cache_dir() / "data")
    return roots


def results_root() -> Path:
    env = os.environ.get("ANNREPRO_RESULTS")
    if env:
        return Path(env)
    root = repo_root()
    return (root if root is not None else Path.cwd()) / "results"
