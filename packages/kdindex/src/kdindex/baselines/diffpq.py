"""DiffPQ (Chen et al. 2020, differentiable PQ), re-implemented for KDindex's Table 2.

Product codebooks with a softmax-relaxed assignment, learned end to end. `lb_diffpq_mode = "sx"`
(DPQ-SX: one-hot forward, softmax gradient with temperature, the straight-through estimator) or
`"soft"` (the softmax mixture of codewords in the forward pass too). Searched as PQ.
"""

from __future__ import annotations

import torch

from ._common import _sq_dist, _StudentBaseline


class DiffPQ(_StudentBaseline):
    """DiffPQ, re-implemented (Chen et al. 2020; KDindex Sec. 4.1): PQ codebooks learned end to
    end through a softmax-relaxed assignment `p_k = softmax(-||x_b - c_k||^2 / tau_b)`.
    Mode "sx": forward one-hot, backward softmax (straight-through, DPQ-SX); "soft": forward
    `sum_k p_k c_k`. Trained with the KDindex distillation and reconstruction losses; no balance
    constraint, no iterative initialisation (those are KDindex's)."""

    def _st(self, xt, codes=None):
        if self.cfg.diffpq_mode == "sx":
            return super()._st(xt, codes)
        C, dsub = self.s.codebooks, self.s.codebooks.shape[2]
        parts = []
        for b in range(self.s.B):
            x_b = xt[:, b * dsub : (b + 1) * dsub]
            p = torch.softmax(-_sq_dist(x_b, C[b]) / self.s.tau[b], dim=1)
            parts.append(p @ C[b])
        return torch.cat(parts, 1)
