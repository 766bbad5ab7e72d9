"""Exact k-nearest-neighbour ground truth for L2 and inner product, through faiss.

`knn_exact` walks the base in chunks of `base_chunk` rows (each copied from a possibly
memory-mapped array into a contiguous float32 buffer) and the queries in chunks of `query_chunk`
rows, merging partial results in a faiss `ResultHeap`: peak memory is bounded by the chunk sizes,
not by the base size, so bases larger than RAM work when memory-mapped.

`cached_knn` stores results on disk under a key of the data's content, k and metric.
`check_groundtruth` compares a shipped ground truth with a recomputation: equal up to the order
of exactly tied distances.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np

from .atomic import atomic_write_bytes
from .errors import AnnreproError, GroundTruthError
from .paths import cache_dir  # noqa: F401  (re-exported: its first home was here)
from .validate import METRICS, check_ground_truth, check_real, check_same_dim

__all__ = [
    "GroundTruthError",
    "knn_exact",
    "cached_knn",
    "check_groundtruth",
    "array_fingerprint",
]

log = logging.getLogger(__name__)


def _faiss_metric(metric: str):
    import faiss

    if metric not in METRICS:
        raise GroundTruthError(f"unknown metric {metric!r}; expected one of {METRICS}")
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def _check_inputs(xq, xb, k):
    if xq.ndim != 2 or xb.ndim != 2:
        raise GroundTruthError(f"queries and base must be 2-d; got {xq.shape} and {xb.shape}")
    try:
        check_real(xq, "queries")
        check_real(xb, "base")
        check_same_dim(base=xb, query=xq)
    except AnnreproError as e:
        raise GroundTruthError(str(e)) from None
    if not 1 <= k <= xb.shape[0]:
        raise GroundTruthError(f"k={k} must be between 1 and the base size {xb.shape[0]}")


def _finite(x, what, offset=0):
    """x: the float32 chunk (already cast: a float64 beyond float32's range is inf here)."""
    ok = np.isfinite(x).all(axis=1)
    if not ok.all():
        r = int(np.flatnonzero(~ok)[0]) + offset
        raise GroundTruthError(
            f"{what} row {r} contains NaN or inf (after the cast to float32: values beyond "
            "+-3.4e38 become inf)"
        )


def knn_exact(
    xq: np.ndarray,
    xb: np.ndarray,
    k: int,
    metric: str = "l2",
    base_chunk: int = 1 << 18,
    query_chunk: int = 1 << 14,
    progress: bool = False,
):
    """Exact top-k of each query over the base.

    xq: (nq, d), xb: (nb, d), any real dtype (uint8 is converted chunk by chunk), xb may be a
    memory map. Returns `(D, I)`: D float32 (nq, k) squared L2 distances (ascending) or inner
    products (descending), I int64 (nq, k).
    """
    import faiss

    fm = _faiss_metric(metric)
    _check_inputs(xq, xb, k)
    nq, nb = xq.shape[0], xb.shape[0]
    D = np.empty((nq, k), dtype=np.float32)
    I = np.empty((nq, k), dtype=np.int64)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=nb * ((nq + query_chunk - 1) // query_chunk),
            desc="ground truth",
            unit="vec",
            unit_scale=True,
        )
    for q0 in range(0, nq, query_chunk):
        with np.errstate(over="ignore"):  # a float64 beyond float32 becomes inf: _finite says so
            q = np.ascontiguousarray(xq[q0 : q0 + query_chunk], dtype=np.float32)
        _finite(q, "query", q0)
        heap = faiss.ResultHeap(len(q), k, keep_max=(metric == "ip"))
        for b0 in range(0, nb, base_chunk):
            with np.errstate(over="ignore"):
                b = np.ascontiguousarray(xb[b0 : b0 + base_chunk], dtype=np.float32)
            _finite(b, "base", b0)
            kk = min(k, len(b))
            Dc, Ic = faiss.knn(q, b, kk, metric=fm)
            if kk < k:  # pad so the heap sees k columns
                Dc = np.pad(
                    Dc, ((0, 0), (0, k - kk)), constant_values=np.inf if metric == "l2" else -np.inf
                )
                Ic = np.pad(Ic, ((0, 0), (0, k - kk)), constant_values=-1)
            Ic = np.where(Ic >= 0, Ic + b0, -1)
            heap.add_result(Dc, Ic)
            if bar is not None:
                bar.update(len(b))
        heap.finalize()
        D[q0 : q0 + len(q)] = heap.D
        I[q0 : q0 + len(q)] = heap.I
    if bar is not None:
        bar.close()
    return D, I


def array_fingerprint(*arrays) -> str:
    """sha256 over the shapes, dtypes and bytes of arrays (for small in-memory data)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype.str}".encode())
        for i in range(0, a.shape[0], 1 << 16):
            h.update(a[i : i + (1 << 16)].tobytes())
    return h.hexdigest()


def cached_knn(xq, xb, k: int, metric: str = "l2", key: str | None = None, compute=None, **kw):
    """`knn_exact` with an on-disk cache keyed by (data content or `key`, k, metric).

    `key` identifies the data (e.g. a data set's file checksums and split); without it the
    arrays are hashed. A smaller k is served from a cached larger one. `compute`: a function
    returning (D, I) instead of `knn_exact` (the sharded Dask path of a registry data set).
    """
    data_key = key or array_fingerprint(xq, xb)
    folder = cache_dir() / "groundtruth"
    tag = hashlib.sha256(f"{data_key}|{metric}".encode()).hexdigest()[:24]
    if folder.exists():
        for f in sorted(folder.glob(f"gt-{tag}-k*.npz")):
            kk = int(f.stem.rsplit("-k", 1)[1])
            if kk >= k:
                try:
                    with np.load(f) as z:
                        D, I = z["D"], z["I"]
                    if D.shape == (len(xq), kk) and I.shape == (len(xq), kk):
                        return D[:, :k].copy(), I[:, :k].copy()
                except (OSError, ValueError, KeyError):
                    log.warning("ignoring unreadable ground-truth cache %s", f)
    D, I = compute() if compute is not None else knn_exact(xq, xb, k, metric, **kw)
    import io

    buf = io.BytesIO()
    np.savez(buf, D=D, I=I)
    atomic_write_bytes(folder / f"gt-{tag}-k{k}.npz", buf.getvalue())
    return D, I


def check_groundtruth(gt, xq, xb, metric: str = "l2", name: str = "ground truth", rtol=1e-4):
    """Check a shipped ground truth `gt: int (nq, k)` against a brute-force recomputation.

    First `annrepro.validate.check_ground_truth` (integer ids in range, one row per query, rows
    nearest first). Then passes when, for every query, the distances of the shipped ids
    equal the exact top-k distances (so rows may differ only in the order or choice among exactly
    tied distances). Raises GroundTruthError naming the first bad query otherwise.
    """
    # dtype, one row per query, ids in range, no id twice, rows nearest first (the exact check
    # below compares sorted distances, so it alone would accept rows ordered farthest first)
    gt = check_ground_truth(gt, xb.shape[0], xq.shape[0], xb=xb, xq=xq, metric=metric, what=name)
    k = gt.shape[1]
    D, _ = knn_exact(xq, xb, k, metric)
    q = np.ascontiguousarray(xq, dtype=np.float32)
    vecs = np.asarray(xb[np.sort(np.unique(gt))], dtype=np.float32)
    remap = {v: i for i, v in enumerate(np.sort(np.unique(gt)))}
    idx = np.vectorize(remap.__getitem__)(gt)
    if metric == "l2":
        Dg = ((q[:, None, :] - vecs[idx]) ** 2).sum(-1)
        Dg.sort(axis=1)
    else:
        Dg = np.einsum("qd,qkd->qk", q, vecs[idx])
        Dg = -np.sort(-Dg, axis=1)
    scale = np.maximum(np.abs(D).max(axis=1, keepdims=True), 1e-12)
    bad = np.abs(Dg - D) > rtol * scale
    if bad.any():
        r = int(np.flatnonzero(bad.any(axis=1))[0])
        raise GroundTruthError(
            f"{name}: query {r} does not list its exact top-{k} (distance "
            f"{Dg[r][bad[r]][0]:.6g} where the exact one is {D[r][bad[r]][0]:.6g}): wrong "
            "ground truth, another metric, or another base"
        )
