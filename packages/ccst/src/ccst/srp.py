"""Sparse random projection (SRP), Li, Hastie & Church (2006), as written in Eq. 2 of CCST.

CCST (Sec. 3.1.1) draws each entry of a projection matrix W (d_in x d_out) i.i.d. from

    -sqrt(s / d_out)  with probability 1 / (2 s)
     0                with probability 1 - 1 / s
    +sqrt(s / d_out)  with probability 1 / (2 s)

with s = sqrt(d_in) ("very sparse random projections", Li et al. 2006). Each entry has mean 0
and variance 1 / d_out, so E ||x W||^2 = ||x||^2: squared distances are preserved in
expectation (the JL property the paper relies on, Eq. 1). The same matrices initialise the n
projection units p_i(x) = W_i x of CCST; Table 5 uses a single SRP as a compression baseline.

The paper writes W_i in R^{d_in x d_out} and p_i(x) = W_i x; we store W as (d_in, d_out) and
project row vectors as x @ W, which is the same map.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["default_density_param", "srp_matrix", "srp_project"]


def default_density_param(d_in: int) -> float:
    """The sparsity parameter of Eq. 2: s = sqrt(d_in) (Li et al. 2006)."""
    if d_in < 1:
        raise ValueError(f"d_in must be positive, got {d_in}")
    return math.sqrt(d_in)


def srp_matrix(
    d_in: int,
    d_out: int,
    seed: int,
    s: float | None = None,
    scaled: bool = True,
) -> np.ndarray:
    """Draw a sparse random projection matrix (Eq. 2).

    Args:
        d_in: input dimension.
        d_out: output dimension (d_in / compression factor in the paper).
        seed: seed of the numpy Generator; the matrix is a pure function of its arguments.
        s: sparsity parameter (s >= 1); a fraction 1/s of the entries is non-zero.
            Default sqrt(d_in), as in Eq. 2.
        scaled: if True (Eq. 2), the non-zero entries are +-sqrt(s / d_out), so that the map
            preserves squared norms in expectation; if False, they are +-sqrt(s) as in
            Li et al. (2006), whose projection then divides by sqrt(d_out).

    Returns:
        float32 (d_in, d_out).
    """
    if d_out < 1:
        raise ValueError(f"d_out must be positive, got {d_out}")
    if s is None:
        s = default_density_param(d_in)
    if s < 1:
        raise ValueError(f"s must be >= 1, got {s}")
    rng = np.random.default_rng(seed)
    u = rng.random((d_in, d_out))
    p_half = 1.0 / (2.0 * s)
    value = math.sqrt(s / d_out) if scaled else math.sqrt(s)
    w = np.zeros((d_in, d_out), dtype=np.float32)
    w[u < p_half] = -value
    w[u >= 1.0 - p_half] = value
    return w


def srp_project(x: np.ndarray, w: np.ndarray, batch_size: int = 65536) -> np.ndarray:
    """Project row vectors: x @ w, in batches (x may be memory-mapped).

    Args:
        x: float32 (n, d_in).
        w: float32 (d_in, d_out), from `srp_matrix`.
        batch_size: rows per matrix product, to bound memory on 1M-row inputs.

    Returns:
        float32 (n, d_out), C-contiguous.
    """
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"x has d={x.shape[1]} but w expects d_in={w.shape[0]}")
    out = np.empty((x.shape[0], w.shape[1]), dtype=np.float32)
    for i0 in range(0, x.shape[0], batch_size):
        xb = np.asarray(x[i0 : i0 + batch_size], dtype=np.float32)
        out[i0 : i0 + batch_size] = xb @ w
    return out
