"""64-bit quantization baselines of Table 1 (Sec. 5.3, 5.4): OPQ, LSQ and PCA + Lattice.

Each baseline is trained on the learn set, encodes the base (timed: Table 1's "encoding time"),
and answers queries by asymmetric search (queries not quantized, Sec. 4.2 / Jegou et al. 2011).

- OPQ (Ge et al., 2013): faiss `OPQ8_64,PQ8np` = 8 sub-quantizers of 8 bits ("one byte per
  sub-vector, 256 centroids", Sec. 5.3) after a learned rotation to 64 dimensions, the factory
  string of the authors' code (`opq_64` -> "OPQ8_64,PQ8"). `np` skips faiss's polysemous
  training, which only permutes centroid ids and so does not change ADC search results.
- LSQ (Martinez et al., 2018): faiss `IndexLocalSearchQuantizer(d, 8, 8)`: 8 codebooks of 256
  entries = 64 bits, exact decoding for search (`ST_decompress`).
- PCA + Lattice (Sec. 5.4): PCA to d_out (24 for 64 bits), L2 normalisation, spherical lattice
  `S_24^r` with r2 = 79 (Appendix B); see `lattice.py`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from annrepro.validate import as_f32

from .lattice import ZnSphereLattice

__all__ = [
    "EncodedSearch",
    "opq_factory",
    "opq_index",
    "lsq_index",
    "encode_search",
    "pca_lattice_search",
    "l2_normalize",
]

log = logging.getLogger(__name__)


@dataclass
class EncodedSearch:
    """Result of one baseline: I int64 (nq, k) ids, encode_s seconds to encode the base."""

    I: np.ndarray
    encode_s: float
    code_bits: int


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (zero rows stay zero): float32 (n, d)."""
    x = as_f32(x).copy()
    n = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, n, out=x, where=n > 0)
    return x


def opq_factory(nbytes: int) -> str:
    """The OPQ of `nbytes`-byte codes: "OPQ{M}_{8M},PQ{M}np" with M = nbytes.

    One byte per sub-vector (256 centroids, Sec. 5.3) and a learned rotation to 8 x nbytes
    dimensions, whatever the input dimension: the authors' code (`opq_<bits>` ->
    "OPQ%d_%d,PQ%d" % (nbytes, nbytes * 8, nbytes) in spreadingvectors/lib/quantizers.py). faiss
    pads the input with zeros where 8 x nbytes exceeds it. 64 bits: "OPQ8_64,PQ8np", Table 1's.
    """
    M = int(nbytes)
    if M < 1:
        raise ValueError(f"OPQ needs at least one byte per code, got {nbytes}")
    return f"OPQ{M}_{8 * M},PQ{M}np"


def opq_index(d: int, factory: str = "OPQ8_64,PQ8np", niter: int | None = None):
    """OPQ + PQ index from a faiss factory string (Sec. 5.3).

    Args:
        d: input dimension.
        factory: faiss index_factory string; "OPQ8_64,PQ8np" = 8 x 8 bits = 64-bit codes.
        niter: OPQ alternating-optimisation iterations (faiss default 50); only the tiny scale
            lowers it, to keep CI fast.
    """
    import faiss

    index = faiss.index_factory(d, factory)
    if niter is not None and isinstance(index, faiss.IndexPreTransform):
        for i in range(index.chain.size()):
            vt = faiss.downcast_VectorTransform(index.chain.at(i))
            if isinstance(vt, faiss.OPQMatrix):
                vt.niter = int(niter)
    return index


def lsq_index(
    d: int,
    M: int = 8,
    nbits: int = 8,
    seed: int = 0,
    train_iters: int | None = None,
    encode_ils_iters: int | None = None,
):
    """LSQ index: M additive codebooks of nbits bits (Martinez et al., 2018; Table 1).

    Args:
        d: input dimension; M, nbits: 8 x 8 = 64-bit codes (Table 1: "all results use 64 bits").
        seed: seed of LSQ's random perturbations.
        train_iters, encode_ils_iters: faiss defaults (25, 16) unless given; only the tiny scale
            lowers them.
    """
    import faiss

    index = faiss.IndexLocalSearchQuantizer(d, M, nbits)
    index.lsq.random_seed = int(seed)
    if train_iters is not None:
        index.lsq.train_iters = int(train_iters)
    if encode_ils_iters is not None:
        index.lsq.encode_ils_iters = int(encode_ils_iters)
    return index


def _innermost(index):
    import faiss

    while isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return faiss.downcast_index(index)


def encode_search(index, xt: np.ndarray, xb: np.ndarray, xq: np.ndarray, k: int) -> EncodedSearch:
    """Train on xt, encode xb (timed), add the codes, search xq asymmetrically.

    Args:
        index: untrained faiss index with standalone codes (OPQ/PQ, LSQ).
        xt: float32 (nt, d) training set; xb: float32 (nb, d) base; xq: float32 (nq, d).
    Returns:
        EncodedSearch with I int64 (nq, k) and encode_s (wall seconds of sa_encode on xb).
    """
    index.train(as_f32(xt))
    xb = as_f32(xb)
    t0 = time.perf_counter()
    codes = index.sa_encode(xb)
    encode_s = time.perf_counter() - t0
    inner = _innermost(index)
    inner.add_sa_codes(codes)  # the codes just timed, not a second encoding
    index.ntotal = inner.ntotal
    _, I = index.search(as_f32(xq), k)
    return EncodedSearch(I=I, encode_s=encode_s, code_bits=8 * index.sa_code_size())


def pca_lattice_search(
    xt: np.ndarray,
    xb: np.ndarray,
    xq: np.ndarray,
    k: int,
    d_out: int = 24,
    r2: int = 79,
    projection: str = "pca",
) -> EncodedSearch:
    """PCA + Lattice baseline (Sec. 5.4, Table 1).

    PCA (learned on xt, centred) to d_out dims, L2 normalisation, nearest point of the spherical
    lattice S_{d_out}^r (r2 = 79: 64 bits in 24-d, Appendix B); queries are projected and
    normalised but not quantized (asymmetric search, Sec. 4.2).

    Args:
        projection: "pca" (the baseline) or "none" (the lattice alone on the L2-normalised input,
            d_out == d: what the catalyzer reduces to with the identity in place of its MLP).
    Returns:
        EncodedSearch; encode_s covers PCA, normalisation and lattice encoding of xb.
    """
    d = xt.shape[1]
    if projection == "pca":
        import faiss

        if d_out > d:
            raise ValueError(f"PCA cannot output {d_out} dimensions from {d}")
        pca = faiss.PCAMatrix(d, d_out)
        pca.train(as_f32(xt))
        project = pca.apply
    elif projection == "none":
        if d_out != d:
            raise ValueError(f"projection 'none' needs d_out == d, got {d_out} != {d}")
        project = as_f32
    else:
        raise ValueError(f"unknown projection {projection!r} ('pca' or 'none')")
    lattice = ZnSphereLattice(d_out, r2)
    xb = as_f32(xb)
    t0 = time.perf_counter()
    codes = lattice.encode(l2_normalize(project(xb)))
    encode_s = time.perf_counter() - t0
    yq = l2_normalize(project(as_f32(xq)))
    _, I = lattice.search(yq, codes, k)
    return EncodedSearch(I=I, encode_s=encode_s, code_bits=lattice.code_size_bits)
