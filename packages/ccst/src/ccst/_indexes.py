"""The faiss indexes of the CCST experiments (Sec. 4.2-4.5), built the way the paper describes.

Every builder returns an index that has been trained and filled, so that the caller can time the
whole call as the paper's "indexing time". Search-time parameters are set by `set_search_params`.

Sec. 4.2 protocol ("full-dimensional vectors are used to search nearest neighbors. Full-dimensional
vectors, feature vectors compressed with a factor of 2 and 4 are respectively used in indexing"):
the `*_built_on` builders construct the graph over the compressed vectors xg: float32 (nb, d_c),
then copy that graph, unchanged, into an index of the full dimension whose storage holds the
original vectors xb: float32 (nb, d), so that every distance computed at search time is a
full-dimensional one. faiss copies the graph struct on assignment (`index.hnsw = other.hnsw`,
`index.nsg = other.nsg`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss
import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "NNDescentParams",
    "add_in_chunks",
    "build_hnsw_flat",
    "build_hnsw_flat_built_on",
    "build_hnsw_sq8",
    "build_hnsw_sq8_built_on",
    "build_ivfpq",
    "build_nsg_flat",
    "build_nsg_flat_built_on",
    "faiss_metric",
    "hnsw_graph",
    "nsg_graph",
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
        xb: (nb, d) float32 (or a uint8 memory map, added in chunks: `add_in_chunks`), the
            vectors the graph is built on.
    """
    index = faiss.IndexHNSWFlat(xb.shape[1], M, faiss_metric(metric))
    index.hnsw.efConstruction = ef_construction
    add_in_chunks(index, xb)
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


def add_in_chunks(index, x: np.ndarray, chunk: int = 1 << 18) -> None:
    """index.add(x) in row chunks converted to float32 one at a time, so that x may be a
    memory-mapped uint8 base (Bigann-1B) larger than memory. (faiss HNSW inserts each add call's
    vectors level by level, so the graph depends on the chunking; one call below `chunk` rows.)"""
    for i0 in range(0, x.shape[0], chunk):
        index.add(np.ascontiguousarray(x[i0 : i0 + chunk], dtype=np.float32))


def _check_pair(xg: np.ndarray, xb: np.ndarray) -> None:
    if xg.ndim != 2 or xb.ndim != 2 or xg.shape[0] != xb.shape[0]:
        raise ValueError(
            f"graph vectors {xg.shape} and search vectors {xb.shape} must be 2-D with the same "
            "number of rows (row i of both is database vector i)"
        )


def _fill_storage(index, source, xb: np.ndarray, chunk: int) -> None:
    """Give `index` (an empty faiss IndexHNSW / IndexNSG of xb's dimension) the graph of `source`
    and the vectors xb as storage."""
    add_in_chunks(index.storage, xb, chunk)
    index.ntotal = source.ntotal


def build_hnsw_flat_built_on(
    xg: np.ndarray,
    xb: np.ndarray,
    M: int,
    ef_construction: int,
    metric: str = "l2",
    chunk: int = 1 << 18,
):
    """IndexHNSWFlat whose graph is built on xg: float32 (nb, d_c) (e.g. CSST-compressed) and
    which searches the full vectors xb: (nb, d) (float32, or a uint8 memory map) (Sec. 4.2,
    Table 1)."""
    _check_pair(xg, xb)
    graph = faiss.IndexHNSWFlat(xg.shape[1], M, faiss_metric(metric))
    graph.hnsw.efConstruction = ef_construction
    add_in_chunks(graph, xg, chunk)
    index = faiss.IndexHNSWFlat(xb.shape[1], M, faiss_metric(metric))
    index.hnsw = graph.hnsw
    _fill_storage(index, graph, xb, chunk)
    return index


def build_hnsw_sq8_built_on(
    xtg: np.ndarray,
    xg: np.ndarray,
    xt: np.ndarray,
    xb: np.ndarray,
    M: int,
    ef_construction: int,
    metric: str = "l2",
):
    """Table 4 'CSST+HNSW+SQ8': an HNSW graph built over the 8-bit scalar-quantized codes of the
    compressed vectors xg: float32 (nb, d_c) (quantizer trained on xtg: (nt, d_c)), searched
    over the 8-bit codes of the full vectors xb: float32 (nb, d) (quantizer trained on xt). The
    search side is thus the 'HNSW+SQ8' index of the same table; only the graph differs (our
    reading: the paper does not say which vectors the SQ8 search uses).
    """
    _check_pair(xg, xb)
    graph = build_hnsw_sq8(xtg, xg, M, ef_construction, metric)
    index = faiss.IndexHNSWSQ(xb.shape[1], faiss.ScalarQuantizer.QT_8bit, M, faiss_metric(metric))
    index.train(xt)
    index.hnsw = graph.hnsw
    _fill_storage(index, graph, xb, 1 << 18)
    return index


def build_nsg_flat_built_on(
    xg: np.ndarray,
    xb: np.ndarray,
    R: int,
    L: int,
    C: int,
    GK: int,
    nndescent: NNDescentParams | None,
    metric: str = "l2",
):
    """IndexNSGFlat whose k-NN graph and NSG are built on xg: float32 (nb, d_c) and which
    searches the full vectors xb: float32 (nb, d) (Sec. 4.2, Table 1)."""
    _check_pair(xg, xb)
    graph = build_nsg_flat(xg, R, L, C, GK, nndescent, metric)
    index = faiss.IndexNSGFlat(xb.shape[1], R, faiss_metric(metric))
    index.nsg = graph.nsg
    index.GK, index.build_type = graph.GK, graph.build_type
    _fill_storage(index, graph, xb, 1 << 18)
    index.is_built = True
    return index


def hnsw_graph(index) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(entry point, max level, levels: int32 (nb,), neighbors: int32) of a faiss IndexHNSW."""
    h = index.hnsw
    return (
        int(h.entry_point),
        int(h.max_level),
        faiss.vector_to_array(h.levels),
        faiss.vector_to_array(h.neighbors),
    )


def nsg_graph(index) -> tuple[int, np.ndarray]:
    """(entry point, final graph: int32 (nb, R), -1 padded) of a built faiss IndexNSG."""
    g = index.nsg.get_final_graph()
    return int(index.nsg.enterpoint), faiss.rev_swig_ptr(g.data, g.N * g.K).reshape(g.N, g.K).copy()
