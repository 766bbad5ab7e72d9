"""The faiss indexes of the CCST experiments (Sec. 4.2-4.5), built the way the paper describes.

Every builder returns an index that has been trained and filled, so that the caller can time the
whole call as the paper's "indexing time". Search-time parameters are set by `set_search_params`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss
import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "NNDescentParams",
    "build_hnsw_flat",
    "build_hnsw_sq8",
    "build_ivfpq",
    "build_nsg_flat",
    "faiss_metric",
    "nearest_pq_m",
    "set_search_params",
]


def faiss_metric(metric: str) -> int:
    """Map a data set metric ("l2" | "ip") to the faiss constant."""
    if metric == "l2":
        return faiss.METRIC_L2
    if metric == "ip":
        return faiss.METRIC_INNER_PRODUCT
    raise ValueError(f"unknown metric {metric!r}")


def build_hnsw_flat(xb: np.ndarray, M: int, ef_construction: int, metric: str = "l2"):
    """faiss IndexHNSWFlat (Sec. 4.2: M=48, efConstruction=512).

    Args:
        xb: float32 (nb, d), the vectors the graph is built on.
    """
    index = faiss.IndexHNSWFlat(xb.shape[1], M, faiss_metric(metric))
    index.hnsw.efConstruction = ef_construction
    index.add(xb)
    return index


def build_hnsw_sq8(
    xt: np.ndarray, xb: np.ndarray, M: int, ef_construction: int, metric: str = "l2"
):
    """faiss IndexHNSWSQ with 8-bit scalar quantization (Table 4, Sec. 4.4).

    The quantizer's per-dimension ranges are trained on xt: float32 (nt, d); the graph is built
    over the 8-bit codes of xb: float32 (nb, d).
    """
    index = faiss.IndexHNSWSQ(xb.shape[1], faiss.ScalarQuantizer.QT_8bit, M, faiss_metric(metric))
    index.hnsw.efConstruction = ef_construction
    index.train(xt)
    index.add(xb)
    return index


@dataclass(frozen=True)
class NNDescentParams:
    """NN-descent settings for the initial k-NN graph of NSG (Sec. 4.2).

    L, iter, S, R: pool size, number of iterations, number of sampled neighbours, number of
    reverse neighbours (the names of the NSG/efanna code, kept by faiss as
    `nndescent_L/iter/S/R`). The graph's k (the paper's GK) is a separate argument of
    `build_nsg_flat`, since it also applies to the brute-force k-NN graph.
    """

    L: int
    iter: int
    S: int
    R: int


def build_nsg_flat(
    xb: np.ndarray,
    R: int,
    L: int,
    C: int,
    GK: int,
    nndescent: NNDescentParams | None,
    metric: str = "l2",
):
    """faiss IndexNSGFlat (Sec. 4.2: R=60, L=70, C=500, k-NN graph by NN-descent).

    Args:
        xb: float32 (nb, d).
        R: out-degree bound of the NSG graph.
        L: candidate pool size during NSG construction.
        C: maximum number of candidates considered when pruning.
        GK: number of neighbours of the initial k-NN graph.
        nndescent: NN-descent settings; None builds the k-NN graph by brute force (faiss
            build_type 0) instead.
    """
    index = faiss.IndexNSGFlat(xb.shape[1], R, faiss_metric(metric))
    index.nsg.L = L
    index.nsg.C = C
    index.GK = GK
    if nndescent is None:
        index.build_type = 0
    else:
        index.build_type = 1
        index.nndescent_L = nndescent.L
        index.nndescent_iter = nndescent.iter
        index.nndescent_S = nndescent.S
        index.nndescent_R = nndescent.R
    index.add(xb)
    return index


def nearest_pq_m(d: int, nbytes: int) -> int:
    """Number of 8-bit PQ sub-quantizers for a byte budget: nbytes if it divides d, else the
    divisor of d nearest to nbytes (the smaller one on a tie).

    The paper's budgets (60/30 bytes for GIST1M, d=960; 32/16 for Deep1M, d=256) divide d; the
    stand-ins' dimensions (784, 96, 64, 32) do not always.
    """
    if d < 1 or nbytes < 1:
        raise ValueError(f"d and nbytes must be positive, got {d}, {nbytes}")
    divisors = [m for m in range(1, d + 1) if d % m == 0]
    return min(divisors, key=lambda m: (abs(m - nbytes), m))


def build_ivfpq(
    xt: np.ndarray,
    xb: np.ndarray,
    nlist: int,
    m: int,
    metric: str = "l2",
    pq_niter: int = 25,
):
    """IVFADC (Jegou et al. 2010) as faiss "IVF{nlist},PQ{m}" (8-bit codes, residual encoding).

    Table 3 caption: nlist=8. Trained on xt: float32 (nt, d), filled with xb: float32 (nb, d).
    pq_niter: k-means iterations of each sub-quantizer (faiss default 25; the paper is silent).
    """
    index = faiss.index_factory(xb.shape[1], f"IVF{nlist},PQ{m}", faiss_metric(metric))
    # index_factory turns on polysemous training (a code reordering for Hamming filtering that
    # ADC search does not use); with many sub-quantizers it takes minutes on 2000 vectors.
    index.do_polysemous_training = False
    index.pq.cp.niter = pq_niter
    index.train(xt)
    index.add(xb)
    return index


def set_search_params(
    index, ef_search: int | None = None, search_L: int | None = None, nprobe: int | None = None
) -> None:
    """Set the search-time knob of an HNSW (efSearch), NSG (search_L) or IVF (nprobe) index."""
    if ef_search is not None:
        index.hnsw.efSearch = ef_search
    if search_L is not None:
        index.nsg.search_L = search_L
    if nprobe is not None:
        faiss.extract_index_ivf(index).nprobe = nprobe
