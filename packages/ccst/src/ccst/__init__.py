"""CCST (a.k.a. CSST, CNT): compression network with transformer for ANNS, reproduced.

Importing `ccst` does not import the table producers (`ccst.tables`, found by annrepro through
the `annrepro.tables` entry point) nor torch (`ccst.CCST` is loaded on first access).
"""

from ccst.errors import DataError, ModelFileError
from ccst.srp import srp_matrix, srp_project

__all__ = ["CCST", "DataError", "ModelFileError", "srp_matrix", "srp_project"]
__version__ = "0.1.0"


def __getattr__(name):
    # `ccst.CCST` imports torch on first use only
    if name == "CCST":
        from ccst.api import CCST

        return CCST
    raise AttributeError(f"module 'ccst' has no attribute {name!r}")
