"""CCST (a.k.a. CSST, CNT): compression network with transformer for ANNS, reproduced.

Importing `ccst` does not import the table producers (`ccst.tables`, found by annrepro through
the `annrepro.tables` entry point) nor torch.
"""

from ccst.srp import srp_matrix, srp_project

__all__ = ["srp_matrix", "srp_project"]
__version__ = "0.1.0"
