"""Balanced posting lists by Sinkhorn-Knopp (KDindex Sec. 3.4, Eq. 3, Algorithm 1).

Eq. 3 asks, for one codebook, for the assignment of the M documents to the W codewords that
minimises the quantization error `sum_i ||c_k - d_i||^2` subject to every codeword receiving
M / W documents. Relaxed to soft assignments it is an optimal-transport problem with uniform
marginals (rows 1/M, columns 1/W), solved by Sinkhorn-Knopp; Algorithm 1 then takes the argmax
of each row of the transport plan ("transferred probability matrix").

Cost: Algorithm 1 feeds `P = softmax(S(d_i, c_k))` to Sinkhorn, i.e. the cost `-log P`, which is
the squared distance plus a per-row constant (a per-row constant does not change the optimal
plan). The cost is the *squared L2 quantization distance* of Eq. 3 whatever the data's metric:
a codeword is "the codeword with the minimal distance" (Sec. 2.2). Choice (the paper is silent):
the cost is shifted per row to a minimum of 0 and divided by its mean, so that the entropic
regularisation `reg` is scale-free (the same `reg` for SIFT's 1e5 and GloVe's 1 distances).

Rounding (choice, `rounding`): Algorithm 1 line 5 takes the argmax of each row of the plan
("argmax"), but the argmax of an entropic plan does not satisfy Eq. 3's constraint
`sum_i q(k|d_i) = M / W`: on real data its lists ranged 0-70 documents for an ideal 15.6 (W = 256,
M = 4000). The default ("capacity", `balanced_round`) keeps the plan's preferences and enforces the
constraint: every codeword receives floor(M / W) or ceil(M / W) documents, Eq. 3 on integers.

POT's default (`method="sinkhorn"`) underflows for small `reg` and does not converge
(../shared/PITFALLS.md); the log-domain solver does. A run that does not converge is reported by
a `SinkhornWarning` with its marginal residual and redone in the log domain.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

__all__ = [
    "ROUNDINGS",
    "SinkhornWarning",
    "balance_gap",
    "balanced_assign",
    "balanced_round",
    "is_balanced",
    "sinkhorn_plan",
]

log = logging.getLogger(__name__)

ROUNDINGS = ("capacity", "argmax")  # balanced codes from the plan: Eq. 3's sizes, or Algorithm 1


class SinkhornWarning(UserWarning):
    """Sinkhorn-Knopp stopped before its marginals matched (the solver fell back)."""


def _residual(plan: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Largest relative violation of the row and column marginals (inf if not finite)."""
    if not np.all(np.isfinite(plan)):
        return float("inf")
    r = np.abs(plan.sum(1) / a - 1).max()
    c = np.abs(plan.sum(0) / b - 1).max()
    return float(max(r, c))


def sinkhorn_plan(
    cost: np.ndarray,
    reg: float = 0.05,
    method: str = "auto",
    num_iter: int = 1000,
    tol: float = 1e-3,
) -> np.ndarray:
    """Entropic OT plan between M documents (mass 1/M each) and W codewords (mass 1/W each).

    cost: float (M, W), reg: entropic regularisation (relative to a cost normalised to mean 1 by
    the caller), method: "sinkhorn", "sinkhorn_log" or "auto" (log domain when reg < 0.1),
    num_iter: Sinkhorn iterations at most, tol: largest relative marginal violation accepted.
    Returns float64 (M, W). A plain run whose residual exceeds tol warns (`SinkhornWarning`,
    with the residual) and is redone with `method="sinkhorn_log"`; a log-domain run that still
    misses tol warns and its plan is returned.
    """
    import ot

    cost = np.asarray(cost, dtype=np.float64)
    M, W = cost.shape
    a = np.full(M, 1.0 / M)
    b = np.full(W, 1.0 / W)
    if method == "auto":
        method = "sinkhorn_log" if reg < 0.1 else "sinkhorn"
    if method not in ("sinkhorn", "sinkhorn_log"):
        raise ValueError(f"unknown Sinkhorn method {method!r}")

    def solve(m):
        with warnings.catch_warnings():
            # POT warns on non-convergence and numpy on underflow: we measure the residual instead
            warnings.simplefilter("ignore")
            with np.errstate(all="ignore"):
                plan = ot.sinkhorn(a, b, cost, reg, method=m, numItermax=num_iter, stopThr=1e-9)
        return np.asarray(plan), _residual(np.asarray(plan), a, b)

    plan, res = solve(method)
    if res > tol and method == "sinkhorn":
        warnings.warn(
            f"Sinkhorn-Knopp (reg={reg}) did not converge: marginal residual {res:.3g} > {tol}; "
            "falling back to the log-domain solver",
            SinkhornWarning,
            stacklevel=2,
        )
        plan, res = solve("sinkhorn_log")
    if res > tol:
        warnings.warn(
            f"log-domain Sinkhorn-Knopp (reg={reg}) stopped at marginal residual {res:.3g} > {tol}",
            SinkhornWarning,
            stacklevel=2,
        )
    return plan


def normalised_cost(sq_dist: np.ndarray) -> np.ndarray:
    """float (M, W) squared distances -> cost shifted per row to min 0, divided by its mean."""
    c = np.asarray(sq_dist, dtype=np.float64)
    c = c - c.min(1, keepdims=True)
    m = c.mean()
    return c / m if m > 0 else c


def balanced_round(score: np.ndarray) -> np.ndarray:
    """Balanced codes int64 (M,) from a preference matrix float (M, W) (higher is preferred: the
    transport plan or its logarithm), every codeword receiving floor(M / W) or ceil(M / W) rows
    (Eq. 3's `sum_i q(k|d_i) = M / W` on integers; Algorithm 1's plan decides who goes where).

    Greedy, in two passes: first every codeword up to floor(M / W) rows, then the M mod W rows
    left one each to distinct codewords. In a pass, every unassigned row proposes its best
    codeword that still has room, and each codeword accepts its best proposals (largest score)
    up to its room; repeated until the pass is full (each round fills a codeword or places every
    row, so at most W + 1 rounds).
    """
    S = np.asarray(score, dtype=np.float64)
    M, W = S.shape
    lo = M // W
    codes = np.full(M, -1, dtype=np.int64)
    load = np.zeros(W, dtype=np.int64)
    for cap in (lo, lo + 1):
        while True:
            free = np.flatnonzero(codes < 0)
            room = cap - load
            if free.size == 0 or not (room > 0).any():
                break
            Sf = S[free]
            Sf[:, room <= 0] = -np.inf
            choice = Sf.argmax(1)
            val = Sf[np.arange(len(free)), choice]
            order = np.lexsort((-val, choice))  # grouped by codeword, best score first
            ch = choice[order]
            rank = np.arange(len(ch)) - np.searchsorted(ch, ch, side="left")
            ok = rank < room[ch]
            codes[free[order[ok]]] = ch[ok]
            load += np.bincount(ch[ok], minlength=W)
    return codes


def _plan_score(plan: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """log(plan), with entries that underflowed to 0 ordered by their cost below every other."""
    with np.errstate(divide="ignore"):
        lp = np.log(plan)
    return np.where(plan > 0, lp, -1e6 - cost)


def balanced_assign(
    sq_dist: np.ndarray,
    reg: float = 0.05,
    method: str = "auto",
    num_iter: int = 1000,
    metric: str = "l2",
    rounding: str = "capacity",
) -> np.ndarray:
    """Algorithm 1 for one codebook: balanced codes int64 (M,) from squared distances (M, W).

    sq_dist: float (M, W) squared L2 distance of each document (or residual, for AQ) to each
    codeword: the quantization cost of Eq. 3. metric: must be "l2": Eq. 3 is defined on the
    squared L2 quantization error; inner-product similarities are not a quantization cost (they
    would send every document to the longest codeword), so "ip" is refused. Callers with
    inner-product data still pass the L2 distances of the quantizer (Sec. 2.2). rounding:
    "capacity" (`balanced_round`: list sizes floor / ceil of M / W) or "argmax" (Algorithm 1
    line 5 literally); module docstring.
    """
    if metric != "l2":
        raise ValueError(
            f"balanced_assign solves Eq. 3 on squared L2 quantization distances; got metric "
            f"{metric!r}: pass the squared L2 distances to the codewords, not inner products"
        )
    check_rounding(rounding)
    cost = normalised_cost(sq_dist)
    plan = sinkhorn_plan(cost, reg=reg, method=method, num_iter=num_iter)
    if rounding == "argmax":
        return plan.argmax(1)
    return balanced_round(_plan_score(plan, cost))


def check_rounding(rounding: str) -> str:
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown balance rounding {rounding!r}; expected one of {ROUNDINGS}")
    return rounding


def balance_gap(codes: np.ndarray, W: int) -> np.ndarray:
    """int64 (B,): max - min posting-list length per codebook. codes: int (N, B) or (N,)."""
    codes = np.asarray(codes)
    if codes.ndim == 1:
        codes = codes[:, None]
    sizes = np.stack([np.bincount(codes[:, b], minlength=W) for b in range(codes.shape[1])])
    return sizes.max(1) - sizes.min(1)


def is_balanced(codes: np.ndarray, W: int) -> bool:
    """Sec. 4.3's criterion: `max |P_i| - min |P_j| < N / W` in every codebook."""
    N = len(codes)
    return bool((balance_gap(codes, W) < N / W).all())
