"""RepCONC (Zhan et al. 2022), re-implemented for KDindex's Table 2.

PQ with the uniform-clustering constraint (the codes of each mini-batch's documents come from a
Sinkhorn-Knopp plan with uniform codeword marginals, `kdindex.balance`, rounded under a capacity
of ceil(n / W) per codeword, before the straight-through reconstruction) and a contrastive
ranking loss (InfoNCE of every teacher neighbour against the other documents of the mini-batch,
on the quantized documents). Searched as PQ.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..balance import SinkhornWarning, normalised_cost, sinkhorn_plan
from ._common import _sq_dist, _StudentBaseline

__all__ = ["RepCONC", "capacity_round"]


def capacity_round(plan: np.ndarray, cap: int) -> np.ndarray:
    """Hard codes int64 (M,) from a transport plan float (M, W), at most `cap` rows per codeword.

    Every unassigned row proposes its best codeword (largest plan entry) that still has room;
    each codeword accepts its `cap - load` best proposals; repeat until every row is assigned
    (each round assigns all rows or fills a codeword). Needs `cap * W >= M`. With
    `cap = ceil(M / W)` this is RepCONC's uniform clustering: no list exceeds ceil(M / W). Choice:
    the argmax of the plan (Algorithm 1) is only approximately uniform when rows are alike.
    """
    M, W = plan.shape
    if cap * W < M:
        raise ValueError(f"capacity {cap} x {W} codewords < {M} rows")
    P = np.array(plan, dtype=np.float64)
    codes = np.full(M, -1, dtype=np.int64)
    load = np.zeros(W, dtype=np.int64)
    while (free := np.flatnonzero(codes < 0)).size:
        Pf = P[free]
        Pf[:, load >= cap] = -np.inf
        choice = Pf.argmax(1)
        val = Pf[np.arange(len(free)), choice]
        order = np.lexsort((-val, choice))  # grouped by codeword, best value first
        ch = choice[order]
        start = np.searchsorted(ch, ch, side="left")
        rank = np.arange(len(ch)) - start
        ok = rank < (cap - load[ch])
        codes[free[order[ok]]] = ch[ok]
        load += np.bincount(ch[ok], minlength=W)
    return codes


class RepCONC(_StudentBaseline):
    """RepCONC, re-implemented (Zhan et al. 2022; KDindex Sec. 4.1): PQ whose training codes obey
    the uniform-clustering constraint (the mini-batch's documents are assigned to codewords by
    Sinkhorn-Knopp with uniform codeword marginals and capacity rounding, `balanced_codes`, then
    reconstructed straight-through) and a contrastive ranking loss: for every teacher neighbour
    d+ of query q,
    `-log exp(s(q, Q(d+))) / (exp(s(q, Q(d+))) + sum_{d-} exp(s(q, Q(d-))))` over the other
    queries' neighbours in the batch (in-batch negatives), added to the KDindex objective. The
    base is encoded by the nearest codeword (the constraint shapes training, as in RepCONC)."""

    sinkhorn_misses = 0

    def balanced_codes(self, xt: torch.Tensor) -> torch.Tensor:
        """int64 (n, B): codes of transformed vectors xt (n, d_out) under the uniform-clustering
        constraint: per codebook, the Sinkhorn-Knopp plan with uniform codeword marginals
        (`balance.sinkhorn_plan` on the normalised squared distances, as Algorithm 1), rounded
        to codes under the capacity ceil(n / W) per codeword (`capacity_round`)."""
        C, dsub = self.s.codebooks.detach(), self.s.codebooks.shape[2]
        n = len(xt)
        cap = -(-n // self.s.W)
        codes = torch.empty((n, self.s.B), dtype=torch.int64)
        with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SinkhornWarning)
            for b in range(self.s.B):
                x_b = xt[:, b * dsub : (b + 1) * dsub]
                cost = normalised_cost(_sq_dist(x_b, C[b]).double().numpy())
                plan = sinkhorn_plan(cost, self.cfg.sinkhorn_reg, num_iter=self.cfg.sinkhorn_iter)
                codes[:, b] = torch.from_numpy(capacity_round(plan, cap))
        # a non-converged plan is still rounded; counted and logged, not hidden
        for w in caught:
            if issubclass(w.category, SinkhornWarning):
                self.sinkhorn_misses += 1
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return codes

    def batch_loss(self, xq, xd, ids: torch.Tensor | None = None):
        n, K, d = xd.shape
        cfg = self.cfg
        qt, dt = self.s.transform(xq), self.s.transform(xd.reshape(n * K, d))
        dr = self._st(dt, self.balanced_codes(dt.detach()))
        loss = self._kd_terms(qt, dt, self._st(qt), dr, n, K)
        # contrastive ranking loss with in-batch negatives
        if self.metric == "ip":
            S = qt @ dr.T
        else:
            S = -_sq_dist(qt, dr)
        S = S / (S.detach().std().clamp_min(1e-12) * cfg.contrast_temperature)
        pos_idx = torch.arange(n)[:, None] * K + torch.arange(K)[None, :]  # own list: (n, K)
        own = torch.zeros((n, n * K), dtype=torch.bool)
        own.scatter_(1, pos_idx, True)
        if ids is not None:  # a document in the query's own list is never its negative
            own |= (ids.reshape(n, K)[:, :, None] == ids[None, None, :]).any(1)
        neg = S.masked_fill(own, -torch.inf)
        lse_neg = torch.logsumexp(neg, dim=1, keepdim=True)  # (n, 1)
        pos = S.gather(1, pos_idx)
        nce = (torch.logaddexp(pos, lse_neg.expand_as(pos)) - pos).mean()
        return loss + cfg.contrast_weight * nce
