"""The teacher index of KDindex: an HNSW graph (hnswlib) that labels training queries.

"We exploit a well-trained HNSW [37] model as the teacher model and K = 10 nearest neighbors are
retrieved accordingly" (Sec. 4.1). The teacher's top-K list for a training query is the set
`D_K^T` the student learns from (Sec. 3.1, Algorithm 2 line 7). Parameters per data set are those
of Table 7 (M = 32; efConstruction 40 / 40 / 100 / 100; efSearch 100 / 512 / 1024 / 1024 for
SIFT1M / GIST1M / MS MARCO Doc / MS MARCO Passage); "Building and Searching are on multi-threads
for train sets" (App. B.3).

hnswlib facts this wrapper hides (../shared/PITFALLS.md): `knn_query` returns *squared* L2
distances, and `1 - inner product` for space "ip"; its `ef` defaults to 10 and must be >= k.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time

import numpy as np

__all__ = ["HNSWTeacher", "hnsw_memory_bytes_estimate"]

log = logging.getLogger(__name__)


def hnsw_memory_bytes_estimate(nb: int, d: int, M: int) -> float:
    """Expected bytes of an hnswlib index of nb float32 vectors of dimension d (Table 3).

    hnswlib stores per element, at level 0: 2M neighbour ids (uint32) and a 4-byte count, the
    vector (4d bytes) and an 8-byte label; per element a 4-byte size of its upper-level lists; and
    per upper level an element lives on, M ids plus a count. Levels are drawn with
    mult = 1/ln(M), so the expected number of upper levels per element is 1/(M - 1).
    The 96-byte header is included. The index's in-RAM hash map and locks are not counted.
    """
    level0 = 2 * M * 4 + 4 + 4 * d + 8
    upper = (M * 4 + 4) / (M - 1)
    return 96 + nb * (level0 + 4 + upper)


class HNSWTeacher:
    """hnswlib HNSW over a base, answering top-K queries in the project's conventions.

    d: dimension; metric: "l2" | "ip"; M, ef_construction, ef_search: HNSW parameters
    (Table 7); seed: hnswlib's level-generator seed; threads: for build and search (hnswlib
    builds deterministically only with one thread).
    """

    def __init__(
        self,
        d: int,
        metric: str,
        M: int = 32,
        ef_construction: int = 40,
        ef_search: int = 100,
        seed: int = 100,
        threads: int = 1,
    ):
        if metric not in ("l2", "ip"):
            raise ValueError(f"unknown metric {metric!r}; expected 'l2' or 'ip'")
        self.d, self.metric = int(d), metric
        self.M, self.ef_construction, self.ef_search = int(M), int(ef_construction), int(ef_search)
        self.seed, self.threads = int(seed), max(1, int(threads))
        self.index = None
        self.nb = 0
        self.build_s = float("nan")

    def build(self, xb: np.ndarray, batch: int = 1 << 16, progress: bool = False) -> float:
        """Insert xb: float32 (nb, d) with ids 0..nb-1; return (and keep in build_s) the seconds.
        progress: a tqdm bar over the batches of `batch` vectors (a log line at the start and
        the end in any case)."""
        import hnswlib
        from tqdm.auto import tqdm

        nb = len(xb)
        log.info(
            "building HNSW M=%d efC=%d over %d x %d (%d threads) ...",
            self.M,
            self.ef_construction,
            nb,
            self.d,
            self.threads,
        )
        index = hnswlib.Index(space=self.metric, dim=self.d)
        t0 = time.perf_counter()
        index.init_index(
            max_elements=nb, ef_construction=self.ef_construction, M=self.M, random_seed=self.seed
        )
        steps = range(0, nb, batch)
        bar = tqdm(steps, desc="HNSW build", unit="batch", disable=not progress, leave=False)
        for i0 in bar:
            chunk = np.ascontiguousarray(xb[i0 : i0 + batch], dtype=np.float32)
            index.add_items(chunk, np.arange(i0, i0 + len(chunk)), num_threads=self.threads)
        self.build_s = time.perf_counter() - t0
        self.index, self.nb = index, nb
        log.info(
            "HNSW M=%d efC=%d over %d x %d built in %.1f s (%d threads)",
            self.M,
            self.ef_construction,
            nb,
            self.d,
            self.build_s,
            self.threads,
        )
        return self.build_s

    def search(self, xq: np.ndarray, k: int, ef: int | None = None):
        """Top-k of each query. xq: float32 (nq, d).

        Returns `(D, I)`: D float32 (nq, k) squared L2 distances (ascending) or inner products
        (descending), I int64 (nq, k). `ef` defaults to ef_search and is raised to k when smaller.
        """
        if self.index is None:
            raise RuntimeError("build the teacher before searching it")
        if k > self.nb:
            raise ValueError(f"k={k} exceeds the {self.nb} indexed vectors")
        self.index.set_ef(max(int(ef or self.ef_search), k))
        labels, dist = self.index.knn_query(
            np.ascontiguousarray(xq, dtype=np.float32), k=k, num_threads=self.threads
        )
        I = labels.astype(np.int64)
        D = dist.astype(np.float32)
        if self.metric == "ip":  # hnswlib's "ip" distance is 1 - <q, x>
            D = 1.0 - D
        return D, I

    def label(
        self, xt: np.ndarray, K: int = 10, batch: int = 1 << 16, progress: bool = False
    ) -> np.ndarray:
        """Teacher labels `D_K^T` (Sec. 3.1): int64 (nt, K) top-K ids of each training query,
        nearest first. xt: float32 (nt, d). progress: a tqdm bar over the batches of `batch`
        queries (a log line at the start and the end in any case)."""
        from tqdm.auto import tqdm

        nt = len(xt)
        ef = max(self.ef_search, K)
        log.info("labelling %d training queries with the HNSW top-%d (efSearch %d) ...", nt, K, ef)
        t0 = time.perf_counter()
        out = np.empty((nt, K), dtype=np.int64)
        steps = range(0, nt, batch)
        bar = tqdm(steps, desc="teacher labels", unit="batch", disable=not progress, leave=False)
        for i0 in bar:
            out[i0 : i0 + batch] = self.search(xt[i0 : i0 + batch], K)[1]
        log.info("labelled %d training queries in %.1f s", nt, time.perf_counter() - t0)
        return out

    def memory_bytes(self) -> int:
        """Bytes the index holds: the size of hnswlib's serialized index (vectors, level-0 links,
        upper-level links, labels; Table 3), from `index_file_size()` (the exact size
        `save_index` writes), or by saving to a temporary file on hnswlib versions without it."""
        if self.index is None:
            raise RuntimeError("build the teacher before measuring it")
        if hasattr(self.index, "index_file_size"):
            return int(self.index.index_file_size())
        with tempfile.TemporaryDirectory(prefix="kdindex-hnsw-") as tmp:
            path = os.path.join(tmp, "index.bin")
            self.index.save_index(path)
            return os.path.getsize(path)
