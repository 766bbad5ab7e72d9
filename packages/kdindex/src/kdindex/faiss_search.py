"""Search learned PQ / OPQ / AQ codebooks and codes with faiss's own indexes (KDindex Sec. 2.2,
3.4, App. D), so that every method of the tables is searched at faiss speed.

Nothing is re-trained or re-encoded: the codebooks go into faiss quantizers as they are and the
codes (`int (nb, B)`, one codeword id per codebook) are packed into faiss's code layout.

- Exhaustive search (`flat_index`): PQ / OPQ in `faiss.IndexPQ`, wrapped in an
  `IndexPreTransform` for OPQ's rotation (`LinearTransform`) or PQ's zero padding
  (`RemapDimensionsTransform`); AQ in `faiss.IndexResidualQuantizer` (any additive codebooks: the
  search does not depend on the encoder), with the squared norm of every reconstruction stored
  as a float beside its code for L2 (`ST_norm_float`: `|q|^2 - 2 <q, Q(d)> + |Q(d)|^2`, the
  numpy oracle's formula) and the look-up table alone for inner product (`ST_LUT_nonorm`).
- Posting lists (`InvertedFiles`): per codebook `b` one inverted file whose `W` lists are the
  codewords of `b` (Sec. 3.4: a document is in list `w` of codebook `b` when its code picks `w`),
  filled with the precomputed assignments (`ArrayInvertedLists.add_entries`: ids and what scores
  each document) and searched with `IndexIVF.search_preassigned` on each query's `nprobe` best
  codewords of `b` by `S(q, c)` (Eq. 1, `CodebookQuantizer.codeword_scores`). The residual
  encoding is off (`by_residual = False`), so a document's score in every list is its
  asymmetric distance to the whole query: PQ / OPQ in `IndexIVFPQ` (sum of the per-subspace
  tables); AQ under inner product in an `IndexIVFPQ` "lifted" to B * d dimensions (sub-quantizer
  b's centroids are codebook b, the query is repeated B times: the table sum is <q, Q(d)>); AQ
  under L2 as float reconstructions in an `IndexIVFFlat` (||q - Q(d)||^2) while the B copies
  fit `MAX_FLOAT_BYTES`, else in faiss's `IndexIVFResidualQuantizer`. The B per-codebook top-k
  are merged with duplicates removed (`merge_unique`: a document in several probed lists has one
  score), which is exactly the top-k of the union of the probed lists.

A note on cost: faiss's AQ inverted-list scanner recomputes the query's look-up table for every
probed list (`AQInvertedListScannerLUT::set_list`, a TODO in faiss): B * nprobe tables of
B * W * d per query, which made AQ posting lists 20-500x slower than PQ's on the stand-ins
(fmnist-1K 19 q/s against 10,700 q/s with the float lists; glove100-ip-100K 159 against
3,390 q/s lifted; the same ids, distances equal to float rounding). The lifted and float layouts
compute one table (or none) per query and file; faiss's AQ file is the fallback for bases whose
float copies would not fit (the flat AQ index computes its table once per query but reads codes
bit by bit).

B files compute PQ's look-up table B times per query; one file of B * W lists computes it once
but must keep the top k * B (a near document is in most of its B lists), and that larger heap
costs more than the tables saved (bench_kdindex, nb 100k, d 64, 1 thread: 0.51x / 0.73x /
0.92x IndexIVFPQ at nprobe 1 / 4 / 16 against 0.57x / 0.80x / 1.00x for B files; groups of
2 or 4 codebooks fall in between). So the B files stay.
"""

from __future__ import annotations

import numpy as np

from .quantizers import CodebookQuantizer

__all__ = ["InvertedFiles", "flat_index", "merge_unique", "pack_codes", "select_probes"]


def _metric(metric: str):
    import faiss

    if metric == "l2":
        return faiss.METRIC_L2
    if metric == "ip":
        return faiss.METRIC_INNER_PRODUCT
    raise ValueError(f"unknown metric {metric!r}; expected 'l2' or 'ip'")


def _nbits(W: int) -> int:
    nbits = int(np.log2(W))
    if 2**nbits != W:
        raise ValueError(f"W={W} must be a power of two (codes are log2(W) bits)")
    return nbits


def pack_codes(codes: np.ndarray, nbits: int) -> np.ndarray:
    """int (n, B) codeword ids -> uint8 (n, ceil(B * nbits / 8)): faiss's PQ code layout
    (`BitstringWriter`: code b at bit b * nbits, least significant bit first; one byte per code
    for nbits = 8)."""
    codes = np.asarray(codes)
    n, B = codes.shape
    if codes.size and (codes.min() < 0 or codes.max() >= 1 << nbits):
        raise ValueError(f"codes must lie in [0, {1 << nbits}) for nbits={nbits}")
    if nbits == 8:
        return np.ascontiguousarray(codes, dtype=np.uint8)
    bits = (codes.astype(np.int64)[:, :, None] >> np.arange(nbits)) & 1
    return np.ascontiguousarray(
        np.packbits(bits.reshape(n, B * nbits).astype(np.uint8), axis=1, bitorder="little")
    )


def _aq_packed(aq, codes: np.ndarray, norms2: np.ndarray | None) -> np.ndarray:
    """Codes int (n, B) (+ float32 (n,) squared norms for ST_norm_float) -> faiss AQ codes."""
    import faiss

    codes = np.ascontiguousarray(codes, dtype=np.int32)
    out = np.zeros((len(codes), aq.code_size), dtype=np.uint8)
    norms_ptr = None
    if norms2 is not None:
        norms2 = np.ascontiguousarray(norms2, dtype=np.float32)
        norms_ptr = faiss.swig_ptr(norms2)
    if len(codes):
        aq.pack_codes(len(codes), faiss.swig_ptr(codes), faiss.swig_ptr(out), -1, norms_ptr)
    return out


def _aq_search_type(metric: str):
    import faiss

    # L2 needs |Q(d)|^2 per document: stored exactly as a float (4 bytes beside the code)
    return (
        faiss.AdditiveQuantizer.ST_norm_float
        if metric == "l2"
        else (faiss.AdditiveQuantizer.ST_LUT_nonorm)
    )


def _set_aq_codebooks(aq, q: CodebookQuantizer) -> None:
    import faiss

    faiss.copy_array_to_vector(np.ascontiguousarray(q.codebooks.ravel()), aq.codebooks)
    aq.is_trained = True


def _set_pq_codebooks(pq, q: CodebookQuantizer) -> None:
    import faiss

    faiss.copy_array_to_vector(np.ascontiguousarray(q.codebooks.ravel()), pq.centroids)


def _check(q: CodebookQuantizer, codes: np.ndarray, norms2) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(q, CodebookQuantizer):
        raise TypeError(f"faiss search needs a CodebookQuantizer (PQ / OPQ / AQ); got {type(q)}")
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != q.B:
        raise ValueError(f"codes must be (nb, B={q.B}); got {codes.shape}")
    if norms2 is None and not q.product:
        r2 = np.empty(len(codes), dtype=np.float32)
        for i0 in range(0, len(codes), 1 << 16):
            r = q.decode(codes[i0 : i0 + (1 << 16)])
            r2[i0 : i0 + len(r)] = (r * r).sum(1)
        norms2 = r2
    return codes, norms2


def flat_index(q: CodebookQuantizer, codes: np.ndarray, metric: str, norms2=None):
    """A faiss index holding codebooks `q` and codes int (nb, B) for exhaustive asymmetric-
    distance search of raw queries float32 (nq, d_in) (`index.search(xq, k)`: squared L2 to the
    reconstruction ascending, or inner product descending; ids are row numbers).

    PQ / OPQ: `IndexPQ(d_out, B, log2 W)` behind an `IndexPreTransform` (OPQ rotation / zero
    padding) when d_out != d_in or a rotation is set; AQ: `IndexResidualQuantizer` with the
    squared reconstruction norms norms2 float32 (nb,) (computed when None) for L2.
    """
    import faiss

    codes, norms2 = _check(q, codes, norms2)
    nbits, mt = _nbits(q.W), _metric(metric)
    if q.product:
        index = faiss.IndexPQ(q.d_out, q.B, nbits, mt)
        _set_pq_codebooks(index.pq, q)
        index.is_trained = True
        packed = pack_codes(codes, nbits)
    else:
        index = faiss.IndexResidualQuantizer(q.d_out, q.B, nbits, mt, _aq_search_type(metric))
        _set_aq_codebooks(index.rq, q)
        index.is_trained = True
        packed = _aq_packed(index.rq, codes, norms2 if metric == "l2" else None)
    if len(packed):
        index.add_sa_codes(packed)
    if q.rotation is None and q.d_out == q.d_in:
        return index
    if q.rotation is not None:
        vt = faiss.LinearTransform(q.d_in, q.d_out, False)
        faiss.copy_array_to_vector(np.ascontiguousarray(q.rotation.ravel()), vt.A)
        vt.is_trained = True
    else:  # PQ on input zero padded to d_out: dimension i -> i, the rest 0
        vt = faiss.RemapDimensionsTransform(q.d_in, q.d_out, False)
    return faiss.IndexPreTransform(vt, index)  # faiss's wrapper keeps vt and index alive


def select_probes(scores: np.ndarray, nprobe: int) -> np.ndarray:
    """scores float32 (nq, B, W) (higher = more similar, `codeword_scores`) -> int64
    (nq, B, nprobe): the nprobe best codewords of each codebook (in no particular order; the
    numpy oracle probes the same sets). Few probes: faiss's heap over each row (3x faster than
    numpy's per-row selection); many: `np.argpartition`. Exact ties among codeword scores may
    be broken either way."""
    nq, B, W = scores.shape
    if nprobe >= W:
        return np.broadcast_to(np.arange(W, dtype=np.int64), scores.shape).copy()
    if nprobe * 32 > W:
        return np.argpartition(-scores, nprobe - 1, axis=2)[:, :, :nprobe].astype(np.int64)
    import faiss

    rows = np.ascontiguousarray(scores.reshape(nq * B, W), dtype=np.float32)
    D = np.empty((nq * B, nprobe), dtype=np.float32)
    I = np.empty((nq * B, nprobe), dtype=np.int64)
    heaps = faiss.float_minheap_array_t()  # a min-heap keeps the largest values
    heaps.k, heaps.nh = nprobe, nq * B
    heaps.val, heaps.ids = faiss.swig_ptr(D), faiss.swig_ptr(I)
    heaps.heapify()
    heaps.addn(W, faiss.swig_ptr(rows))  # the id of a score is its column: the codeword
    return I.reshape(nq, B, nprobe)


def _sortable(key: np.ndarray) -> np.ndarray:
    """float32 -> uint32 with the same order (IEEE bits: flip all of a negative, the sign of a
    positive)."""
    u = key.view(np.uint32)
    return np.where(u >> 31, ~u, u | np.uint32(1 << 31))


def _unsortable(u: np.ndarray) -> np.ndarray:
    return np.where(u >> 31, u & np.uint32(0x7FFFFFFF), ~u).view(np.float32)


def merge_unique(D: np.ndarray, I: np.ndarray, k: int, metric: str):
    """Top-k distinct ids of candidate lists D float32 (nq, m), I int64 (nq, m) (-1 = none; an
    id may repeat, always with the same score): (D (nq, k), I (nq, k)), best first (equal
    scores by id), padded with -1 and +inf (L2) / -inf (inner product).

    One sort per row of (score, id) packed in 64 bits (scores as order-preserving 32-bit keys,
    ids below 2^32), so the repeats of an id are adjacent; then the first k distinct entries."""
    ip = metric == "ip"
    nq, m = I.shape
    if I.size and I.max() >= 0xFFFFFFFF:
        raise ValueError("merge_unique packs ids on 32 bits: ids must be < 2^32 - 1")
    valid = I >= 0
    key = np.ascontiguousarray(-D if ip else D, dtype=np.float32)
    packed = (_sortable(key).astype(np.uint64) << np.uint64(32)) | I.astype(np.uint64) & np.uint64(
        0xFFFFFFFF
    )
    packed[~valid] = np.uint64(0xFFFFFFFFFFFFFFFF)  # after every real entry
    packed.sort(axis=1)
    ids = (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)
    keep = packed != np.uint64(0xFFFFFFFFFFFFFFFF)
    keep[:, 1:] &= ids[:, 1:] != ids[:, :-1]
    rank = np.cumsum(keep, axis=1) - 1
    rows, cols = np.nonzero(keep & (rank < k))
    out_I = np.full((nq, k), -1, dtype=np.int64)
    out_D = np.full((nq, k), -np.inf if ip else np.inf, dtype=np.float32)
    dst = rank[rows, cols]
    out_I[rows, dst] = ids[rows, cols]
    best = _unsortable((packed[rows, cols] >> np.uint64(32)).astype(np.uint32))
    out_D[rows, dst] = -best if ip else best
    return out_D, out_I


#: the reconstructions an L2 AQ posting-list search may hold as floats (B copies of nb x d_out
#: float32); above it, faiss's AQ inverted file (slow: its look-up table per probed list)
MAX_FLOAT_BYTES = 1 << 30


class InvertedFiles:
    """The posting lists of codes int (nb, B) under codebooks `q` as B faiss inverted files
    (module docstring): file b has W lists, list w holds the ids of the documents whose code
    picks codeword w of codebook b, with what scores them. Searched with transformed queries
    (d_out).

    What a list holds, by quantizer and metric (`mode`), each scoring S(q, Q(d)) exactly:
    - "pq": PQ / OPQ codes in `IndexIVFPQ` (one look-up table per query and file);
    - "lifted" (AQ, inner product): the AQ codes in an `IndexIVFPQ` of dimension B * d_out whose
      sub-quantizer b has codebook b as centroids, searched with the query repeated B times:
      sum_b <q, c_b,code_b> = <q, Q(d)>, one table per query and file, where faiss's AQ
      inverted file recomputes its table for every probed list (20-200x slower here);
    - "float" (AQ, L2): the reconstructions Q(d) in an `IndexIVFFlat` (||q - Q(d)||^2 computed
      directly), when the B copies fit `max_float_bytes`;
    - "aq" (AQ, L2, larger): faiss's `IndexIVFResidualQuantizer` with the stored norms
      (`ST_norm_float`), correct but slow (module docstring)."""

    def __init__(
        self,
        q: CodebookQuantizer,
        codes: np.ndarray,
        metric: str,
        norms2=None,
        max_float_bytes: int = MAX_FLOAT_BYTES,
        mode: str | None = None,
    ):
        """`mode` forces a layout (tests; "aq" for AQ under either metric, "float" for L2)."""
        import faiss

        self.quantizer, self.metric, self.nb = q, metric, len(np.asarray(codes))
        nbits, mt, W, B, d = _nbits(q.W), _metric(metric), q.W, q.B, q.d_out
        if q.product:
            self.mode = "pq"
        elif mode is not None:
            if mode not in ("lifted", "float", "aq") or (mode, metric) == ("lifted", "l2"):
                raise ValueError(f"mode={mode!r} does not hold an AQ under {metric}")
            self.mode = mode
        elif metric == "ip":
            self.mode = "lifted"
        elif B * self.nb * d * 4 <= max_float_bytes:
            self.mode = "float"
        else:
            self.mode = "aq"
        # only faiss's AQ file needs the squared norms (an empty array: none computed)
        wants_norms = self.mode == "aq" and metric == "l2"
        codes, norms2 = _check(q, codes, norms2 if wants_norms else np.empty(0))
        if self.mode in ("pq", "lifted"):
            packed = pack_codes(codes, nbits)
        elif self.mode == "float":
            packed = np.empty((self.nb, d * 4), dtype=np.uint8)
            for i0 in range(0, self.nb, 1 << 16):
                r = np.ascontiguousarray(q.decode(codes[i0 : i0 + (1 << 16)]), dtype=np.float32)
                packed[i0 : i0 + len(r)] = r.view(np.uint8)
        self.files, self._keep = [], []
        for b in range(B):
            if self.mode == "lifted":
                coarse = faiss.IndexFlat(B * d, mt)  # never searched: the lists are preassigned
                ivf = faiss.IndexIVFPQ(coarse, B * d, W, B, nbits, mt)
                faiss.copy_array_to_vector(
                    np.ascontiguousarray(q.codebooks.ravel()), ivf.pq.centroids
                )
            else:
                coarse = faiss.IndexFlat(d, mt)
                if self.mode == "pq":
                    ivf = faiss.IndexIVFPQ(coarse, d, W, B, nbits, mt)
                    _set_pq_codebooks(ivf.pq, q)
                elif self.mode == "float":
                    ivf = faiss.IndexIVFFlat(coarse, d, W, mt)
                else:
                    ivf = faiss.IndexIVFResidualQuantizer(
                        coarse, d, W, B, nbits, mt, _aq_search_type(metric)
                    )
                    _set_aq_codebooks(ivf.rq, q)
                    if b == 0:
                        packed = _aq_packed(ivf.rq, codes, norms2 if metric == "l2" else None)
            ivf.by_residual = False  # full codes: the score is S(q, Q(d)) in every list
            ivf.is_trained = True
            order = np.argsort(codes[:, b], kind="stable")
            bounds = np.searchsorted(codes[order, b], np.arange(W + 1))
            ids = np.ascontiguousarray(order, dtype=np.int64)
            lists_codes = np.ascontiguousarray(packed[order])
            for w in np.flatnonzero(np.diff(bounds)):
                lo, n = int(bounds[w]), int(bounds[w + 1] - bounds[w])
                ivf.invlists.add_entries(
                    int(w), n, faiss.swig_ptr(ids[lo:]), faiss.swig_ptr(lists_codes[lo:])
                )
            ivf.ntotal = self.nb
            self.files.append(ivf)
            self._keep.append(coarse)  # the IVF does not own its coarse quantizer

    def search(self, xq_t: np.ndarray, k: int, probes: np.ndarray):
        """xq_t float32 (nq, d_out) transformed queries, probes int64 (nq, B, nprobe) codeword
        ids (`select_probes`) -> (D float32 (nq, k), I int64 (nq, k)): the top-k of the union
        of the probed lists by asymmetric distance, padded with -1."""
        nq, B, nprobe = probes.shape
        xq_t = np.ascontiguousarray(xq_t, dtype=np.float32)
        if self.mode == "lifted":  # the query once per sub-quantizer: sum_b <q, c_b,code_b>
            xq_t = np.ascontiguousarray(np.tile(xq_t, (1, B)))
        zeros = np.zeros((nq, nprobe), dtype=np.float32)  # coarse distances: unused
        Ds, Is = [], []
        for b, ivf in enumerate(self.files):
            ivf.nprobe = nprobe
            D, I = ivf.search_preassigned(xq_t, k, np.ascontiguousarray(probes[:, b]), zeros)
            Ds.append(D)
            Is.append(I)
        return merge_unique(np.hstack(Ds), np.hstack(Is), k, self.metric)
