"""INRP loss (Sec. 3.2, Eq. 4-5): weighted distance preservation over all pairs of a mini-batch.

    loss = 1/m^2 sum_ij w_ij * D(||f(x_i) - f(x_j)||_2 - ||x_i - x_j||_2)                  (Eq. 4)
    w_ij = min(alpha, max(beta, -ln(d_ij / boundary))),  d_ij = ||x_i - x_j||_2              (Eq. 5)

with alpha = 2, beta = 0.01 (Sec. 3.2) and boundary the mean distance between two points of the
original space. D is the absolute value (``"abs"``, the default): Eq. 4's outer norm is a single
||.||_2 of a scalar, |d_out - d_in| (Eq. 1 prints its squared norms as ||.||_2^2, Eq. 4 does
not), and the authors' released loss computes sqrt((x - y)^2), the same. ``"squared"`` (D the
square) is kept as an option. Pairs i = j contribute zero but count in the 1/m^2.
"""

from __future__ import annotations

import numpy as np
import torch

from ccst.errors import DataError

__all__ = ["ALPHA", "BETA", "LOSS_VARIANTS", "estimate_boundary", "inrp_loss", "inrp_weights"]

ALPHA = 2.0  # Sec. 3.2
BETA = 0.01  # Sec. 3.2
LOSS_VARIANTS = ("abs", "squared")  # Eq. 4 and the released code first; the square an option


def estimate_boundary(x: np.ndarray, sample: int = 2048, seed: int = 0) -> float:
    """The boundary of Eq. 5: mean Euclidean distance between two distinct training vectors.

    Estimated over all pairs i != j of a uniform sample of `sample` rows (exact when nt <=
    sample).

    Args:
        x: float32 (nt, d) training vectors (may be memory-mapped).
        sample: rows drawn without replacement.
        seed: seed of the sample.

    Returns:
        the mean distance (python float, > 0).

    Raises:
        DataError (a ValueError): fewer than two vectors, NaN / inf in the sample, or a mean
            distance of zero (all sampled vectors equal).
    """
    nt = x.shape[0]
    if nt < 2:
        raise DataError(
            "training vectors", f"the INRP boundary needs at least 2 training vectors, got {nt}"
        )
    rows = np.arange(nt)
    if nt > sample:
        rows = np.sort(np.random.default_rng(seed).choice(nt, sample, replace=False))
        x = x[rows]
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():  # else NaN distances would read as 'all identical' below
        r = int(rows[np.flatnonzero(~np.isfinite(x).all(axis=1))[0]])
        raise DataError(
            "training vectors", f"row {r} contains NaN or inf: the INRP boundary is undefined"
        )
    sq = (x * x).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    np.fill_diagonal(d2, 0.0)
    m = x.shape[0]
    boundary = float(np.sqrt(d2).sum() / (m * (m - 1)))
    if not np.isfinite(boundary):
        raise DataError(
            "training vectors",
            f"INRP boundary (mean pairwise distance) is {boundary}: distances overflow",
        )
    if not boundary > 0.0:
        raise DataError(
            "training vectors",
            f"INRP boundary (mean pairwise distance of the training data) is {boundary}: the "
            "training vectors are all identical (duplicates), Eq. 5 is undefined",
        )
    return boundary


def _pairwise_distances(z: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distances between the rows of z: (m, d) -> (m, m); sqrt clamped away from zero
    so that the gradient stays finite for equal rows."""
    sq = (z * z).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)
    return d2.clamp_min(eps).sqrt()


def inrp_weights(
    d: torch.Tensor, boundary: float, alpha: float = ALPHA, beta: float = BETA
) -> torch.Tensor:
    """Eq. 5: w = min(alpha, max(beta, -ln(d / boundary))); d = 0 gives alpha."""
    if not boundary > 0.0:
        raise ValueError(f"INRP boundary must be positive, got {boundary}")
    return torch.clamp(-torch.log(d / boundary), min=beta, max=alpha)


def inrp_loss(
    fx: torch.Tensor,
    x: torch.Tensor,
    boundary: float,
    variant: str = "abs",
    alpha: float = ALPHA,
    beta: float = BETA,
) -> torch.Tensor:
    """INRP loss over all pairs of a mini-batch (Eq. 4).

    Args:
        fx: float32 (m, d_out) compressed vectors f(x_i).
        x: float32 (m, d_in) original vectors x_i.
        boundary: mean pairwise distance of the training data (`estimate_boundary`).
        variant: "abs" (Eq. 4 and the released code, default) or "squared".

    Returns:
        scalar tensor.
    """
    if variant not in LOSS_VARIANTS:
        raise ValueError(f"unknown INRP variant {variant!r}; expected one of {LOSS_VARIANTS}")
    m = x.shape[0]
    with torch.no_grad():
        d_in = _pairwise_distances(x.double(), eps=0.0).to(fx.dtype)
        off = ~torch.eye(m, dtype=torch.bool, device=x.device)
        d_in = d_in * off  # exact zeros on the diagonal
        w = inrp_weights(d_in, boundary, alpha, beta) * off
    diff = _pairwise_distances(fx) - d_in
    err = diff * diff if variant == "squared" else diff.abs()
    return (w * err).sum() / (m * m)
