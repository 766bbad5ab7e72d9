"""DeepPQ (Gao et al. 2019, deep progressive quantization), re-implemented for KDindex's Table 2.

B additive codebooks applied stage by stage to the residual, relaxed (straight-through softmax)
assignments, trained end to end on the *progressive* objective: every prefix of stages
`Q_b(x) = sum_{b' <= b} c_{t_b'}` is asked to reconstruct and to keep the teacher's neighbours
on the same codewords (mean over b). Searched as AQ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import reconstruction_loss
from ._common import _distill, _sq_dist, _StudentBaseline


class DeepPQ(_StudentBaseline):
    """DeepPQ, re-implemented (Gao et al. 2019, deep progressive quantization; KDindex Sec. 4.1):
    B additive codebooks, stage b quantizing the residual of stages < b with a straight-through
    softmax assignment; the loss is the mean over the B stages of the KDindex objective applied
    to the stage-b approximation `Q_b(x)` (reconstruction, Eq. 2) and to the stage-b assignment
    distributions of the query and its teacher neighbours (distillation, Eq. 6), so that every
    prefix of the code is a usable (progressive) code. Searched as AQ."""

    warm_kind = "AQ"  # residual k-means: the stages of the progressive code

    def _progressive(self, xt: torch.Tensor):
        """xt (n, d) -> (list of B stage reconstructions (n, d), list of B logits (n, W))."""
        C = self.s.codebooks
        recs, logits = [], []
        acc = torch.zeros_like(xt)
        for b in range(self.s.B):
            dist = _sq_dist(xt - acc, C[b])
            p = torch.softmax(-dist / self.s.tau[b], dim=1)
            e = F.one_hot(dist.argmin(1), self.s.W).to(xt.dtype)
            acc = acc + ((e - p).detach() + p) @ C[b]
            recs.append(acc)
            logits.append(-dist / self.s.tau[b])
        return recs, logits

    def batch_loss(self, xq, xd):
        n, K, d = xd.shape
        cfg = self.cfg
        qt, dt = self.s.transform(xq), self.s.transform(xd.reshape(n * K, d))
        rq, lq = self._progressive(qt)
        rd, ld = self._progressive(dt)
        total = 0.0
        for b in range(self.s.B):
            if cfg.loss == "distribution":
                lqb = lq[b][:, None, :]  # one codebook: (n, 1, W)
                ldb = ld[b].reshape(n, K, 1, -1)
                distill = _distill(cfg, self.metric, lq=lqb, ld=ldb)
            else:
                distill = _distill(
                    cfg, self.metric, qt=qt, dt=dt.reshape(n, K, -1), dr=rd[b].reshape(n, K, -1)
                )
            rec = reconstruction_loss(qt, rq[b]) + reconstruction_loss(dt, rd[b])
            total = total + distill + cfg.rec_weight * rec
        return total / self.s.B
