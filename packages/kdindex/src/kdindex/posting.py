"""Posting-list search over multi-codebook codes (KDindex Sec. 2.2, 3.4, App. D).

Every codeword `c^b_w` of every codebook `b` owns a posting list: the documents whose code picks
`w` in codebook `b` (Sec. 3.4, "The posting list refers to the candidate list according to the
certain centroids"; Algorithm 1). At query time "the similarity scores between the query vector
and the codewords are calculated and the approximate nearest candidates are oriented" (Sec. 2.2),
and "the retrieval performance and the running time are governed by the number of posting lists
we probe among the codebooks" (App. D). So a search:

1. scores the query against every codeword, `S(q, c^b_w)` (Eq. 1;
   `CodebookQuantizer.codeword_scores`);
2. probes the `nprobe` best codewords of each of the `B` codebooks; the candidates are the union
   of their posting lists;
3. ranks the candidates by the quantized similarity `S(q, Q(d))` (asymmetric distance: query
   unquantized, document reconstructed from its code) and returns the top k.

`nprobe = W` probes every list: exhaustive asymmetric-distance search. The paper compares
methods "within the same retrieval time" (Sec. 4.2) without giving the number of probes; since
every method here has the same B, W and nprobe, they scan posting lists of the same total length
when the lists are balanced. The numpy scoring of step 3 uses the decoded vectors chunk by chunk,
which is the asymmetric distance exactly (PQ/OPQ: sum of the per-subspace look-up tables; AQ:
the exact reconstruction, faiss's `ST_decompress`).

Two implementations give the same results (up to exact ties and float rounding): faiss's own
indexes (`kdindex.faiss_search`: `IndexPQ` / `IndexResidualQuantizer` for `nprobe = W`, one
`search_preassigned` inverted file per codebook otherwise), the default wherever the quantizer
holds codebooks, and the numpy code above (`method="numpy"`), kept as the test oracle and for
quantizers that only decode (PQ-VAE's decoder network, `kdindex.baselines.DecodedQuantizer`).
"""

from __future__ import annotations

import logging

import numpy as np

from .faiss_search import InvertedFiles, flat_index, select_probes
from .quantizers import CodebookQuantizer

__all__ = [
    "PER_QUERY",
    "PostingListIndex",
    "per_query_scores",
    "posting_list_sizes",
    "search_scores",
]

log = logging.getLogger(__name__)


PER_QUERY = ":per_query"  # row key suffix the annrepro runner reads per-query values from
METHODS = ("auto", "faiss", "numpy")  # search implementations (module docstring)


def per_query_scores(I: np.ndarray, gt: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-query Recall@k (k-recall@k), NDCG@k and MRR@k, float64 (nq,) each, defined as in
    `annrepro.metrics` (binary relevance of the true top-k, padding ids -1 never match, a
    repeated id counts once), so that their means are `recall_at`, `ndcg_at` and `mrr_at`.

    I: int (nq, >= k) result ids; gt: int (nq, >= k) exact ids, nearest first."""
    I = np.asarray(I)[:, :k].astype(np.int64)
    g = np.asarray(gt)[:, :k].astype(np.int64)
    if I.shape[0] != g.shape[0] or I.shape[1] < k or g.shape[1] < k:
        raise ValueError(f"results {I.shape} and ground truth {g.shape} do not fit k={k}")
    hit = (I[:, :, None] == g[:, None, :]).any(2) & (I >= 0)
    earlier = np.tril(np.ones((k, k), dtype=bool), -1)  # [j, j'] with j' < j
    hit &= ~((I[:, :, None] == I[:, None, :]) & earlier[None]).any(2)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    first = np.where(hit.any(1), hit.argmax(1) + 1, np.inf)
    return {
        f"recall@{k}": hit.sum(1) / k,
        f"ndcg@{k}": (hit @ disc) / disc.sum(),
        f"mrr@{k}": 1.0 / first,
    }


def search_scores(index, ds, k: int, nprobe: int) -> dict:
    """Search ds.xq (annrepro Dataset) in `index` through its nprobe best lists per codebook and
    score the top-k against ds.gt(k): fractions {"recall@k", "ndcg@k", "mrr@k"} (Table 2's
    metrics, annrepro.metrics), the same per query under "<metric>:per_query" (float64 (nq,),
    for the report's bootstrap intervals) and "scanned", the mean share of the base scored per
    query."""
    from annrepro.metrics import mrr_at, ndcg_at, recall_at

    _, I, ncand = index.search(ds.xq, k, int(nprobe), return_ncand=True)
    gt = ds.gt(k)
    out = {
        f"recall@{k}": recall_at(I, gt, k),
        f"ndcg@{k}": ndcg_at(I, gt, k),
        f"mrr@{k}": mrr_at(I, gt, k),
        "scanned": float(ncand.mean() / ds.nb),
    }
    for name, v in per_query_scores(I, gt, k).items():
        # the per-query values must average to the metric (same definitions, same tie policy)
        if abs(v.mean() - out[name]) > 1e-9:
            raise RuntimeError(
                f"per-query {name} averages {v.mean()} but the metric is {out[name]}"
            )
        out[name + PER_QUERY] = v
    return out


def posting_list_sizes(codes: np.ndarray, W: int) -> np.ndarray:
    """codes: int (n, B) -> int64 (B, W): length of every posting list (Sec. 3.4 balance)."""
    codes = np.asarray(codes)
    return np.stack([np.bincount(codes[:, b], minlength=W) for b in range(codes.shape[1])])


class PostingListIndex:
    """A quantizer's codes for nb documents, searched through their posting lists.

    quantizer: trained `CodebookQuantizer` (or any object with its transform / decode /
    codeword_scores, searched by numpy); xb: float32 (nb, d) documents (encoded here) or
    codes: int (nb, B) precomputed; metric: "l2" | "ip"; norms2: optional float32 (nb,) squared
    norms of the reconstructions (AQ under L2; computed when needed and None).
    """

    def __init__(
        self,
        quantizer: CodebookQuantizer,
        metric: str,
        xb: np.ndarray | None = None,
        codes: np.ndarray | None = None,
        norms2: np.ndarray | None = None,
    ):
        if metric not in ("l2", "ip"):
            raise ValueError(f"unknown metric {metric!r}")
        if (xb is None) == (codes is None):
            raise ValueError("give exactly one of xb and codes")
        self.quantizer = quantizer
        self.metric = metric
        self.codes = np.ascontiguousarray(quantizer.encode(xb) if codes is None else codes)
        if self.codes.ndim != 2 or self.codes.shape[1] != quantizer.B:
            raise ValueError(f"codes must be (nb, {quantizer.B}); got {self.codes.shape}")
        self.codes = self.codes.astype(np.int32, copy=False)
        self.norms2 = norms2
        self._faiss_flat = self._faiss_lists = None  # built on first use

    @property
    def faiss_searchable(self) -> bool:
        """True when faiss can hold the quantizer (PQ / OPQ / AQ codebooks)."""
        return isinstance(self.quantizer, CodebookQuantizer)

    @property
    def nb(self) -> int:
        return self.codes.shape[0]

    def list_sizes(self) -> np.ndarray:
        """int64 (B, W): number of documents in each posting list."""
        return posting_list_sizes(self.codes, self.quantizer.W)

    def search(
        self,
        xq: np.ndarray,
        k: int,
        nprobe: int,
        query_batch: int = 1024,
        base_batch: int = 1 << 15,
        return_ncand: bool = False,
        method: str = "auto",
    ):
        """Top-k of each query among the documents of the probed posting lists.

        xq: float32 (nq, d_in). Returns `(D, I)`: D float32 (nq, k) squared L2 distances to the
        reconstructions (ascending) or inner products (descending), I int64 (nq, k) document ids,
        -1 (and +inf / -inf) where fewer than k candidates were found; with `return_ncand`, also
        int64 (nq,) the number of distinct candidates per query (the union of the probed lists).

        method: "faiss" (faiss's indexes, `kdindex.faiss_search`; nprobe = W is the exhaustive
        `IndexPQ` / `IndexResidualQuantizer` search), "numpy" (the dense masked scan, the test
        oracle; query_batch / base_batch size its blocks) or "auto": faiss when the quantizer
        holds codebooks (`faiss_searchable`), else numpy. Same results up to exact ties.
        """
        if method not in METHODS:
            raise ValueError(f"method={method!r}; expected one of {METHODS}")
        if not 1 <= nprobe <= self.quantizer.W:
            raise ValueError(f"nprobe={nprobe} must be in [1, W={self.quantizer.W}]")
        if k < 1:
            raise ValueError(f"k={k} must be positive")
        if method == "auto":
            method = "faiss" if self.faiss_searchable else "numpy"
        if method == "faiss":
            return self._search_faiss(xq, k, nprobe, return_ncand)
        return self._search_numpy(xq, k, nprobe, query_batch, base_batch, return_ncand)

    def _search_faiss(self, xq: np.ndarray, k: int, nprobe: int, return_ncand: bool):
        q = self.quantizer
        if not self.faiss_searchable:
            raise TypeError(f"faiss cannot hold a {type(q).__name__}: use method='numpy'")
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        if nprobe >= q.W:  # every list: the union is the base, exhaustive ADC
            if self._faiss_flat is None:
                self._faiss_flat = flat_index(q, self.codes, self.metric, self.norms2)
            q.transform(xq[:0])  # the dimension check of the numpy path
            D, I = self._faiss_flat.search(xq, k)
            ncand = np.full(len(xq), self.nb, dtype=np.int64)
        else:
            if self._faiss_lists is None:
                self._faiss_lists = InvertedFiles(q, self.codes, self.metric, self.norms2)
            xt = q.transform(xq)
            probes = select_probes(q.codeword_scores(xt, self.metric), nprobe)
            D, I = self._faiss_lists.search(xt, k, probes)
            ncand = self._count_candidates(probes) if return_ncand else None
        D = np.where(I >= 0, D, -np.inf if self.metric == "ip" else np.inf).astype(np.float32)
        return (D, I, ncand) if return_ncand else (D, I)

    def _count_candidates(self, probes: np.ndarray, cells: int = 1 << 24) -> np.ndarray:
        """probes int64 (nq, B, nprobe) -> int64 (nq,): size of the union of the probed lists
        (dense masks, `cells` booleans at a time; not part of the faiss search)."""
        nq, B, _ = probes.shape
        W = self.quantizer.W
        out = np.empty(nq, dtype=np.int64)
        step = max(1, cells // max(self.nb, 1))
        for q0 in range(0, nq, step):
            pb = probes[q0 : q0 + step]
            table = np.zeros((len(pb), B, W), dtype=bool)
            np.put_along_axis(table, pb, True, axis=2)
            cand = np.zeros((len(pb), self.nb), dtype=bool)
            for b in range(B):
                cand |= np.take(table[:, b, :], self.codes[:, b], axis=1)
            out[q0 : q0 + len(pb)] = cand.sum(1)
        return out

    def _search_numpy(self, xq, k, nprobe, query_batch, base_batch, return_ncand):
        import faiss

        q = self.quantizer
        nq = len(xq)
        D = np.empty((nq, k), dtype=np.float32)
        I = np.empty((nq, k), dtype=np.int64)
        ncand = np.zeros(nq, dtype=np.int64)
        ip = self.metric == "ip"
        worst = -np.inf if ip else np.inf
        for q0 in range(0, nq, query_batch):
            xt = q.transform(xq[q0 : q0 + query_batch])
            nqb = len(xt)
            probe = self._probe_table(q.codeword_scores(xt, self.metric), nprobe)
            qn = (xt * xt).sum(1)
            heap = faiss.ResultHeap(nqb, k, keep_max=ip)
            for b0 in range(0, self.nb, base_batch):
                codes = self.codes[b0 : b0 + base_batch]
                rec = q.decode(codes)
                S = xt @ rec.T
                if not ip:  # squared L2 = |q|^2 - 2 q.r + |r|^2
                    S *= -2
                    S += qn[:, None]
                    S += (rec * rec).sum(1)[None, :]
                cand = np.zeros(S.shape, dtype=bool)
                for b in range(q.B):
                    cand |= np.take(probe[:, b, :], codes[:, b], axis=1)
                ncand[q0 : q0 + nqb] += cand.sum(1)
                np.putmask(S, ~cand, worst)
                kk = min(k, S.shape[1])
                if ip:
                    part = np.argpartition(-S, kk - 1, axis=1)[:, :kk]
                else:
                    part = np.argpartition(S, kk - 1, axis=1)[:, :kk]
                Dc = np.take_along_axis(S, part, axis=1)
                Ic = np.where(np.isfinite(Dc), part + b0, -1).astype(np.int64)
                if kk < k:
                    Dc = np.pad(Dc, ((0, 0), (0, k - kk)), constant_values=worst)
                    Ic = np.pad(Ic, ((0, 0), (0, k - kk)), constant_values=-1)
                heap.add_result(np.ascontiguousarray(Dc, dtype=np.float32), Ic)
            heap.finalize()
            D[q0 : q0 + nqb] = heap.D
            I[q0 : q0 + nqb] = heap.I
        D[I < 0] = worst  # the heap pads with +-FLT_MAX
        if return_ncand:
            return D, I, ncand
        return D, I

    def search_lists(self, xq: np.ndarray, k: int, nprobe: int, return_ncand: bool = False):
        """As `search`, query by query, scoring only the documents of the probed lists: its
        cost follows the number of candidates (what a posting-list index is for), where
        `search` scores every document of a batch densely and masks the others (fast in
        numpy, but its time does not fall with nprobe). Used for latency (Figure 4).

        Each document's score is assembled from per-codebook look-up tables: q.r = sum_b
        <q, c^b_{code_b}> (product and additive codebooks alike), and for L2 |q|^2 - 2 q.r +
        |r|^2 with |r|^2 stored per document. Same results as `search` up to float ties.
        """
        q = self.quantizer
        if not 1 <= nprobe <= q.W:
            raise ValueError(f"nprobe={nprobe} must be in [1, W={q.W}]")
        ip = self.metric == "ip"
        lists, rnorm2 = self._inverted_lists()
        nq = len(xq)
        D = np.full((nq, k), -np.inf if ip else np.inf, dtype=np.float32)
        I = np.full((nq, k), -1, dtype=np.int64)
        ncand = np.zeros(nq, dtype=np.int64)
        xt = q.transform(xq)
        probe = np.argsort(-q.codeword_scores(xt, self.metric), axis=2)[:, :, :nprobe]
        dsub = q.codebooks.shape[2]
        arange_b = np.arange(q.B)
        for i in range(nq):
            cand = np.unique(np.concatenate([lists[b][w] for b in range(q.B) for w in probe[i, b]]))
            ncand[i] = len(cand)
            if q.product:
                sub = xt[i].reshape(q.B, dsub)
                lut = np.einsum("bwd,bd->bw", q.codebooks, sub)
            else:
                lut = q.codebooks @ xt[i]  # (B, W)
            s = lut[arange_b[None, :], self.codes[cand]].sum(1)
            if not ip:
                s = float(xt[i] @ xt[i]) - 2 * s + rnorm2[cand]
            kk = min(k, len(cand))
            order = np.argsort(-s if ip else s, kind="stable")[:kk]
            D[i, :kk] = s[order]
            I[i, :kk] = cand[order]
        return (D, I, ncand) if return_ncand else (D, I)

    def _inverted_lists(self):
        """Per codebook b and codeword w, the sorted ids of the documents whose code picks w,
        and |r|^2 of every reconstruction; built once."""
        if getattr(self, "_lists", None) is None:
            q = self.quantizer
            lists = []
            for b in range(q.B):
                order = np.argsort(self.codes[:, b], kind="stable")
                bounds = np.searchsorted(self.codes[order, b], np.arange(q.W + 1))
                lists.append([order[bounds[w] : bounds[w + 1]] for w in range(q.W)])
            rnorm2 = np.empty(self.nb, dtype=np.float32)
            for b0 in range(0, self.nb, 1 << 15):
                rec = q.decode(self.codes[b0 : b0 + (1 << 15)])
                rnorm2[b0 : b0 + len(rec)] = (rec * rec).sum(1)
            self._lists = (lists, rnorm2)
        return self._lists

    @staticmethod
    def _probe_table(scores: np.ndarray, nprobe: int) -> np.ndarray:
        """scores float32 (nq, B, W) -> bool (nq, B, W): the nprobe best codewords per codebook."""
        nq, B, W = scores.shape
        if nprobe >= W:
            return np.ones((nq, B, W), dtype=bool)
        top = select_probes(scores, nprobe)  # the same sets as the faiss path
        table = np.zeros((nq, B, W), dtype=bool)
        np.put_along_axis(table, top, True, axis=2)
        return table
