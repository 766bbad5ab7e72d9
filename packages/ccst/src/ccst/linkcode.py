"""Link and Code (L&C; Douze, Sablayrolles & Jegou, CVPR 2018), the baseline of CCST Table 3.

faiss >= 1.8 dropped L&C's `ReconstructFromNeighbors`, so the refinement is written here on top of
faiss's HNSW over PQ codes (`IndexHNSWPQ`, the "HNSW32_PQ{m}" index of the authors' benchmark):

1. the graph: HNSW built over the PQ codes of the database (PQ trained on xt); each vertex's
   level-0 links are reordered by increasing distance (faiss `reorder_links`);
2. the regression (L&C Sec. 4): vector i is reconstructed from the PQ reconstructions of itself
   and of its level-0 neighbours, T_i = [q(x_i); q(x_j1); ..; q(x_jM0)] ((M0 + 1) x d), as
   x^_i = beta^T T_i, separately on each of `beta_nsq` blocks of dimensions ("the M of coder",
   CCST Table 3 caption: 8), with beta taken from a per-block codebook of `beta_k` = 256 weight
   vectors, i.e. one byte per block;
3. the codebooks are learned as in the authors' `neighbor_codec.neighbors_kmeans`: least-squares
   betas of each training vector, k-means of those, then `beta_niter` rounds of assigning each
   vector its best beta and refitting every beta by least squares over its vectors;
4. search: HNSW search with PQ (asymmetric) distances, then the returned candidates are re-ranked
   by their distance to the refined reconstructions x^ (`k_reorder`, all by default as in the
   authors' benchmark).

Choices where the authors' code differs or is silent (each a parameter):
- the per-vector least squares is solved in batch by ridge-regularised normal equations
  (`ridge`, relative to the mean diagonal of T T^T) instead of lstsq with rcond=0.01, one call per
  vector;
- `keep_identity`: beta = (1, 0, .., 0) (the vector's own code alone) is kept as entry 0 of every
  codebook, so that the refined reconstruction is never worse than the PQ one (ours);
- empty clusters during the refit keep their previous beta (the authors split a large cluster);
- neighbour slots without a link (-1) use the vertex's own code;
- blocks are contiguous and of near-equal sizes (np.array_split) when beta_nsq does not divide d;
- the refined reconstructions are kept decoded in memory (nb x d float32) for re-ranking: the
  search speed is an upper bound of an implementation that decodes candidates on the fly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss
import numpy as np

from ccst._indexes import add_in_chunks

__all__ = ["LinkCode", "LinkCodeParams"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkCodeParams:
    """Settings of L&C. Defaults: the authors' benchmark (bench_link_and_code.py: HNSW32,
    efConstruction 200, beta_k 256, beta_niter 10, beta_ntrain 250000, k_reorder all; PQ k-means
    iterations pq_niter: faiss's default 25), except
    beta_nsq = 8 (CCST Table 3 caption: 'the M of coder is set to 8') and efSearch = 16 (the
    benchmark takes it from the command line; 16 is faiss's default)."""

    pq_m: int
    pq_niter: int = 25
    hnsw_M: int = 32
    ef_construction: int = 200
    ef_search: int = 16
    beta_nsq: int = 8
    beta_k: int = 256
    beta_niter: int = 10
    beta_ntrain: int = 250_000
    k_reorder: int = -1
    ridge: float = 1e-3
    keep_identity: bool = True
    seed: int = 0

    def __post_init__(self):
        if min(self.pq_m, self.hnsw_M, self.beta_nsq, self.beta_k, self.ef_search) < 1:
            raise ValueError("pq_m, hnsw_M, beta_nsq, beta_k and ef_search must be positive")
        if self.beta_k > 256:
            raise ValueError(f"beta_k={self.beta_k}: codes are one byte per block (<= 256)")
        if self.beta_niter < 0 or self.ridge < 0:
            raise ValueError("beta_niter and ridge must be non-negative")


def _solve_betas(G: np.ndarray, b: np.ndarray, ridge: float) -> np.ndarray:
    """argmin_beta ||T^T beta - x||^2 + lam ||beta||^2 for each row: (G + lam I) beta = b.

    G: (n, K, K) = T T^T; b: (n, K) = T x; lam = ridge * mean(diag G) per row."""
    K = G.shape[-1]
    lam = ridge * np.trace(G, axis1=1, axis2=2) / K + 1e-12
    A = G + lam[:, None, None] * np.eye(K)
    return np.linalg.solve(A, b[..., None])[..., 0]


def _assign(T: np.ndarray, x: np.ndarray, B: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Index of the codebook row beta minimising ||beta^T T_i - x_i||^2 for each row i.

    T: (n, K, dsub) neighbour tables; x: (n, dsub) targets; B: (k, K) codebook. Returns int64
    (n,). Computed directly, one matrix product B @ [T_i ...] per chunk of rows."""
    n, K, dsub = T.shape
    out = np.empty(n, dtype=np.int64)
    B = B.astype(np.float32)  # float32 is ample for an argmin and halves the cost
    for i0 in range(0, n, chunk):
        Tc = T[i0 : i0 + chunk].astype(np.float32)
        m = len(Tc)
        R = (B @ Tc.transpose(1, 0, 2).reshape(K, m * dsub)).reshape(len(B), m, dsub)
        R -= x[None, i0 : i0 + chunk].astype(np.float32)
        out[i0 : i0 + chunk] = np.argmin((R * R).sum(-1), axis=0)
    return out


def _sum_by(idx: np.ndarray, v: np.ndarray, k: int) -> np.ndarray:
    """out[c] = sum of v[i] over i with idx[i] == c; v: (n, ...). Returns (k, ...)."""
    order = np.argsort(idx, kind="stable")
    counts = np.bincount(idx, minlength=k)
    out = np.zeros((k, *v.shape[1:]), dtype=v.dtype)
    used = np.flatnonzero(counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[used]
    out[used] = np.add.reduceat(v[order], starts, axis=0)
    return out


class LinkCode:
    """L&C index over xb: float32 (nb, d), L2 only.

    lc = LinkCode(LinkCodeParams(pq_m=16)).fit(xt, xb); D, I = lc.search(xq, k)
    """

    def __init__(self, params: LinkCodeParams, metric: str = "l2"):
        if metric != "l2":
            raise ValueError(f"L&C is implemented for the L2 metric only, got {metric!r}")
        self.p = params
        self.index = None
        self.codebooks: list[np.ndarray] = []  # per block: float32 (beta_k, M0 + 1)
        self.codes: np.ndarray | None = None  # uint8 (nb, beta_nsq)
        self.recons: np.ndarray | None = None  # float32 (nb, d): refined reconstructions
        self.pq_recons: np.ndarray | None = None  # float32 (nb, d): PQ reconstructions

    @property
    def code_size(self) -> int:
        """Bytes per vector of the codes (PQ + regression codes; links not counted)."""
        return self.p.pq_m + self.p.beta_nsq

    # -- construction ----------------------------------------------------------------------
    def fit(self, xt: np.ndarray, xb: np.ndarray) -> LinkCode:
        """Train PQ on xt: float32 (nt, d), build HNSW over the codes of xb: float32 (nb, d),
        then learn the beta codebooks on the first beta_ntrain database vectors and encode all."""
        p = self.p
        d = xb.shape[1]
        if d % p.pq_m:
            raise ValueError(f"pq_m={p.pq_m} must divide d={d}")
        if p.beta_nsq > d:
            raise ValueError(f"beta_nsq={p.beta_nsq} exceeds d={d}")
        index = faiss.IndexHNSWPQ(d, p.pq_m, p.hnsw_M)
        index.hnsw.efConstruction = p.ef_construction
        faiss.downcast_index(index.storage).pq.cp.niter = p.pq_niter
        index.train(np.ascontiguousarray(xt, dtype=np.float32))
        add_in_chunks(index, xb)
        index.reorder_links()  # level-0 links by increasing distance (faiss, as the authors)
        self.index = index
        nb = index.ntotal
        self.pq_recons = index.storage.reconstruct_n(0, nb)
        self._table_ids = self._neighbor_ids()
        blocks = np.array_split(np.arange(d), p.beta_nsq)
        self._blocks = [(int(bl[0]), int(bl[-1]) + 1) for bl in blocks]
        nt = min(p.beta_ntrain, nb)
        xb32 = np.ascontiguousarray(xb[:nb], dtype=np.float32)
        self.codebooks = [self._train_block(xb32[:nt], lo, hi, nt) for lo, hi in self._blocks]
        self.codes = np.empty((nb, p.beta_nsq), dtype=np.uint8)
        self.recons = np.empty_like(self.pq_recons)
        for i0 in range(0, nb, 4096):  # batches bound the (n, K, K) Gram matrices
            rows = np.arange(i0, min(nb, i0 + 4096))
            for s, (lo, hi) in enumerate(self._blocks):
                T = self.pq_recons[self._table_ids[rows], lo:hi].astype(np.float64)
                c = _assign(T, xb32[rows, lo:hi].astype(np.float64), self.codebooks[s])
                self.codes[rows, s] = c
                self.recons[rows, lo:hi] = np.einsum("nK,nKd->nd", self.codebooks[s][c], T)
        return self

    def _neighbor_ids(self) -> np.ndarray:
        """int64 (nb, M0 + 1): each vertex, then its level-0 neighbours (-1 -> the vertex)."""
        h = self.index.hnsw
        nb = self.index.ntotal
        m0 = h.nb_neighbors(0)
        offsets = faiss.vector_to_array(h.offsets).astype(np.int64)[:nb]
        neigh = faiss.vector_to_array(h.neighbors)
        level0 = neigh[offsets[:, None] + np.arange(m0)[None]].astype(np.int64)
        self_ids = np.arange(nb, dtype=np.int64)[:, None]
        level0 = np.where(level0 < 0, self_ids, level0)
        return np.concatenate([self_ids, level0], axis=1)

    def _gram(self, x: np.ndarray, lo: int, hi: int, rows: np.ndarray):
        """For the given rows: G = T T^T (n, K, K), b = T x (n, K) and T (n, K, dsub) on the
        block [lo, hi) of dimensions (float64)."""
        T = self.pq_recons[self._table_ids[rows], lo:hi].astype(np.float64)
        xs = x[rows, lo:hi].astype(np.float64)
        return T @ T.transpose(0, 2, 1), np.einsum("nKd,nd->nK", T, xs), T

    def _train_block(self, x: np.ndarray, lo: int, hi: int, nt: int) -> np.ndarray:
        """Codebook of one block (neighbors_kmeans): float64 (k, K)."""
        p = self.p
        G, b, T = self._gram(x, lo, hi, np.arange(nt))
        xs = x[:nt, lo:hi].astype(np.float64)
        K = G.shape[-1]
        betas = _solve_betas(G, b, p.ridge)
        k_free = min(p.beta_k - int(p.keep_identity), nt)
        identity = np.zeros((1, K))
        identity[0, 0] = 1.0
        if k_free < 1:
            return identity
        km = faiss.Kmeans(K, k_free, niter=20, seed=p.seed, max_points_per_centroid=1_000_000)
        km.train(np.ascontiguousarray(betas, dtype=np.float32))
        B = km.centroids.astype(np.float64)
        if p.keep_identity:
            B = np.concatenate([identity, B])
        first = int(p.keep_identity)
        for _ in range(p.beta_niter):
            idx = _assign(T, xs, B)
            Gs, bs = _sum_by(idx, G, len(B)), _sum_by(idx, b, len(B))
            used = np.bincount(idx, minlength=len(B)) > 0
            used[:first] = False  # the identity entry stays fixed
            if used.any():
                B[used] = _solve_betas(Gs[used], bs[used], p.ridge)
        return B

    # -- search ----------------------------------------------------------------------------
    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """HNSW search over the PQ codes (efSearch = params.ef_search), then the first
        k_reorder (all if -1) results re-ranked by squared L2 distance to the refined
        reconstructions. xq: float32 (nq, d). Returns D: float32 (nq, k), I: int64 (nq, k)."""
        if self.index is None:
            raise RuntimeError("LinkCode is not fitted: call fit(xt, xb) first")
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        self.index.hnsw.efSearch = self.p.ef_search
        D, I = self.index.search(xq, k)
        kr = k if self.p.k_reorder < 0 else min(self.p.k_reorder, k)
        if kr == 0:
            return D, I
        head = I[:, :kr]
        cand = self.recons[np.maximum(head, 0)]
        dist = ((cand - xq[:, None, :]) ** 2).sum(-1)
        dist[head < 0] = np.inf
        order = np.argsort(dist, axis=1, kind="stable")
        I = I.copy()
        D = D.copy()
        I[:, :kr] = np.take_along_axis(head, order, 1)
        D[:, :kr] = np.take_along_axis(dist, order, 1)
        return D, I

    def reconstruction_errors(self, xb: np.ndarray) -> tuple[float, float]:
        """Mean squared reconstruction error of (PQ codes alone, refined) over xb: (nb, d)."""
        x = np.asarray(xb, dtype=np.float32)
        return (
            float(((self.pq_recons - x) ** 2).sum(1).mean()),
            float(((self.recons - x) ** 2).sum(1).mean()),
        )
