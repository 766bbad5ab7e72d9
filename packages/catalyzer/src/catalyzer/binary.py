"""Binary hashing baselines of Table 2 (Sec. 5.4): LSH, ITQ, and the sign of catalyzed features.

All three produce `nbits`-bit codes compared with the Hamming distance, through faiss:

- LSH (Charikar, 2002): `nbits` random isotropic directions, one bit = sign of the dot product
  (Sec. 5.4). faiss `RandomRotationMatrix(d, nbits)` seeded explicitly, then `IndexLSH` without
  rotation or thresholds (threshold 0 = sign). For nbits <= d the directions are random
  orthonormal rows; for nbits > d faiss uses a random tight frame (each row still has an
  isotropic direction, rows are not independent).
- ITQ (Gong et al., 2013): PCA to `nbits` dimensions, then the rotation that maximises the
  agreement with the binary corners (faiss `ITQTransform`), then sign. It cannot produce more
  bits than input dimensions (the PCA has at most d components): `itq_index` raises then, which is
  why the paper prints n/a for 128-bit ITQ on the 96-d Deep1M.
- Catalyzer + sign (Sec. 4.1): `sign_index(d)` is `IndexLSH` on already catalyzed d_out = nbits
  features, no projection.

Hamming search ties are broken by faiss (deterministically); with 16-bit codes many base vectors
share a distance, so 1-recall@10 at 16 bits depends on the tie order.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["lsh_index", "itq_index", "sign_index", "hamming_knn"]

log = logging.getLogger(__name__)


def lsh_index(d: int, nbits: int, seed: int, train_thresholds: bool = False):
    """LSH with `nbits` random directions in R^d (Sec. 5.4, Table 2).

    Args:
        d: input dimension.
        nbits: code size in bits.
        seed: seed of the random directions (Table 2 averages 5 seeds).
        train_thresholds: learn a per-bit median threshold instead of 0. The paper takes the
            plain sign of the dot product (Sec. 5.4), so the default is False.
    Returns:
        an untrained faiss.IndexPreTransform (train, then add, then search).
    """
    import faiss

    if nbits < 1:
        raise ValueError(f"nbits must be positive, got {nbits}")
    rot = faiss.RandomRotationMatrix(d, nbits)
    rot.init(int(seed))
    lsh = faiss.IndexLSH(nbits, nbits, False, bool(train_thresholds))
    return faiss.IndexPreTransform(rot, lsh)


def itq_index(d: int, nbits: int, seed: int):
    """ITQ: PCA to `nbits` dimensions, learned rotation, sign (Gong et al., 2013; Table 2).

    Args:
        d: input dimension.
        nbits: code size in bits; must be <= d.
        seed: seed of the initial random rotation of the ITQ iterations.
    Returns:
        an untrained faiss.IndexPreTransform.
    Raises:
        ValueError: nbits > d (the paper's "n/a").
    """
    import faiss

    if not 1 <= nbits <= d:
        raise ValueError(f"ITQ cannot output {nbits} bits from {d} dimensions (PCA rank <= d)")
    itq = faiss.ITQTransform(d, nbits, True)  # do_pca: PCA to nbits dims before the rotation
    itq.itq.seed = int(seed)
    lsh = faiss.IndexLSH(nbits, nbits, False, False)
    return faiss.IndexPreTransform(itq, lsh)


def sign_index(d: int):
    """Sign binarization of d-dim features (Catalyzer + sign, Sec. 4.1): d bits per vector."""
    import faiss

    return faiss.IndexLSH(d, d, False, False)


def hamming_knn(index, xt: np.ndarray, xb: np.ndarray, xq: np.ndarray, k: int) -> np.ndarray:
    """Train `index` on xt, add xb, return the ids of the k Hamming-nearest codes of xq.

    Args:
        index: from `lsh_index`, `itq_index` or `sign_index` (untrained).
        xt: float32 (nt, d) training vectors (unused by plain LSH and sign).
        xb: float32 (nb, d) base; xq: float32 (nq, d) queries.
    Returns:
        I int64 (nq, k).
    """
    index.train(np.ascontiguousarray(xt, dtype=np.float32))
    index.add(np.ascontiguousarray(xb, dtype=np.float32))
    _, I = index.search(np.ascontiguousarray(xq, dtype=np.float32), k)
    return I
