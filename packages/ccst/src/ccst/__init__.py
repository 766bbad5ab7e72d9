"""CCST (a.k.a. CSST, CNT): compression network with transformer for ANNS, reproduced.

Importing `ccst` does not import the table producers (`ccst.tables`, found by annrepro through
the `annrepro.tables` entry point) nor torch (`ccst.CCST` is loaded on first access), nor faiss
(`ccst.build_index`, `search_index`, `read_index`, `write_index`: `ccst.index`, likewise).
"""

from ccst.errors import DataError, ModelFileError
from ccst.srp import srp_matrix, srp_project

__all__ = [
    "CCST",
    "DataError",
    "ModelFileError",
    "build_index",
    "read_index",
    "search_index",
    "srp_matrix",
    "srp_project",
    "write_index",
]
_INDEX_API = ("build_index", "read_index", "search_index", "write_index")
__version__ = "0.1.0"


def __getattr__(name):
    # `ccst.CCST` imports torch on first use only
    if name == "CCST":
        from ccst.api import CCST

        return CCST
    if name in _INDEX_API:  # faiss on first use only
        import ccst.index

        return getattr(ccst.index, name)
    raise AttributeError(f"module 'ccst' has no attribute {name!r}")
