"""Multi-codebook quantizers (PQ, OPQ, AQ) held as plain arrays, trained with faiss.

KDindex (Lu et al., NeurIPS 2023) quantizes every vector with `B` codebooks of `W` codewords
(Sec. 2.2): PQ and OPQ concatenate one codeword per subspace, AQ sums one full-dimensional codeword
per codebook. The baselines of Table 2 are "implemented based on the Faiss ANNS library" with
`B = 8`, `W = 256` (App. B.2, Sec. 4.1). The later KDindex student learns codebooks of the same
shape, so a quantizer here is just arrays (`codebooks`, optional `rotation`, zero padding) that a
trained faiss object or a learned model can fill; encoding goes through faiss when one is attached.

Choice where the paper is silent: AQ is faiss's `ResidualQuantizer` (beam search encoding, as
Babenko & Lempitsky's AQ, with least-squares codebook refinement), not `LocalSearchQuantizer`; see
`train_quantizer`. Every AQ quantizer, trained by faiss or learned (KDindex (AQ)), encodes with
the same encoder: faiss's residual beam search of width `aq_beam` over its codebooks
(`CodebookQuantizer.encode`), so equal codebooks give equal codes; beam 1 is greedy residual
assignment.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["KINDS", "CodebookQuantizer", "train_quantizer", "pad_dim", "quantizer_memory_bytes"]

log = logging.getLogger(__name__)

KINDS = ("PQ", "OPQ", "AQ")


def pad_dim(d: int, B: int) -> int:
    """Smallest multiple of B that is >= d (PQ needs the dimension to split into B subspaces)."""
    return -(-d // B) * B


def quantizer_memory_bytes(kind: str, nb: int, d: int, B: int = 8, W: int = 256) -> dict[str, int]:
    """Bytes of a compressed index of nb vectors of dimension d (Table 3), from shapes alone.

    codes: nb * B * ceil(log2 W) bits, packed; codebooks float32: PQ/OPQ `W x d'` (B subspaces of
    d'/B, d' = d padded to a multiple of B), AQ `B x W x d`; OPQ adds its float32 rotation
    `d' x d`. The posting lists are not counted: they are the codes sorted by codeword (a
    permutation of ids per codebook, 4 bytes per id and codebook if stored). Returns
    {"codes", "codebooks", "rotation", "total"}; equals `CodebookQuantizer.memory_bytes`.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown quantizer kind {kind!r}; expected one of {KINDS}")
    bits = int(np.ceil(np.log2(W)))
    code_bytes = -(-nb * B * bits // 8)
    dp = pad_dim(d, B)
    cb = 4 * (B * W * d if kind == "AQ" else W * dp)
    rot = 4 * dp * d if kind == "OPQ" else 0
    return {"codes": code_bytes, "codebooks": cb, "rotation": rot, "total": code_bytes + cb + rot}


class CodebookShape:
    """B codebooks of W codewords (`codebooks`: (B, W, d_sub)), for the numpy quantizers and the
    torch students alike; PQ and OPQ split the vector (product), AQ adds full-width codewords."""

    @property
    def product(self) -> bool:
        return self.kind in ("PQ", "OPQ")

    @property
    def B(self) -> int:
        return self.codebooks.shape[0]

    @property
    def W(self) -> int:
        return self.codebooks.shape[1]


@dataclass
class CodebookQuantizer(CodebookShape):
    """B codebooks of W codewords, with the input transform that precedes them.

    kind: "PQ" | "OPQ" (product: `codebooks` float32 (B, W, d_out / B), one codeword per subspace
    concatenated) or "AQ" (additive: `codebooks` float32 (B, W, d_out), codewords summed).
    d_in: input dimension; d_out: dimension after zero padding / rotation.
    rotation: float32 (d_out, d_in) applied as `x @ rotation.T` (OPQ), or None: then the input is
    zero padded to d_out (padding changes neither L2 distances nor inner products).
    faiss_quantizer: the trained faiss `ProductQuantizer` / `ResidualQuantizer`, or None for
    codebooks learned elsewhere; it does not change the codes (see `encode`).
    aq_beam: AQ only: beam width of the residual beam search that encodes (faiss's
    `max_beam_size`; its default 5; 1 = greedy residual assignment).
    """

    kind: str
    d_in: int
    d_out: int
    codebooks: np.ndarray
    rotation: np.ndarray | None = None
    faiss_quantizer: object = field(default=None, repr=False)
    aq_beam: int = 5

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown quantizer kind {self.kind!r}; expected one of {KINDS}")
        self.codebooks = np.ascontiguousarray(self.codebooks, dtype=np.float32)
        if self.codebooks.ndim != 3:
            raise ValueError(f"codebooks must be (B, W, dsub); got {self.codebooks.shape}")
        B, _, dsub = self.codebooks.shape
        want = self.d_out // B if self.product else self.d_out
        if self.product and self.d_out % B:
            raise ValueError(f"d_out={self.d_out} is not a multiple of B={B}")
        if dsub != want:
            raise ValueError(f"codebooks {self.codebooks.shape} do not fit d_out={self.d_out}")
        self.aq_beam = int(self.aq_beam)
        if self.aq_beam < 1:
            raise ValueError(f"aq_beam={self.aq_beam} must be >= 1 (1 = greedy residual search)")
        if self.rotation is not None:
            self.rotation = np.ascontiguousarray(self.rotation, dtype=np.float32)
            if self.rotation.shape != (self.d_out, self.d_in):
                raise ValueError(
                    f"rotation {self.rotation.shape} is not (d_out, d_in) = "
                    f"({self.d_out}, {self.d_in})"
                )

    @property
    def bits_per_code(self) -> float:
        return self.B * float(np.log2(self.W))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """x: float32 (n, d_in) -> float32 (n, d_out): OPQ rotation, or zero padding."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ValueError(f"expected (n, {self.d_in}) vectors; got {x.shape}")
        if self.rotation is not None:
            return np.ascontiguousarray(x @ self.rotation.T)
        if self.d_out == self.d_in:
            return x
        out = np.zeros((len(x), self.d_out), dtype=np.float32)
        out[:, : self.d_in] = x
        return out

    def encode(self, x: np.ndarray, batch: int = 1 << 16) -> np.ndarray:
        """x: float32 (n, d_in) -> codes int32 (n, B), each in [0, W).

        PQ / OPQ: the nearest codeword per subspace (faiss's encoder when attached: the same
        codes). AQ: faiss's residual beam search of width `aq_beam` over these codebooks
        (`aq_encoder`), whether they were trained by faiss or learned: one encoder for the AQ
        baseline and KDindex (AQ).
        """
        n = len(x)
        codes = np.empty((n, self.B), dtype=np.int32)
        rq = None if self.product else self.aq_encoder()
        for i0 in range(0, n, batch):
            xt = self.transform(x[i0 : i0 + batch])
            if rq is not None:
                codes[i0 : i0 + len(xt)] = _unpack_codes(rq.compute_codes(xt), self.B, self.W)
            elif self.faiss_quantizer is not None:
                raw = self.faiss_quantizer.compute_codes(xt)
                codes[i0 : i0 + len(xt)] = _unpack_codes(raw, self.B, self.W)
            else:
                codes[i0 : i0 + len(xt)] = self._assign(xt)
        return codes

    def aq_encoder(self):
        """A faiss `ResidualQuantizer` holding these AQ codebooks (`copy_array_to_vector` into
        `rq.codebooks`, `is_trained`), searching with beam `aq_beam`. Built from the arrays on
        every call, so codebooks changed in place are always the ones used."""
        import faiss

        if self.product:
            raise ValueError("aq_encoder is for additive (AQ) codebooks only")
        B, W, d = self.codebooks.shape
        rq = faiss.ResidualQuantizer(d, B, int(np.log2(W)))
        faiss.copy_array_to_vector(np.ascontiguousarray(self.codebooks.ravel()), rq.codebooks)
        rq.is_trained = True
        rq.max_beam_size = self.aq_beam
        return rq

    def _assign(self, xt: np.ndarray) -> np.ndarray:
        """Nearest codeword per subspace (PQ / OPQ)."""
        import faiss

        codes = np.empty((len(xt), self.B), dtype=np.int32)
        dsub = self.codebooks.shape[2]
        for b in range(self.B):
            sub = np.ascontiguousarray(xt[:, b * dsub : (b + 1) * dsub])
            _, I = faiss.knn(sub, self.codebooks[b], 1)
            codes[:, b] = I[:, 0]
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """codes: int (n, B) -> reconstructions float32 (n, d_out) in the transformed space."""
        codes = np.asarray(codes)
        if self.product:
            parts = [self.codebooks[b][codes[:, b]] for b in range(self.B)]
            return np.ascontiguousarray(np.concatenate(parts, axis=1))
        out = np.zeros((len(codes), self.d_out), dtype=np.float32)
        for b in range(self.B):
            out += self.codebooks[b][codes[:, b]]
        return out

    def codeword_scores(self, xq_t: np.ndarray, metric: str) -> np.ndarray:
        """Similarity S(q, c^b_w) of each transformed query to each codeword (Eq. 1).

        xq_t: float32 (nq, d_out) already transformed. Returns float32 (nq, B, W), higher is
        more similar: the inner product (metric "ip") or minus the squared L2 distance ("l2"),
        taken in the codeword's subspace for PQ/OPQ and in the full space for AQ.
        """
        nq = len(xq_t)
        out = np.empty((nq, self.B, self.W), dtype=np.float32)
        dsub = self.codebooks.shape[2]
        for b in range(self.B):
            # a contiguous copy of the subspace: the same BLAS result as the strided view, faster
            q = np.ascontiguousarray(xq_t[:, b * dsub : (b + 1) * dsub]) if self.product else xq_t
            C = self.codebooks[b]
            ip = q @ C.T
            if metric == "ip":
                out[:, b] = ip
            elif metric == "l2":
                out[:, b] = 2 * ip - (q * q).sum(1, keepdims=True) - (C * C).sum(1)[None, :]
            else:
                raise ValueError(f"unknown metric {metric!r}")
        return out

    def memory_bytes(self, nb: int) -> dict[str, int]:
        """Bytes of the compressed index of nb vectors (Table 3): codes + codebooks + rotation.

        Codes are packed at log2(W) bits per codebook (8 bits for W = 256), codebooks and the
        OPQ rotation are float32. Returns {"codes", "codebooks", "rotation", "total"}.
        """
        code_bytes = -(-nb * self.B * int(np.ceil(np.log2(self.W))) // 8)
        cb = self.codebooks.size * 4
        rot = 0 if self.rotation is None else self.rotation.size * 4
        return {
            "codes": code_bytes,
            "codebooks": cb,
            "rotation": rot,
            "total": code_bytes + cb + rot,
        }


def _unpack_codes(raw: np.ndarray, B: int, W: int) -> np.ndarray:
    """faiss packed codes uint8 (n, code_size) -> int32 (n, B) (8-bit codes: one byte each)."""
    if W != 256:
        import faiss

        nbits = int(np.log2(W))
        out = np.empty((len(raw), B), dtype=np.int32)
        for i in range(len(raw)):
            rd = faiss.BitstringReader(faiss.swig_ptr(raw[i]), raw.shape[1])
            out[i] = [rd.read(nbits) for _ in range(B)]
        return out
    return raw[:, :B].astype(np.int32)


def train_quantizer(
    kind: str,
    xt: np.ndarray,
    B: int = 8,
    W: int = 256,
    seed: int = 0,
    opq_niter: int = 50,
    aq_beam: int = 5,
    aq_refine: bool = True,
) -> CodebookQuantizer:
    """Train a faiss PQ, OPQ or AQ with B codebooks of W codewords (Sec. 4.1: B = 8, W = 256).

    xt: float32 (n, d) training vectors (the documents: PQ, OPQ and AQ learn from "document
    embeddings without the query information", Sec. 1). seed: k-means seed (faiss `cp.seed`);
    callers also vary the training sample with it.
    - PQ: `faiss.ProductQuantizer(d', B, log2 W)` on the input zero padded to d' = a multiple of B.
    - OPQ: `faiss.OPQMatrix(d, B, d')` (learned rotation, `opq_niter` alternations, faiss's
      default 50), then a PQ on the rotated vectors.
    - AQ: `faiss.ResidualQuantizer(d, B, log2 W)` with beam search of width `aq_beam` (faiss's
      default 5) and, with `aq_refine`, least-squares refinement of all codebooks jointly
      (`Train_refine_codebook`), the closest faiss has to Babenko & Lempitsky's AQ [3] (beam
      search encoding, joint least-squares codebooks) at a training cost that fits the small
      scale; `LocalSearchQuantizer` is the alternative (slower to train and encode on 2 cores).
      The refinement needs at least B * W training vectors; with fewer it is skipped (logged).
    """
    import time

    if kind not in KINDS:
        raise ValueError(f"unknown quantizer kind {kind!r}; expected one of {KINDS}")
    nbits = int(np.log2(W))
    if 2**nbits != W:
        raise ValueError(f"W={W} must be a power of two")
    xt = np.ascontiguousarray(xt, dtype=np.float32)
    d = xt.shape[1]
    key = _trained_key(kind, xt, B, W, seed, opq_niter, aq_beam, aq_refine)
    if (held := _TRAINED.get(key)) is not None:
        _TRAINED.move_to_end(key)
        log.info("faiss %s on these %d x %d vectors and settings: trained already", kind, *xt.shape)
        return _copy(held)
    # one faiss call with no progress of its own (minutes on a sample of 100k): say when it
    # starts and ends
    how = {"AQ": f"residual, beam {aq_beam}", "OPQ": f"{opq_niter} rotation iterations"}
    log.info(
        "training faiss %s (%d x %d codewords, %s) on %d x %d vectors ...",
        kind,
        B,
        W,
        how.get(kind, "k-means per subspace"),
        len(xt),
        d,
    )
    t0 = time.perf_counter()
    q = _train_faiss(kind, xt, B, nbits, seed, opq_niter, aq_beam, aq_refine)
    log.info("trained faiss %s in %.1f s", kind, time.perf_counter() - t0)
    _TRAINED[key] = q
    while len(_TRAINED) > TRAINED_MAX:
        _TRAINED.popitem(last=False)
    return _copy(q)


#: `train_quantizer` is a pure function of its arguments (faiss's k-means, OPQ and residual
#: training are deterministic at a fixed seed and thread count), and the tables train the same
#: quantizer many times (a baseline, the KDindex warm start of each ablation variant, the warm
#: start of several learned baselines): its last TRAINED_MAX results are kept in this process,
#: keyed by a hash of the training vectors, every setting and faiss's thread count, and handed
#: out as copies (the arrays copied; the faiss encoder, which is only read, shared).
#: `_TRAINED.clear()` forgets them.
TRAINED_MAX = 32
_TRAINED: OrderedDict = OrderedDict()


def _trained_key(kind, xt: np.ndarray, B, W, seed, opq_niter, aq_beam, aq_refine) -> tuple:
    import faiss

    digest = hashlib.sha256(xt.tobytes()).hexdigest()
    settings = (int(B), int(W), int(seed), int(opq_niter), int(aq_beam), bool(aq_refine))
    return (kind, xt.shape, digest, settings, faiss.omp_get_max_threads())


def _copy(q: CodebookQuantizer) -> CodebookQuantizer:
    rotation = None if q.rotation is None else q.rotation.copy()
    return replace(q, codebooks=q.codebooks.copy(), rotation=rotation)


def _train_faiss(kind, xt, B, nbits, seed, opq_niter, aq_beam, aq_refine) -> CodebookQuantizer:
    """`train_quantizer`'s faiss training (xt: float32 (n, d), checked)."""
    import faiss

    W, d = 2**nbits, xt.shape[1]
    if kind == "AQ":
        rq = faiss.ResidualQuantizer(d, B, nbits)
        rq.train_type = faiss.ResidualQuantizer.Train_progressive_dim
        if aq_refine and len(xt) >= B * W:
            rq.train_type |= faiss.ResidualQuantizer.Train_refine_codebook
        elif aq_refine:
            log.warning(
                "AQ: %d training vectors < B * W = %d: codebook refinement skipped", len(xt), B * W
            )
        rq.max_beam_size = aq_beam
        rq.cp.seed = seed
        rq.train(xt)
        cb = faiss.vector_to_array(rq.codebooks).reshape(B, W, d)
        return CodebookQuantizer("AQ", d, d, cb, None, rq, aq_beam=aq_beam)
    d_out = pad_dim(d, B)
    pq = faiss.ProductQuantizer(d_out, B, nbits)
    pq.cp.seed = seed
    rotation = None
    if kind == "OPQ":
        opq = faiss.OPQMatrix(d, B, d_out)
        opq.niter = opq_niter
        inner = faiss.ProductQuantizer(d_out, B, nbits)
        inner.cp.seed = seed
        opq.pq = inner
        opq.train(xt)
        rotation = faiss.vector_to_array(opq.A).reshape(d_out, d)
        xr = np.ascontiguousarray(xt @ rotation.T)
    else:
        xr = np.zeros((len(xt), d_out), dtype=np.float32)
        xr[:, :d] = xt
    pq.train(xr)
    cb = faiss.vector_to_array(pq.centroids).reshape(B, W, d_out // B)
    return CodebookQuantizer(kind, d, d_out, cb, rotation, pq)
