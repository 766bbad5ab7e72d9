"""Benchmarks of KDindex (prints figures; not a test), with `kdindex.api.KDIndex`.

1. teacher labelling (Sec. 3.1, 4.1; Table 7): `HNSWTeacher.build` throughput (vectors/s) and
   `HNSWTeacher.label(xt, K)` throughput (training queries/s);
2. training (Algorithm 2) through one `KDIndex.fit` on those labels: training queries/s per
   differentiable epoch (SGD over the epoch's mini-batches; the validation pass that follows each
   epoch is timed apart), and the share of the epoch spent in the balanced assignment
   (Algorithm 1: `train._balanced_codes`, of which Sinkhorn `train.sinkhorn_codes`), plus the
   wall time of the other phases of the fit (warm start, iterative initialisation, final
   balanced encoding of the base). The package is not edited: its module-level functions are
   wrapped by timers for the duration of the fit (`_Timers`), which adds a few microseconds
   per call;
3. search of the trained index through faiss (`KDIndex.search`, `kdindex.faiss_search`), side
   by side at each of `--search-threads` (default 1 and 2 faiss threads): exhaustive against
   faiss's own `IndexPQ` on the *same* codebooks and codes, and posting lists (`nprobe` per
   codebook, B inverted files) against a plain faiss `IndexIVFPQ` (W k-means lists) probing
   B x nprobe lists, i.e. the same number of scanned codes (faiss's IVF statistics print both);
   q/s and ratios, plus the old numpy path's ratio (first thread count, `--numpy-queries`
   queries). Asserted on the way: the same top-1 as IndexPQ, and as the numpy oracle for the
   lists, for at least `--min-top1-agree` of the queries (ties may order differently).
   `--search-only` skips 1 and 2 (a faiss PQ's codebooks and codes in a KDIndex).

The student is "PQ" (faiss's IndexPQ can hold its codebooks); B = 8, W = 256, K = 10 (Sec. 4.1).
The data are a seeded Gaussian mixture (d = 64) unless `--dataset` names a registry data set
(its base, learn set as training queries, and queries; its metric).

    python benchmarks/bench_kdindex.py --quick            # < 1 min at 1 thread
    python benchmarks/bench_kdindex.py --search-only      # search alone, nb = 100k
    python benchmarks/bench_kdindex.py [--dataset sift-10K] [--nb 100000 --nt 10000 --nq 2000]
        [--epochs 3] [--threads 1]

Run with nothing else on the machine; the thread count is printed with every timing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections import defaultdict

import numpy as np


def _mixture(n: int, d: int, rng: np.random.Generator, centers: np.ndarray) -> np.ndarray:
    x = centers[rng.integers(0, len(centers), n)] + rng.standard_normal((n, d), dtype=np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def _data(dataset: str | None, nb: int, nt: int, nq: int, d: int, seed: int = 0):
    """(xb, xt, xq, metric, name): registry data set (truncated to nb / nt / nq) or a seeded
    Gaussian mixture of 64 clusters."""
    if dataset:
        from annrepro.datasets import get_dataset

        ds = get_dataset(dataset)
        xb, xt, xq = ds.xb[:nb], ds.xt[:nt], ds.xq[:nq]
        f32 = [np.ascontiguousarray(x, dtype=np.float32) for x in (xb, xt, xq)]
        return (*f32, ds.metric, dataset)
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((64, d)).astype(np.float32) * 2
    xb, xt, xq = (_mixture(n, d, rng, centers) for n in (nb, nt, nq))
    return xb, xt, xq, "l2", f"synthetic mixture d={d}"


# ----------------------------------------------------------------------------- 1. teacher
def bench_teacher(xb, xt, metric, K, M, efc, efs, threads):
    from kdindex.teacher import HNSWTeacher

    def teacher():
        return HNSWTeacher(
            xb.shape[1], metric, M=M, ef_construction=efc, ef_search=efs, threads=threads
        )

    warm = teacher()
    warm.build(xb[:2000])  # untimed warm-up (imports, allocator)
    warm.label(xt[:200], K)
    t = teacher()
    build_s = t.build(xb)
    t0 = time.perf_counter()
    labels = t.label(xt, K)
    label_s = time.perf_counter() - t0
    print(
        f"[teacher] HNSW M={M} efC={efc}: build {len(xb)} x {xb.shape[1]} in {build_s:.2f} s, "
        f"{len(xb) / build_s:.0f} vectors/s, {threads} thread(s)"
    )
    print(
        f"[teacher] label(xt, K={K}) efS={efs}: {len(xt)} queries in {label_s:.2f} s, "
        f"{len(xt) / label_s:.0f} queries/s, {threads} thread(s)"
    )
    return labels


# ---------------------------------------------------------------------------- 2. training
@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (faiss's C++ k-means warnings on the tiny warm-up fit)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _Timers:
    """Wraps module-level functions of kdindex with timers while in the `with` block; keeps
    (start, end) intervals per wrapped name. Restores the originals on exit."""

    def __init__(self, targets):
        self.targets = targets  # [(module, attribute name)]
        self.spans = defaultdict(list)
        self._saved = []

    def __enter__(self):
        for mod, name in self.targets:
            fn = getattr(mod, name)  # AttributeError if the package renamed it
            self._saved.append((mod, name, fn))
            setattr(mod, name, self._wrap(f"{mod.__name__.split('.')[-1]}.{name}", fn))
        return self

    def _wrap(self, key, fn):
        spans = self.spans[key]

        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spans.append((t0, time.perf_counter()))

        return timed

    def __exit__(self, *exc):
        for mod, name, fn in reversed(self._saved):
            setattr(mod, name, fn)

    def total(self, key, lo=-np.inf, hi=np.inf) -> float:
        """Seconds spent in `key` by calls that started in [lo, hi)."""
        return sum(e - s for s, e in self.spans[key] if lo <= s < hi)


def _make_index(metric, B, W, K, epochs, init_rounds, n_warm, seed=0):
    from kdindex.api import KDIndex
    from kdindex.train import TrainConfig

    # patience = epochs: every epoch runs, so each is measured (early stopping would cut them)
    cfg = TrainConfig(
        epochs=epochs,
        patience=max(epochs, 1),
        init_max_rounds=init_rounds,
        seed=seed,
        progress=False,
    )
    return KDIndex("PQ", metric, B=B, W=W, K=K, config=cfg, n_warm=n_warm)


def bench_train(xb, xt, labels, metric, B, W, K, epochs, init_rounds, threads):
    from kdindex import api, train

    # untimed warm-up: a tiny fit (torch's lazy initialisation, faiss k-means code paths)
    nw = min(len(xb), 4 * W)
    with _quiet_stderr():
        _make_index(metric, B, W, K, 1, 1, nw).fit(
            xb[:nw], xt[:64], labels=np.minimum(labels[:64], nw - 1)
        )
    index = _make_index(metric, B, W, K, epochs, init_rounds, len(xb))
    targets = [
        (api, "train_quantizer"),
        (api, "train_student"),
        (api, "encode"),
        (train, "_val_recall"),
        (train, "_balanced_codes"),
        (train, "sinkhorn_codes"),
    ]
    t0 = time.perf_counter()
    with _Timers(targets) as tm:
        index.fit(xb, xt, labels=labels)
    fit_s = time.perf_counter() - t0
    cfg, res = index.config, index.result
    n_val = int(round(cfg.val_frac * len(xt)))
    n_tr = len(xt) - n_val
    val = tm.spans["train._val_recall"]  # one before the epochs, one after each epoch
    ts0, ts1 = tm.spans["api.train_student"][0]
    diff_start = val[0][0]
    print(
        f"[train] KDIndex PQ B={B} W={W} K={K} {metric}, nb={len(xb)} nt={len(xt)} "
        f"({n_tr} training + {n_val} validation queries), batch {cfg.batch_size}, "
        f"{threads} thread(s): fit {fit_s:.2f} s = warm start "
        f"{tm.total('api.train_quantizer'):.2f} s + iterative init ({res.init_rounds} rounds) "
        f"{diff_start - ts0:.2f} s + differentiable epochs and validation {ts1 - diff_start:.2f} s "
        f"+ balanced encoding of the base {tm.total('api.encode'):.2f} s"
    )
    init_bal = tm.total("train._balanced_codes", ts0, diff_start)
    print(
        f"[train] iterative init: balanced assignment {init_bal:.2f} s "
        f"({100 * init_bal / max(diff_start - ts0, 1e-12):.0f}%), of which Sinkhorn "
        f"{tm.total('train.sinkhorn_codes', ts0, diff_start):.2f} s"
    )
    for ep in range(len(val) - 1):
        lo, hi = val[ep][1], val[ep + 1][0]  # SGD of epoch ep: between two validation passes
        sgd = hi - lo
        bal = tm.total("train._balanced_codes", lo, hi)
        sk = tm.total("train.sinkhorn_codes", lo, hi)
        print(
            f"[train] differentiable epoch {ep + 1}/{len(val) - 1}: {n_tr} queries in "
            f"{sgd:.2f} s, {n_tr / sgd:.0f} training queries/s ({n_tr * K / sgd:.0f} teacher "
            f"documents/s), balanced assignment {100 * bal / sgd:.0f}% of the epoch "
            f"({bal:.2f} s; Sinkhorn {100 * sk / sgd:.0f}%), then validation "
            f"{val[ep + 1][1] - val[ep + 1][0]:.2f} s, {threads} thread(s)"
        )
    enc = tm.total("api.encode")
    enc_bal = tm.total("train._balanced_codes", tm.spans["api.encode"][0][0])
    print(
        f"[train] balanced encoding of {len(xb)} base vectors: {enc:.2f} s, "
        f"{len(xb) / enc:.0f} vectors/s, balanced assignment {100 * enc_bal / enc:.0f}%"
    )
    return index


# ------------------------------------------------------------------------------ 3. search
def _faiss_pq(index):
    """faiss.IndexPQ holding the KDIndex's codebooks and codes (PQ student, W = 256), built here
    independently of kdindex.faiss_search: the reference the KDIndex search is timed against."""
    import faiss

    q = index.quantizer
    if q.kind != "PQ" or q.W != 256:
        raise ValueError("faiss.IndexPQ comparison needs a PQ student with W = 256 (8-bit codes)")
    mt = faiss.METRIC_INNER_PRODUCT if index.metric == "ip" else faiss.METRIC_L2
    fi = faiss.IndexPQ(q.d_out, q.B, 8, mt)
    faiss.copy_array_to_vector(np.ascontiguousarray(q.codebooks.ravel()), fi.pq.centroids)
    fi.is_trained = True
    codes = np.ascontiguousarray(index.codes.astype(np.uint8))
    faiss.copy_array_to_vector(codes.ravel(), fi.codes)
    fi.ntotal = len(codes)
    return fi


def _faiss_ivfpq(index, xb, n_train=50_000, seed=0):
    """A plain faiss IndexIVFPQ (nlist = W lists from k-means, B x 8-bit residual PQ codes,
    faiss's defaults otherwise) over the same base, in the quantizer's transformed space: the
    reference for the posting-list search at an equal number of scanned codes."""
    import faiss

    q = index.quantizer
    mt = faiss.METRIC_INNER_PRODUCT if index.metric == "ip" else faiss.METRIC_L2
    coarse = faiss.IndexFlat(q.d_out, mt)
    ivf = faiss.IndexIVFPQ(coarse, q.d_out, q.W, q.B, 8, mt)
    ivf.cp.seed = ivf.pq.cp.seed = seed
    xt = q.transform(xb)
    rng = np.random.default_rng(seed)
    ivf.train(xt[np.sort(rng.permutation(len(xt))[:n_train])])
    ivf.add(xt)
    return ivf


def _best(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _scanned(fn):
    """(result of fn(), codes scanned per query): faiss's IVF statistics over one call."""
    import faiss

    st = faiss.cvar.indexIVF_stats
    st.reset()
    out = fn()
    return out, st.ndis


def bench_search(index, xb, xq, k, nprobes, thread_list, repeats, min_agree, n_numpy):
    """Queries/s of KDIndex.search (faiss path) against faiss's IndexPQ on the same codebooks and
    codes (exhaustive) and against a faiss IndexIVFPQ probing B x nprobe of its W lists (the
    same number of scanned codes as nprobe lists of each of the B codebooks), measured side by
    side at each thread count, plus the old numpy path's ratio (first thread count only, on the
    first n_numpy queries)."""
    import faiss

    fi = _faiss_pq(index)
    ivf = _faiss_ivfpq(index, xb)
    q = index.quantizer
    B, W, nq = q.B, q.W, len(xq)
    xq_t = q.transform(xq)  # PQ: zero padding to d_out (none when B divides d)
    xn = xq[:n_numpy]
    lists = [p for p in nprobes if p < W]
    # untimed warm-ups: build the KDIndex's faiss indexes (flat, inverted files)
    index.search(xq[:50], k)
    for p in lists[:1]:
        index.search(xq[:50], k, nprobe=p)
    # correctness on the way: the faiss path vs faiss's own IndexPQ and vs the numpy oracle
    _, If = fi.search(xq_t, k)
    _, Ik = index.search(xq, k)
    agree = float(np.mean(If[:, 0] == Ik[:, 0]))
    print(
        f"[search] KDIndex (faiss) exhaustive: same top-1 as faiss.IndexPQ for {100 * agree:.1f}%"
    )
    assert agree >= min_agree, f"top-1 agreement {agree:.3f} < {min_agree}: not the same search"
    for p in lists:
        _, In = index.search(xn, k, nprobe=p, method="numpy")
        _, Il = index.search(xn, k, nprobe=p)
        a = float(np.mean(In[:, 0] == Il[:, 0]))
        print(f"[search] KDIndex nprobe={p}: faiss path = numpy oracle top-1 for {100 * a:.1f}%")
        assert a >= min_agree, f"nprobe={p}: faiss path and numpy oracle disagree ({a:.3f})"
    for ti, threads in enumerate(thread_list):
        faiss.omp_set_num_threads(threads)
        tag = f"{threads} thread(s)"
        f_s, _ = _best(lambda: fi.search(xq_t, k), repeats)
        kd_s, _ = _best(lambda: index.search(xq, k), repeats)
        print(
            f"[search] exhaustive, nb={fi.ntotal} k={k}, {tag}: faiss.IndexPQ {nq / f_s:.0f} q/s, "
            f"KDIndex (faiss) {nq / kd_s:.0f} q/s = {f_s / kd_s:.2f}x IndexPQ"
        )
        if ti == 0:
            n_s, _ = _best(lambda: index.search(xn, k, method="numpy"), 1)
            print(
                f"[search] exhaustive, {tag}: old numpy ADC {len(xn) / n_s:.0f} q/s "
                f"({len(xn)} queries) = {len(xn) / n_s / (nq / f_s):.2f}x IndexPQ"
            )
        for p in lists:
            ivf.nprobe = min(B * p, W)

            def ref():
                return ivf.search(xq_t, k)

            def kd(p=p):
                return index.search(xq, k, nprobe=p)

            r_s, _ = _best(ref, repeats)
            l_s, _ = _best(kd, repeats)
            _, r_nd = _scanned(ref)
            _, k_nd = _scanned(kd)
            print(
                f"[search] posting lists nprobe={p} per codebook, {tag}: IndexIVFPQ nprobe="
                f"{ivf.nprobe}/{W} {nq / r_s:.0f} q/s ({r_nd / nq:.0f} codes/query), KDIndex "
                f"(faiss) {nq / l_s:.0f} q/s ({k_nd / nq:.0f} codes/query) = {r_s / l_s:.2f}x "
                f"IndexIVFPQ"
                + (  # B x nprobe > W: IndexIVFPQ cannot probe more than its W lists
                    f" (NOT equal scanned codes: IndexIVFPQ capped at its {W} lists)"
                    if B * p > W
                    else ""
                )
            )
            if ti == 0:
                n_s, _ = _best(lambda p=p: index.search(xn, k, nprobe=p, method="numpy"), 1)
                print(
                    f"[search] posting lists nprobe={p}, {tag}: old numpy scan "
                    f"{len(xn) / n_s:.0f} q/s ({len(xn)} queries) = "
                    f"{len(xn) / n_s / (nq / r_s):.2f}x IndexIVFPQ"
                )


def _search_only_index(xb, metric, B, W, K, seed=0):
    """A KDIndex holding a faiss-trained PQ's codebooks and nearest codes (no teacher, no
    training): the search code path is the trained index's."""
    from kdindex.api import KDIndex
    from kdindex.quantizers import train_quantizer
    from kdindex.student import reconstruction_norms2

    rng = np.random.default_rng(seed)
    sample = xb[np.sort(rng.permutation(len(xb))[:50_000])]
    index = KDIndex("PQ", metric, B=B, W=W, K=K)
    index.quantizer = train_quantizer("PQ", sample, B=B, W=W, seed=seed)
    index.codes = index.quantizer.encode(xb)
    index.norms2 = reconstruction_norms2(index.quantizer, index.codes)
    return index


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="< 1 min: 20k base, 1.5k train queries")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dataset", default=None, help="registry data set; default: synthetic")
    ap.add_argument("--d", type=int, default=64, help="synthetic dimension")
    ap.add_argument("--nb", type=int, default=None)
    ap.add_argument("--nt", type=int, default=None, help="training queries")
    ap.add_argument("--nq", type=int, default=None, help="search queries")
    ap.add_argument("--epochs", type=int, default=None, help="differentiable epochs")
    ap.add_argument("--init-rounds", type=int, default=None, help="iterative-init rounds at most")
    ap.add_argument("--k", type=int, default=10, help="search k")
    ap.add_argument("--K", type=int, default=10, help="teacher neighbours (Sec. 4.1: 10)")
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--M", type=int, default=32, help="HNSW M (Table 7)")
    ap.add_argument("--efc", type=int, default=40, help="HNSW efConstruction (Table 7, SIFT)")
    ap.add_argument("--efs", type=int, default=100, help="HNSW efSearch (Table 7, SIFT)")
    ap.add_argument("--nprobe", type=int, nargs="*", default=None, help="posting lists probed")
    ap.add_argument("--repeats", type=int, default=3, help="search timings: best of")
    ap.add_argument("--min-top1-agree", type=float, default=0.95)
    ap.add_argument(
        "--search-threads", type=int, nargs="+", default=[1, 2], help="faiss threads (search)"
    )
    ap.add_argument("--numpy-queries", type=int, default=200, help="queries for the numpy path")
    ap.add_argument(
        "--search-only",
        action="store_true",
        help="skip teacher and training: a faiss PQ's codebooks and codes in a KDIndex",
    )
    a = ap.parse_args(argv)

    import faiss
    import torch

    faiss.omp_set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    if a.quick:
        nb, nt, nq, epochs, rounds, nprobes = 20_000, 1500, 500, 2, 2, [1, 8, 256]
    else:
        nb, nt, nq, epochs, rounds, nprobes = 100_000, 10_000, 2000, 3, 10, [4, 16, 64, 256]
    nb, nt, nq = a.nb or nb, a.nt or nt, a.nq or nq
    epochs = a.epochs if a.epochs is not None else epochs
    rounds = a.init_rounds if a.init_rounds is not None else rounds
    nprobes = a.nprobe if a.nprobe is not None else nprobes
    W = 256  # Sec. 4.1; faiss.IndexPQ's 8-bit codes
    xb, xt, xq, metric, name = _data(a.dataset, nb, nt, nq, a.d)
    print(f"data: {name}, metric {metric}, nb={len(xb)} nt={len(xt)} nq={len(xq)} d={xb.shape[1]}")
    if epochs < 1:
        raise SystemExit("--epochs must be >= 1: the per-epoch throughput is what is measured")
    if a.search_only:
        index = _search_only_index(xb, metric, a.B, W, a.K)
    else:
        labels = bench_teacher(xb, xt, metric, a.K, a.M, a.efc, a.efs, a.threads)
        index = bench_train(xb, xt, labels, metric, a.B, W, a.K, epochs, rounds, a.threads)
    bench_search(
        index, xb, xq, a.k, nprobes, a.search_threads, a.repeats, a.min_top1_agree, a.numpy_queries
    )


if __name__ == "__main__":
    main()
