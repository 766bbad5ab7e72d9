"""Training losses of the catalyzer (Sablayrolles et al., Sec. 3).

- `koleo_loss`: the KoLeo differential-entropy regularizer (Eq. 2),
  L_KoLeo = -1/n sum_i log(rho_{n,i}), rho_{n,i} = min_{j != i} ||f(x_i) - f(x_j)||, within the
  batch.
- `rank_loss`: the triplet loss without margin (Eq. 3), mean_i max(0, ||f(x) - f(x+)|| -
  ||f(x) - f(x-)||).
- `catalyzer_loss`: L = L_rank + lambda L_KoLeo (Eq. 4).

The nearest neighbour of each point is chosen without gradient (argmin is piecewise constant);
the gradient flows through the distance to it, as in the authors' train.py. A small `eps` inside
the square root keeps the gradient finite when two outputs coincide (||.|| has no derivative at 0)
and the log finite; it changes the distance by at most sqrt(eps).
"""

from __future__ import annotations

import torch

__all__ = ["nn_distances", "koleo_loss", "rank_loss", "catalyzer_loss"]

KOLEO_EPS = 1e-8  # squared-distance floor: rho >= 1e-4, far below the typical spacing


def _dist(a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.sqrt(((a - b) ** 2).sum(dim=1) + eps)


def nn_distances(y: torch.Tensor, eps: float = KOLEO_EPS) -> torch.Tensor:
    """Distance of each row of y to its nearest other row: float (n,) (rho_{n,i} of Eq. 2).

    Args:
        y: float (n, d), n >= 2.
    """
    n = y.shape[0]
    if n < 2:
        raise ValueError("KoLeo needs at least 2 points in a batch")
    with torch.no_grad():
        d2 = torch.cdist(y, y).pow(2)
        d2.fill_diagonal_(float("inf"))  # exclude self
        j = d2.argmin(dim=1)
    return _dist(y, y[j], eps)


def koleo_loss(y: torch.Tensor, eps: float = KOLEO_EPS) -> torch.Tensor:
    """KoLeo regularizer (Eq. 2): -mean_i log(rho_i), scalar. y: float (n, d), n >= 2.

    The authors' code takes -mean log(n rho_i): a constant shift by log(n), same gradient.
    """
    return -torch.log(nn_distances(y, eps)).mean()


def rank_loss(
    anchor: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, eps: float = 0.0
) -> torch.Tensor:
    """Triplet loss without margin (Eq. 3): mean max(0, ||a - p|| - ||a - n||), scalar.

    Args:
        anchor, pos, neg: float (n, d) outputs f(x), f(x+), f(x-).
        eps: floor inside the square roots (0: exact Euclidean distances).
    """
    return torch.relu(_dist(anchor, pos, eps) - _dist(anchor, neg, eps)).mean()


def catalyzer_loss(
    anchor: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    lam: float,
    eps: float = KOLEO_EPS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 4: L = L_rank + lam * L_KoLeo, KoLeo over the anchors of the batch.

    Returns:
        (total, rank, koleo) scalar tensors.
    """
    lr = rank_loss(anchor, pos, neg, eps)
    lk = koleo_loss(anchor, eps)
    return lr + lam * lk, lr, lk
