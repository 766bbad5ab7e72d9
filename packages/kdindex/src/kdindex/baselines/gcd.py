"""GCD (Jiang et al. 2022, block Givens coordinate descent), re-implemented for KDindex's Table 2.

An orthogonal rotation learned as a product of Givens rotations, jointly with PQ codebooks. After
each Adam step of the codebooks, the rotation is updated by one block of d/2 disjoint Givens
rotations whose pairs are chosen greedily by the largest entries of the Riemannian gradient
`A = G R^T - R G^T` (GCD-G; or random pairs, GCD-R), angle `theta_ij = -lr_rot * A_ij / max |A|`.
R stays exactly orthogonal. Searched as OPQ (its rotation).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..quantizers import CodebookQuantizer, train_quantizer
from ..student import Student
from ._common import _StudentBaseline

__all__ = ["GCD", "givens_block", "greedy_pairs"]


@functools.lru_cache(maxsize=8)
def _triu(d: int):
    return np.triu_indices(d, 1)


def greedy_pairs(A: np.ndarray, rng=None, select: str = "greedy") -> np.ndarray:
    """Disjoint coordinate pairs for one block of Givens rotations (Jiang et al. 2022).

    A: float (d, d) skew-symmetric Riemannian gradient. "greedy" (GCD-G): pairs taken in
    decreasing |A_ij|, skipping pairs that reuse a coordinate, until d // 2 pairs; "random"
    (GCD-R): a random perfect matching. Returns int64 (d // 2, 2) with i < j.
    """
    d = A.shape[0]
    if select == "random":
        perm = (rng or np.random.default_rng(0)).permutation(d)[: 2 * (d // 2)]
        return np.sort(perm.reshape(-1, 2), axis=1)
    iu, ju = _triu(d)
    a = -np.abs(A[iu, ju])
    m = min(len(a), 8 * d)  # the largest entries first: enough for d // 2 pairs almost always
    for cand in (np.argpartition(a, m - 1)[:m] if m < len(a) else None, None):
        order = np.argsort(a, kind="stable") if cand is None else cand[np.argsort(a[cand])]
        used = np.zeros(d, dtype=bool)
        out = []
        for o in order:
            i, j = iu[o], ju[o]
            if used[i] or used[j]:
                continue
            used[i] = used[j] = True
            out.append((i, j))
            if len(out) == d // 2:
                return np.array(out, dtype=np.int64)
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def givens_block(R: torch.Tensor, pairs: np.ndarray, theta: torch.Tensor) -> torch.Tensor:
    """`G R` with G the product of the disjoint Givens rotations `exp(theta (E_ij - E_ji))`.

    R: float (d, m); pairs int64 (p, 2) disjoint; theta float (p,). Rows i, j become
    `cos R_i + sin R_j` and `-sin R_i + cos R_j`. Returns a new tensor; an orthogonal R stays
    orthogonal (a product of rotations).
    """
    i = torch.as_tensor(pairs[:, 0])
    j = torch.as_tensor(pairs[:, 1])
    c, s = torch.cos(theta)[:, None], torch.sin(theta)[:, None]
    Ri, Rj = R[i], R[j]
    out = R.clone()
    out[i] = c * Ri + s * Rj
    out[j] = -s * Ri + c * Rj
    return out


class GCD(_StudentBaseline):
    """GCD, re-implemented (Jiang et al. 2022, Givens coordinate descent; KDindex Sec. 4.1): PQ
    codebooks after an orthogonal rotation R (d_out, d_out) learned as a product of Givens
    rotations by block coordinate descent, jointly with the codebooks (Adam on the codebooks, one
    Givens block per step on R: `after_step`). Searched as OPQ (rotation `R[:, :d_in]` applied to
    the zero-padded input)."""

    def __init__(self, student, cfg, metric, scale, R_full: np.ndarray):
        super().__init__(student, cfg, metric, scale)
        self.R = torch.from_numpy(np.array(R_full, dtype=np.float32))
        self.rng = np.random.default_rng(cfg.seed + 7919)
        self._sync()

    @classmethod
    def from_warm(cls, warm, xs, cfg, metric, scale):
        """A PQ warm start behind the rotation `lb_gcd_init`: the identity, or faiss's OPQ
        rotation (trained on xs) completed to a square orthogonal R."""
        d, d_out = warm.d_in, warm.d_out
        R = np.eye(d_out, dtype=np.float32)
        codebooks = warm.codebooks
        if cfg.gcd_init == "opq":
            opq = train_quantizer("OPQ", xs, B=warm.B, W=warm.W, seed=cfg.seed, opq_niter=10)
            U = np.linalg.svd(opq.rotation.astype(np.float64), full_matrices=True)[0]
            R = np.concatenate([opq.rotation, U[:, d:]], axis=1).astype(np.float32)
            codebooks = opq.codebooks
        warm = CodebookQuantizer("OPQ", d, d_out, codebooks, R[:, :d])
        return cls(Student.from_quantizer(warm, xs, metric, cfg.temperature), cfg, metric, scale, R)

    def _sync(self):
        self.s.rotation = self.R[:, : self.s.d_in].clone().requires_grad_(True)

    def after_step(self):
        """One block of Givens coordinate descent: with G = dL/dR (zero on the padded columns),
        `A = G R^T - R G^T`; dL along the rotation of the (i, j) plane by theta is theta A_ij."""
        g = self.s.rotation.grad
        if g is None:
            return
        G = torch.zeros_like(self.R)
        G[:, : self.s.d_in] = g
        M = G @ self.R.T
        A = (M - M.T).numpy()  # (G R^T)^T = R G^T
        amax = float(np.abs(A).max())
        if amax > 0:
            pairs = greedy_pairs(A, self.rng, self.cfg.gcd_select)
            theta = -self.cfg.gcd_lr * torch.from_numpy(A[pairs[:, 0], pairs[:, 1]] / amax)
            self.R = givens_block(self.R, pairs, theta.float())
        self._sync()
