"""Search quality metrics, named exactly as the papers use them.

All functions take `I: int (nq, >=k)` result ids (nearest first, -1 for "no result") and
`gt: int (nq, >=n)` exact ground truth ids (nearest first), and return a python float in [0, 1].

- `one_recall_at(I, gt, k)`: fraction of queries whose true nearest neighbour `gt[:, 0]` is in
  `I[:, :k]` (CCST "1@k"; catalyzer "1-recall at k").
- `n_recall_at(I, gt, n, m)`: mean over queries of `|I[:, :m] & gt[:, :n]| / n` (CCST "100@100"
  is `n_recall_at(I, gt, 100, 100)`).
- `recall_at(I, gt, k)`: `n_recall_at(I, gt, k, k)` (KDindex "Recall@10").
- `ndcg_at(I, gt, k)`: binary relevance (the true top-k are relevant), `1/log2(rank+1)` gains,
  normalised by the ideal DCG (KDindex "NDCG@10").
- `mrr_at(I, gt, k)`: mean of `1/rank` of the first result in the true top-k, 0 if none
  (KDindex "MRR@10").

**Tie policy.** Ground truth from different tools orders exactly tied distances differently (see
`../shared/data/README.md`). These metrics treat the ground truth as *sets of ids* and use only
`gt[:, 0]` as "the" nearest neighbour; where a data set has exact ties at the k-th distance, a
result that returns another tied id counts as a miss. On real data exact ties are rare (the
shipped ground truths here differ from a recomputation only in the order of tied ids, which these
set-based metrics ignore except at the cut-off). Padding ids (-1) never match, and a result list
that repeats an id counts it once.

**Validation.** Every metric first checks its inputs (`check_results`): integer ids on both sides
(a distances array passed as ids is refused), one ground-truth row per result row, enough
columns, ground-truth ids >= 0 and never repeated in a row, result ids >= -1, and, with `nb` (the
base size), every id < nb. A bad input raises `annrepro.errors.InputError` /
`GroundTruthError` (both ValueError) instead of returning a wrong number.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InputError
from .validate import check_ground_truth

__all__ = [
    "one_recall_at",
    "n_recall_at",
    "recall_at",
    "per_query_recall",
    "ndcg_at",
    "mrr_at",
    "binomial_ci",
    "check_results",
]


def check_results(I: np.ndarray, gt: np.ndarray, k: int, n: int = 1, nb: int | None = None) -> None:
    """Validate I: int (nq, >=k) result ids and gt: int (nq, >=n) exact ids (see the module
    docstring); nb: the base size, if known. Raises InputError / GroundTruthError (ValueError)."""
    I = np.asarray(I)
    gt = np.asarray(gt)
    if I.ndim != 2 or gt.ndim != 2:
        raise InputError(f"results and ground truth must be 2-d; got {I.shape} and {gt.shape}")
    if I.shape[0] != gt.shape[0]:
        raise InputError(
            f"{I.shape[0]} result rows but {gt.shape[0]} ground-truth rows: "
            "results and ground truth come from different query sets"
        )
    if I.shape[1] < k:
        raise InputError(f"asked for a metric at k={k} but results have only {I.shape[1]} columns")
    if gt.shape[1] < n:
        raise InputError(f"metric needs the true top-{n} but ground truth has {gt.shape[1]}")
    check_ground_truth(gt, nb, I.shape[0], n)
    if I.dtype.kind not in "iu":
        hint = ": distances (D) passed instead of ids (I)?" if I.dtype.kind == "f" else ""
        raise InputError(f"results hold {I.dtype} values, not integer ids{hint}")
    if I.size and I.min() < -1:
        r = int(np.flatnonzero((I < -1).any(axis=1))[0])
        raise InputError(f"results: query {r} lists id {int(I[r].min())} (ids are >= 0, -1 pads)")
    if nb is not None and I.size and I.max() >= nb:
        r = int(np.flatnonzero((I >= nb).any(axis=1))[0])
        raise InputError(
            f"results: query {r} lists id {int(I[r].max())}, outside [0, {nb}) of the base"
        )


def one_recall_at(I, gt, k: int, nb: int | None = None) -> float:
    """1-recall@k: fraction of queries whose true nearest neighbour is among the first k results."""
    check_results(I, gt, k, 1, nb)
    I = np.asarray(I)[:, :k]
    nn = np.asarray(gt)[:, :1]
    return float(((I == nn) & (nn >= 0)).any(axis=1).mean())


def _hits(I, gt, n, m):
    """Boolean (nq, m): whether result j of query i is in the true top-n (duplicates count once)."""
    I = np.asarray(I)[:, :m].astype(np.int64)
    g = np.asarray(gt)[:, :n].astype(np.int64)
    nq = I.shape[0]
    # one searchsorted over all rows: key = row * span + id keeps rows apart
    span = int(max(g.max(initial=0), I.max(initial=0))) + 2
    rows = np.arange(nq, dtype=np.int64)[:, None] * span
    gkeys = np.sort((g + 1 + rows).ravel())
    ikeys = (I + 1 + rows).ravel()
    pos = np.minimum(np.searchsorted(gkeys, ikeys), gkeys.size - 1)
    hit = ((gkeys[pos] == ikeys) & (I.ravel() >= 0)).reshape(nq, -1)
    # a result list with repeated ids must not count a true neighbour twice
    if hit.any():
        srt = np.sort(I, axis=1)
        if (srt[:, 1:] == srt[:, :-1]).any():
            for i in np.flatnonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1)):
                _, first = np.unique(I[i], return_index=True)
                keep = np.zeros(m, dtype=bool)
                keep[first] = True
                hit[i] &= keep
    return hit


def n_recall_at(I, gt, n: int, m: int, nb: int | None = None) -> float:
    """n-recall@m: mean over queries of |first m results and true top-n| / n."""
    check_results(I, gt, m, n, nb)
    return float(_hits(I, gt, n, m).sum(axis=1).mean() / n)


def per_query_recall(I, gt, n: int, m: int, nb: int | None = None) -> np.ndarray:
    """float64 (nq,): per query |first m results and true top-n| / n (their mean is
    `n_recall_at`; n = 1 gives 1-recall@m per query, 0 or 1)."""
    check_results(I, gt, m, n, nb)
    return _hits(I, gt, n, m).sum(axis=1) / n


def recall_at(I, gt, k: int, nb: int | None = None) -> float:
    """recall@k = k-recall@k (KDindex's Recall@10)."""
    return n_recall_at(I, gt, k, k, nb)


def ndcg_at(I, gt, k: int, nb: int | None = None) -> float:
    """NDCG@k with binary relevance: the true top-k ids are relevant (KDindex, Sec. 4.1)."""
    check_results(I, gt, k, k, nb)
    hit = _hits(I, gt, k, k)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    return float((hit @ disc).mean() / disc.sum())


def mrr_at(I, gt, k: int, nb: int | None = None) -> float:
    """MRR@k: mean reciprocal rank of the first result among the true top-k (0 if none)."""
    check_results(I, gt, k, k, nb)
    hit = _hits(I, gt, k, k)
    first = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, np.inf)
    return float((1.0 / first).mean())


def binomial_ci(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion p measured on n queries (95 % by default).

    With 100 queries one query is one point of recall: every recall is reported with this.
    """
    if n <= 0:
        return (math.nan, math.nan)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
