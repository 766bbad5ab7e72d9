"""The differentiable student quantizers of KDindex (Sec. 2.2, 3.5, Algorithm 2) and ADC search.

A student holds B codebooks of W codewords as a torch parameter, warm-started from a trained
faiss quantizer (`quantizers.CodebookQuantizer`, Sec. 4.3: "codebooks are warmed by original
quantization methods such as PQ, OPQ, and AQ"):

- PQ / OPQ: `codebooks` (B, W, d_out / B); `Q(x)` concatenates one codeword per subspace. OPQ's
  rotation stays the one faiss learned (choice: the paper does not say whether it is trained;
  Adam would not keep it orthogonal).
- AQ: `codebooks` (B, W, d_out); `Q(x)` sums one codeword per codebook. In training (the
  straight-through forward pass) the codes are assigned greedily on the residual (codebook b sees
  `x - sum_{b' < b} c_{t_b'}`); the index encodes with the quantizer's beam search
  (`to_quantizer`, `aq_beam`, the same encoder as the faiss AQ baseline).

Assignment probabilities `p_k = softmax(-||x_b - c_k||^2 / tau_b)` (Algorithm 1 line 2, on the
quantization distance); the hard code is their argmax or a balanced one from Sinkhorn
(`balance.balanced_assign`); the straight-through one-hot `(e - p).detach() + p` (Algorithm 2
line 11) makes `Q(x) = e~ C` differentiable in the codebooks and in p. Temperature (the paper is
silent): `tau_b` = `temperature` x the standard deviation of the warm-start distances of codebook
b, fixed at construction, so that the softmax is neither uniform nor one-hot at any data scale.

`adc_search` is the asymmetric-distance search: the query stays unquantized, a look-up table
holds its similarity to every codeword, and a document's score is the sum of its B entries
(plus the stored squared norm of its reconstruction for L2).

Device: a `Student` is built on the CPU (its warm start and temperatures included) and moved with
`.to(device)` (`check_device`); training and the balanced encoding run where its codebooks are
(`train.py` follows `student.codebooks.device`), `to_quantizer` hands numpy arrays back, and the
ADC search is numpy / faiss on the host.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from annrepro.devices import check_device  # re-exported: kdindex.api
from torch import nn

from .quantizers import CodebookQuantizer, CodebookShape

__all__ = ["Student", "adc_search", "check_device", "lookup_tables"]

log = logging.getLogger(__name__)


def _sq_dist(x: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """x (n, d), C (W, d) -> (n, W) squared L2 distances."""
    return (x * x).sum(1, keepdim=True) - 2 * x @ C.T + (C * C).sum(1)[None, :]


class Student(nn.Module, CodebookShape):
    """Differentiable PQ / OPQ / AQ student (Sec. 2.2, 3.5).

    kind: "PQ" | "OPQ" | "AQ"; codebooks: float32 (B, W, dsub); d_in, d_out: input and
    transformed dimensions; rotation: float32 (d_out, d_in) for OPQ, else None (zero padding);
    tau: float32 (B,) softmax temperatures of the assignment probabilities; aq_beam: AQ only,
    the beam width of the encoder of `to_quantizer` (the warm-start quantizer's).
    """

    def __init__(
        self,
        kind: str,
        codebooks: np.ndarray,
        d_in: int,
        d_out: int,
        rotation: np.ndarray | None = None,
        tau: np.ndarray | None = None,
        aq_beam: int = 5,
    ):
        super().__init__()
        self.aq_beam = int(aq_beam)  # AQ: beam of the index's encoder (`to_quantizer`)
        self.kind, self.d_in, self.d_out = kind, int(d_in), int(d_out)
        cb = torch.from_numpy(np.array(codebooks, dtype=np.float32))
        self.codebooks = nn.Parameter(cb)
        R = None if rotation is None else torch.from_numpy(np.array(rotation, dtype=np.float32))
        self.register_buffer("rotation", R)
        B = cb.shape[0]
        t = torch.ones(B) if tau is None else torch.as_tensor(np.asarray(tau, np.float32))
        self.register_buffer("tau", t)
        # temperatures of the distillation scores S(x, c) (metric similarities), per codebook
        self.register_buffer("tau_s", t.clone())

    @classmethod
    def from_quantizer(
        cls, q: CodebookQuantizer, xs: np.ndarray, metric: str = "l2", temperature: float = 0.1
    ):
        """Warm start from a trained quantizer; xs: float32 (n, d_in) documents that set the
        temperatures `tau` (assignment distances) and `tau_s` (metric scores of Eq. 6)."""
        s = cls(q.kind, q.codebooks, q.d_in, q.d_out, q.rotation, aq_beam=q.aq_beam)
        with torch.no_grad():
            xt = s.transform(torch.from_numpy(np.ascontiguousarray(xs, dtype=np.float32)))
            _, dists = s.assign(xt)
            s.tau.copy_(torch.stack([d.std() for d in dists]).clamp_min(1e-12) * temperature)
            sc = s.codeword_scores(xt, metric)
            s.tau_s.copy_(sc.std(dim=(0, 2)).clamp_min(1e-12) * temperature)
        return s

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """float (n, d_in) -> (n, d_out): OPQ rotation or zero padding."""
        if self.rotation is not None:
            return x @ self.rotation.T
        if self.d_out == self.d_in:
            return x
        return torch.nn.functional.pad(x, (0, self.d_out - self.d_in))

    def assign(self, xt: torch.Tensor, codes: torch.Tensor | None = None, straight_through=False):
        """Codes of transformed vectors and their reconstruction.

        xt: float (n, d_out); codes: int64 (n, B) imposed codes (e.g. balanced ones), else the
        nearest codeword (PQ) / greedy residual (AQ). Returns `(codes int64 (n, B), dists)` with
        dists a list of B float (n, W) squared distances; with `straight_through`, returns
        `(codes, dists, xr)` where xr float (n, d_out) is `Q(x) = e~ C` with
        `e~ = (e - p).detach() + p` (Algorithm 2 line 11).
        """
        n = xt.shape[0]
        C = self.codebooks
        out_codes = torch.empty((n, self.B), dtype=torch.int64, device=xt.device)
        dists, parts = [], []
        r = xt
        dsub = C.shape[2]
        for b in range(self.B):
            x_b = xt[:, b * dsub : (b + 1) * dsub] if self.product else r
            dist = _sq_dist(x_b, C[b])
            dists.append(dist)
            t = dist.argmin(1) if codes is None else codes[:, b]
            out_codes[:, b] = t
            e = torch.nn.functional.one_hot(t, self.W).to(xt.dtype)
            if straight_through:
                p = torch.softmax(-dist / self.tau[b], dim=1)
                e = (e - p).detach() + p
            part = e @ C[b]
            parts.append(part)
            if not self.product:
                r = r - part
        if not straight_through:
            return out_codes, dists
        xr = torch.cat(parts, 1) if self.product else xt - r
        return out_codes, dists, xr

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes int64 (n, B) -> float (n, d_out) reconstructions."""
        parts = [self.codebooks[b][codes[:, b]] for b in range(self.B)]
        return torch.cat(parts, 1) if self.product else torch.stack(parts).sum(0)

    def codeword_scores(self, xt: torch.Tensor, metric: str) -> torch.Tensor:
        """`S(x, c^b_k)` float (n, B, W) (Eq. 6): inner product or minus squared L2, in the
        codeword's subspace (PQ / OPQ) or the full space (AQ)."""
        C = self.codebooks
        dsub = C.shape[2]
        out = []
        for b in range(self.B):
            x_b = xt[:, b * dsub : (b + 1) * dsub] if self.product else xt
            if metric == "ip":
                out.append(x_b @ C[b].T)
            elif metric == "l2":
                out.append(-_sq_dist(x_b, C[b]))
            else:
                raise ValueError(f"unknown metric {metric!r}")
        return torch.stack(out, 1)

    def to_quantizer(self) -> CodebookQuantizer:
        """The learned codebooks as a `CodebookQuantizer` (no faiss object; AQ encodes with
        faiss's beam search of width `aq_beam`, as the AQ baseline)."""
        R = None if self.rotation is None else self.rotation.detach().cpu().numpy().copy()
        cb = self.codebooks.detach().cpu().numpy().copy()
        return CodebookQuantizer(self.kind, self.d_in, self.d_out, cb, R, aq_beam=self.aq_beam)


def lookup_tables(q: CodebookQuantizer, xq_t: np.ndarray) -> np.ndarray:
    """float32 (nq, B, W) inner products of transformed queries (nq, d_out) with each codeword
    (in its subspace for PQ / OPQ): the ADC look-up tables."""
    nq = len(xq_t)
    dsub = q.codebooks.shape[2]
    out = np.empty((nq, q.B, q.W), dtype=np.float32)
    for b in range(q.B):
        sub = xq_t[:, b * dsub : (b + 1) * dsub] if q.product else xq_t
        out[:, b] = sub @ q.codebooks[b].T
    return out


def adc_search(
    q: CodebookQuantizer,
    codes: np.ndarray,
    xq: np.ndarray,
    k: int,
    metric: str,
    norms2: np.ndarray | None = None,
    base_batch: int = 1 << 16,
):
    """Exhaustive asymmetric-distance search over nb codes.

    q: quantizer; codes int (nb, B); xq float32 (nq, d_in); metric "l2" | "ip"; norms2 float32
    (nb,) squared norms of the reconstructions (computed when None). Score of document j:
    `sum_b LUT[b, codes[j, b]]` (inner product with Q(d_j)); for L2, `|q|^2 - 2 ip + |Q(d_j)|^2`.
    Returns `(D, I)`: float32 (nq, k) squared distances ascending / inner products descending,
    int64 (nq, k).
    """
    import faiss

    if metric not in ("l2", "ip"):
        raise ValueError(f"unknown metric {metric!r}")
    codes = np.asarray(codes)
    nb = len(codes)
    if not 1 <= k <= nb:
        raise ValueError(f"k={k} must be in [1, nb={nb}]")
    xq_t = q.transform(xq)
    lut = lookup_tables(q, xq_t)
    nq = len(xq_t)
    ip = metric == "ip"
    if not ip and norms2 is None:
        norms2 = reconstruction_norms2(q, codes)
    qn = (xq_t * xq_t).sum(1)
    heap = faiss.ResultHeap(nq, k, keep_max=ip)
    for b0 in range(0, nb, base_batch):
        c = codes[b0 : b0 + base_batch]
        S = np.zeros((nq, len(c)), dtype=np.float32)
        for b in range(q.B):
            S += lut[:, b, c[:, b]]
        if not ip:
            S = qn[:, None] - 2 * S + norms2[None, b0 : b0 + len(c)]
        kk = min(k, S.shape[1])
        part = np.argpartition(-S if ip else S, kk - 1, axis=1)[:, :kk]
        Dc = np.take_along_axis(S, part, axis=1)
        Ic = (part + b0).astype(np.int64)
        if kk < k:
            pad = -np.inf if ip else np.inf
            Dc = np.pad(Dc, ((0, 0), (0, k - kk)), constant_values=pad)
            Ic = np.pad(Ic, ((0, 0), (0, k - kk)), constant_values=-1)
        heap.add_result(np.ascontiguousarray(Dc, dtype=np.float32), np.ascontiguousarray(Ic))
    heap.finalize()
    return heap.D, heap.I


def reconstruction_norms2(q: CodebookQuantizer, codes: np.ndarray, batch: int = 1 << 16):
    """float32 (nb,) squared norms of the reconstructions (AQ needs them: codewords are not
    orthogonal, so |Q(d)|^2 is not the sum of per-codebook terms)."""
    out = np.empty(len(codes), dtype=np.float32)
    for i0 in range(0, len(codes), batch):
        r = q.decode(codes[i0 : i0 + batch])
        out[i0 : i0 + len(r)] = (r * r).sum(1)
    return out
