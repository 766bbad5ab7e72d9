"""The experiments behind the catalyzer tables (Sablayrolles et al., ICLR 2019): train, encode,
search and score each method the way the paper's Sec. 5 does, and turn the runs into rows.

- the catalyzers (`catalyzer_for`): the learn set split as Sec. 5.1 (`catalyzer_split`), one
  model per (data set, d_out, lambda, seed, validation quantizer, end-to-end radius) with the
  spec's cat_* training params, trained once and reused across tables and runs
  (`cache.fit_cached`: in process and under annrepro's cache_dir()/models); `note_catalyzers`
  sums up what a table trained and reused;
- Figure 5's curves (`lattice_points`, `opq_points`);
- Table 1's methods at 64 bits (`table1_method`, `table1_rows`): OPQ, LSQ, PCA + Lattice and the
  catalyst rows (Sec. 5.3, 5.4);
- Table 2's binary codes (`binary_rows`): LSH, ITQ and Catalyzer+sign, over seeds;
- Table 3's cross-validation of lambda (`cross_validate_lambda`, Appendix A);
- the text's timings: lattice vs PQ (`timing_rows`, Appendix B / Sec. 5.3) and the encoding
  speed-up of Catalyst+Lattice over LSQ (`encode_speedup_row`, Sec. 5.3).
"""

from __future__ import annotations

import time

import numpy as np
from annrepro.metrics import one_recall_at
from annrepro.stats import mean_std_row
from annrepro.threads import threads
from annrepro.validate import as_f32

from .api import Catalyzer
from .baselines import (
    EncodedSearch,
    encode_search,
    l2_normalize,
    lsq_index,
    opq_factory,
    opq_index,
    pca_lattice_search,
)
from .binary import hamming_knn, itq_index, lsh_index
from .cache import fit_cached
from .figures import Figure5Point
from .lattice import ZnSphereLattice
from .search import quantized_search
from .train import TrainConfig

RECALL_KS = (1, 10, 100)  # Table 1: 1-recall at 1, 10, 100 (Sec. 5.1)


def recalls(I: np.ndarray, gt: np.ndarray) -> dict:
    """{"1-recall@k": ...} for k in RECALL_KS up to the I's width. I, gt: int (nq, >= k)."""
    return {f"1-recall@{k}": one_recall_at(I, gt, k) for k in RECALL_KS if k <= I.shape[1]}


# ------------------------------------------------------------------------------- catalyzers
def catalyzer_split(nt: int, p: dict, name: str = "the data set") -> tuple[int, int, int]:
    """(training vectors, held-out validation vectors, of which validation queries).

    The learn set's first cat_ntrain rows train the catalyzer, the next cat_n_val are held out,
    the first cat_n_val_queries of them validation queries and the rest the validation base
    (Sec. 5.1: 500k training vectors, a separate 1M validation base; the README: 10k validation
    queries). cat_split = "exact" (full scale): the learn set must hold cat_ntrain + cat_n_val
    rows, or this raises; "clip" (tiny / small stand-ins, our choice): n_val <= nt / 5, queries
    <= n_val / 5 and the training set shrinks to what is left.

    Raises:
        ValueError: "exact" and the learn set is too small (names the data set and the params).
    """
    ntrain, n_val, nq_val = int(p["cat_ntrain"]), int(p["cat_n_val"]), int(p["cat_n_val_queries"])
    mode = p.get("cat_split", "exact")
    if mode == "exact":
        if nt < ntrain + n_val:
            raise ValueError(
                f"{name}: {nt} learn vectors, fewer than cat_ntrain + cat_n_val = {ntrain} + "
                f"{n_val} = {ntrain + n_val} (the catalyzer's training set and validation set, "
                "Sec. 5.1); register more learn rows (datasets.toml learn_rows) or, for a reduced "
                "run, set cat_split = 'clip'"
            )
        return ntrain, n_val, nq_val
    if mode != "clip":
        raise ValueError(f"cat_split must be 'exact' or 'clip', got {mode!r}")
    n_val = min(n_val, nt // 5)
    nq_val = min(nq_val, max(1, n_val // 5))
    return min(ntrain, nt - n_val), n_val, nq_val


def catalyzer_for(
    ctx, ds, d_out: int, lam: float, seed: int, val_quantizer: str, end2end_r2: int | None = None
) -> Catalyzer:
    """The catalyzer of (data set, d_out, lambda, seed, ...) with the spec's training params.

    The learn set is cut into cat_ntrain training vectors followed by cat_n_val held-out vectors
    (the first cat_n_val_queries of which are validation queries), see `catalyzer_split`.
    Trained models are cached (see module docstring); the table's counts go to
    `note_catalyzers`.
    """
    p = ctx.params
    ntrain, n_val, nq_val = catalyzer_split(ds.nt, p, ds.name)
    cfg = TrainConfig.preset(
        p["cat_preset"],
        d_out=int(d_out),
        hidden=int(p["cat_hidden"]),
        lam=float(lam),
        epochs=int(p["cat_epochs"]),
        batch_size=int(p["cat_batch_size"]),
        seed=int(seed),
        n_val=n_val,
        n_val_queries=nq_val,
        val_quantizer=val_quantizer,
        val_every=int(p["cat_val_every"]),
        end2end_r2=None if end2end_r2 is None else int(end2end_r2),
    )
    res, hit = fit_cached(
        as_f32(ds.xt[: ntrain + n_val]), cfg, cache=bool(p.get("cat_cache", True)), memo=ctx.memo
    )
    stats = _catalyzer_stats(ctx)
    if hit:
        stats["reused"] += 1
    else:
        stats["trained"] += 1
        stats["train_s"] += res.train_s
    ctx.log.info(
        "%s catalyzer d_out=%d lam=%g seed=%d%s: %s, best epoch %d (val 1-recall@10 %s = %s), "
        "%.0f vectors/s, mining %.0f%%",
        ds.name,
        d_out,
        lam,
        seed,
        "" if end2end_r2 is None else f" end2end r2={end2end_r2}",
        "reused" if hit else f"trained in {res.train_s:.1f} s",
        res.best_epoch + 1,
        val_quantizer,
        res.best_score,
        res.vectors_per_s,
        100 * res.mining_share,
    )
    ctx.note(
        f"{ds.name}: catalyzers trained on {ntrain} learn vectors, {n_val} held out for validation "
        f"({nq_val} queries); hidden {cfg.hidden}, {cfg.epochs} epochs ({p['cat_preset']} "
        f"schedule), batch {cfg.batch_size}, k_pos {cfg.k_pos}, k_neg {cfg.k_neg}"
    )
    return Catalyzer.from_result(res)


def lattice_catalyzer(ctx, ds) -> Catalyzer:
    """The catalyzer of Table 1's Catalyst+Lattice row (d_out, cat_lam, checkpoint chosen with
    the S_{d_out} r2 lattice), which the text's statistics and timings reuse."""
    p = ctx.params
    return catalyzer_for(ctx, ds, int(p["d_out"]), float(p["cat_lam"]), ctx.seed, lattice_name(p))


def lattice_name(p: dict) -> str:
    """The "zn_<r2>" quantizer of the r2 param (Table 1 / Appendix B: S_24 with r^2 = 79)."""
    return f"zn_{int(p['r2'])}"


def _catalyzer_stats(ctx) -> dict:
    # one Context per table run: the counts are the table's (not the run's, as ctx.memo would be)
    return vars(ctx).setdefault("_catalyzer_stats", {"trained": 0, "reused": 0, "train_s": 0.0})


def note_catalyzers(ctx) -> None:
    """Notes how many catalyzers the table trained (and in how long) and how many it reused."""
    st = vars(ctx).get("_catalyzer_stats")
    if st:
        ctx.note(
            f"catalyzers: {st['trained']} trained in {st['train_s']:.1f} s, {st['reused']} reused "
            f"from the model cache ({ctx.threads} thread(s))"
        )


# --------------------------------------------------------------------------------- Figure 5
def lattice_points(ctx, name: str, ds, gt: np.ndarray, k: int = 10) -> list[Figure5Point]:
    """Figure 5's lattice curves: for each of the `d_outs`, one catalyzer (lambda =
    lambda_per_d_out, checkpoint chosen with r^2 = val_r2), the base quantized to S_{d_out}^r for
    each r^2 of r2[d_out] and searched asymmetrically (Sec. 4.2); gt: int (nq, >= k)."""
    p = ctx.params
    xb, xq = as_f32(ds.xb), as_f32(ds.xq)
    points = []
    for d_out in ctx.progress(p["d_outs"], desc=name):
        d_out = int(d_out)
        lam = float(p["lambda_per_d_out"][str(d_out)])
        cat = catalyzer_for(ctx, ds, d_out, lam, ctx.seed, f"zn_{int(p['val_r2'])}")
        yb, yq = cat.transform(xb), cat.transform(xq)
        for r2 in p["r2"][str(d_out)]:
            r2 = int(r2)
            bits = ZnSphereLattice(d_out, r2).code_size_bits
            rec = one_recall_at(quantized_search(yq, yb, k, f"zn_{r2}"), gt, k)
            row = f"Catalyst+Lattice d_out={d_out} r2={r2}"
            points.append(
                Figure5Point(name, ds.name, row, "Catalyst+Lattice", d_out, r2, bits, rec)
            )
    return points


def opq_curve(ds, p: dict, k: int) -> list[tuple[int, np.ndarray]]:
    """OPQ at pq_bytes bytes on the raw vectors: one byte per sub-vector (Sec. 5.3), rotation to
    8 x bytes dimensions (`baselines.opq_factory`, the authors' opq_<bits>; 8 bytes = Table 1's
    OPQ8_64). Returns (code bits, I int64 (nq, k)) per size."""
    out = []
    for nbytes in p["pq_bytes"]:
        index = opq_index(ds.d, opq_factory(int(nbytes)), niter=p.get("opq_niter"))
        res = encode_search(
            index, as_f32(ds.xt[: int(p["ntrain_opq"])]), as_f32(ds.xb), as_f32(ds.xq), k
        )
        out.append((res.code_bits, res.I))
    return out


def opq_points(ctx, name: str, ds, gt: np.ndarray, k: int = 10) -> list[Figure5Point]:
    """Figure 5's OPQ curve (`opq_curve`); gt: int (nq, >= k)."""
    return [
        Figure5Point(
            name, ds.name, f"OPQ {bits}b", "OPQ", None, None, bits, one_recall_at(I, gt, k)
        )
        for bits, I in opq_curve(ds, ctx.params, k)
    ]


# ---------------------------------------------------------------------------------- Table 1
def _catalyst_method(ctx, ds, method: str) -> EncodedSearch:
    """Catalyst rows of Table 1 (Sec. 5.3, 5.4); encode_s includes the forward pass f."""
    import faiss

    p = ctx.params
    k, d_out, r2 = int(p["k"]), int(p["d_out"]), int(p["r2"])
    quantizer = lattice_name(p)
    e2e = r2 if method == "Catalyst+Lattice+end2end" else None
    cat = catalyzer_for(ctx, ds, d_out, float(p["cat_lam"]), ctx.seed, quantizer, end2end_r2=e2e)
    xb, xq = as_f32(ds.xb), as_f32(ds.xq)
    if method in ("Catalyst+Lattice", "Catalyst+Lattice+end2end"):
        t0 = time.perf_counter()
        codes = cat.encode(xb, quantizer)
        encode_s = time.perf_counter() - t0
        _, I = cat.search(xq, codes, k, quantizer)
        bits = ZnSphereLattice(d_out, r2).code_size_bits
        return EncodedSearch(I=I, encode_s=encode_s, code_bits=bits)
    if method == "Catalyst+OPQ":
        index = opq_index(d_out, p["opq_factory"], niter=p.get("opq_niter"))
        index.train(cat.transform(as_f32(ds.xt[: int(p["ntrain_opq"])])))
        t0 = time.perf_counter()
        yb = cat.transform(xb)
        codes = index.sa_encode(yb)
        encode_s = time.perf_counter() - t0
        inner = faiss.downcast_index(index.index)
        inner.add_sa_codes(codes)
        index.ntotal = inner.ntotal
        _, I = index.search(cat.transform(xq), k)
        return EncodedSearch(I=I, encode_s=encode_s, code_bits=8 * index.sa_code_size())
    raise ValueError(f"unknown catalyst method {method!r}")


def table1_method(ctx, ds, method: str) -> EncodedSearch:
    """One Table 1 method on a data set (the table's params, seed ctx.seed): trained, the base
    encoded (timed), the queries searched for the top k."""
    if method.startswith("Catalyst"):
        return _catalyst_method(ctx, ds, method)
    p = ctx.params
    k = int(p["k"])
    xq = as_f32(ds.xq)
    if method == "OPQ":
        index = opq_index(ds.d, p["opq_factory"], niter=p.get("opq_niter"))
        xt = as_f32(ds.xt[: int(p["ntrain_opq"])])
        return encode_search(index, xt, as_f32(ds.xb), xq, k)
    if method == "LSQ":
        index = lsq_index(
            ds.d,
            int(p["lsq_M"]),
            int(p["lsq_nbits"]),
            seed=ctx.seed,
            train_iters=p.get("lsq_train_iters"),
            encode_ils_iters=p.get("lsq_encode_ils_iters"),
        )
        xt = as_f32(ds.xt[: int(p["ntrain_lsq"])])
        return encode_search(index, xt, as_f32(ds.xb), xq, k)
    if method == "PCA+Lattice":
        xt = as_f32(ds.xt[: int(p["ntrain_pca"])])
        return pca_lattice_search(xt, as_f32(ds.xb), xq, k, int(p["d_out"]), int(p["r2"]))
    raise ValueError(f"unknown Table 1 method {method!r}")


def table1_rows(ctx, name: str, ds) -> list[dict]:
    """Table 1's rows on one data set: each of the `methods` param, 1-recall@1/10/100 and
    encode_s. LSQ is skipped (with a note) below lsq_min_train learn vectors."""
    p = ctx.params
    ctx.log.info("%s: %s", name, ds.describe())
    gt = ds.gt(int(p["k"]))
    rows = []
    for method in ctx.progress(p["methods"], desc=name):
        if method == "LSQ" and ds.nt < int(p["lsq_min_train"]):
            ctx.note(
                f"{name}: LSQ skipped: the learn set of {ds.name} has {ds.nt} vectors, fewer "
                f"than lsq_min_train = {p['lsq_min_train']} (LSQ's 2048 codewords overfit)"
            )
            continue
        res = table1_method(ctx, ds, method)
        ctx.log.info(
            "%s %s: encode %.3f s, %d-bit codes", name, method, res.encode_s, res.code_bits
        )
        if res.code_bits != 64:
            ctx.note(f"{name} {method}: {res.code_bits}-bit codes, not 64")
        rows.append(
            {"dataset": name, "row": method, **recalls(res.I, gt), "encode_s": res.encode_s}
        )
    ctx.note(f"{name}: encode_s measured with {ctx.threads} thread(s) on {ds.nb} base vectors")
    return rows


# ---------------------------------------------------------------------------------- Table 2
def binary_seed_counts(ctx) -> tuple[int, int]:
    """(n_seeds, cat_n_seeds) of Table 2: the caption's 5 seeds for the baselines; the
    Catalyzer+sign rows over cat_n_seeds <= n_seeds (each seed a trained network; fewer at small,
    our choice to fit the time budget). Raises ValueError on a count out of range."""
    n_seeds = int(ctx.params["n_seeds"])
    cat_n_seeds = int(ctx.params.get("cat_n_seeds", n_seeds))
    if not 1 <= cat_n_seeds <= n_seeds:
        raise ValueError(f"need 1 <= cat_n_seeds <= n_seeds, got {cat_n_seeds}, {n_seeds}")
    return n_seeds, cat_n_seeds


def _binary_index(method: str, d: int, nbits: int, seed: int, p: dict):
    if method == "LSH":
        return lsh_index(d, nbits, seed, train_thresholds=bool(p["lsh_train_thresholds"]))
    if method == "ITQ":
        return itq_index(d, nbits, seed)
    raise ValueError(f"unknown Table 2 method {method!r}")


def binary_rows(ctx, name: str, ds, n_seeds: int, cat_n_seeds: int) -> list[dict]:
    """Table 2's rows on one data set: each of the `methods` param at each of the `bits`,
    1-recall@k of Hamming search, mean and sample std (ddof 1, annrepro.stats) over the seeds
    ctx.seed + i. ITQ is not run where nbits > d (a note says so)."""
    p = ctx.params
    k = int(p["k"])
    ctx.log.info("%s: %s", name, ds.describe())
    gt = ds.gt(k)
    # LSH / ITQ train on the training set (Sec. 5.1); at full scale the learn rows after it
    # are the catalyzer's validation set (ntrain_binary)
    xt = as_f32(ds.xt[: int(p.get("ntrain_binary", ds.nt))])
    xb, xq = as_f32(ds.xb), as_f32(ds.xq)
    rows = []
    for method in p["methods"]:
        for nbits in ctx.progress(p["bits"], desc=f"{name} {method}"):
            nbits = int(nbits)
            if method == "ITQ" and nbits > ds.d:
                ctx.note(
                    f"{name}: ITQ {nbits}b not run: {nbits} bits exceed the {ds.d} dimensions "
                    f"of {ds.name} (ITQ's PCA has rank <= d; the paper prints n/a for 128 "
                    "bits on the 96-d Deep1M)"
                )
                continue
            vals = []
            for seed in ctx.seeds(cat_n_seeds if method == "Catalyzer+sign" else n_seeds):
                if method == "Catalyzer+sign":  # d_out = nbits, sign of f(x) (Sec. 4.1)
                    lam = float(p["cat_sign_lam"][str(nbits)])
                    cat = catalyzer_for(ctx, ds, nbits, lam, seed, "sign")
                    I = quantized_search(cat.transform(xq), cat.transform(xb), k, "sign")
                else:
                    index = _binary_index(method, ds.d, nbits, seed, p)
                    I = hamming_knn(index, xt, xb, xq, k)
                vals.append(one_recall_at(I, gt, k))
            # a single seed has no std
            row = mean_std_row(name, f"{method} {nbits}b", [{"r": v} for v in vals], ["r"])
            rows.append({"dataset": name, "row": row["row"], f"1-recall@{k}": row["r"]})
            if "r:std" in row:
                rows[-1][f"1-recall@{k}:std"] = row["r:std"]
            ctx.log.info("%s %s %db: %s", name, method, nbits, vals)
    return rows


# ---------------------------------------------------------------------------------- Table 3
def cross_validate_lambda(ctx, name: str, ds, d_out: int, r2: int) -> float:
    """Table 3 (Appendix A): the lambda of the `lambda_grid` param whose catalyzer has the best
    validation 1-recall@10 with the S_{d_out} r2 lattice (ties: the smallest lambda), as the
    authors' crossvalidate.sh grid search. Notes every lambda's score."""
    scores = {}
    for lam in ctx.params["lambda_grid"]:
        cat = catalyzer_for(ctx, ds, d_out, float(lam), ctx.seed, f"zn_{r2}")
        scores[float(lam)] = cat.result.best_score
    lat = ZnSphereLattice(d_out, r2)
    ctx.note(
        f"{name} d_out={d_out} (S_{d_out} r2={r2}: {lat.code_size_bits} bits): validation "
        "1-recall@10 per lambda: "
        + ", ".join(f"{lam:g}: {100 * v:.1f}%" for lam, v in scores.items())
    )
    return max(scores, key=lambda lam: (scores[lam], -lam))


# ------------------------------------------------------------------------- the text's timings
def lattice_vs_pq_timings(p: dict, seed: int, n_threads: int) -> dict:
    """Appendix B / Sec. 5.3 timings on random unit vectors (as bench_Zn_decoder.py).

    Returns seconds scaled to 1M: {"lattice_encode_s", "pq_encode_s"} (per 1M vectors, with
    n_threads) and {"lattice_dist_s", "pq_dist_s"} (one query against 1M codes, 1 thread).
    """
    import faiss

    d, n, nq = int(p["d_out"]), int(p["n_timing"]), int(p["nq_timing"])
    rng = np.random.default_rng(seed)
    xb = l2_normalize(rng.standard_normal((n, d), dtype=np.float32))
    xq = l2_normalize(rng.standard_normal((nq, d), dtype=np.float32))
    xt = l2_normalize(rng.standard_normal((int(p["n_train_pq"]), d), dtype=np.float32))
    lattice = ZnSphereLattice(d, int(p["r2"]))
    pq = faiss.IndexPQ(d, int(p["pq_M"]), int(p["pq_nbits"]))
    pq.train(xt)
    scale = 1e6 / n
    out = {}
    with threads(n_threads):
        t0 = time.perf_counter()
        codes = lattice.encode(xb)
        out["lattice_encode_s"] = (time.perf_counter() - t0) * scale
        t0 = time.perf_counter()
        pq_codes = pq.sa_encode(xb)
        out["pq_encode_s"] = (time.perf_counter() - t0) * scale
    pq.add_sa_codes(pq_codes)
    with threads(1):  # bench_Zn_decoder.py: single-thread benchmark
        t0 = time.perf_counter()
        faiss.knn(xq, lattice.decode(codes), 1)
        out["lattice_dist_s"] = (time.perf_counter() - t0) / nq * scale
        t0 = time.perf_counter()
        pq.search(xq, 1)
        out["pq_dist_s"] = (time.perf_counter() - t0) / nq * scale
    return out


def timing_rows(ctx) -> list[dict]:
    """The text's quantizer timings (`lattice_vs_pq_timings`): Appendix B's encoding of 1M
    vectors, lattice vs PQ, and Sec. 5.3's 1M asymmetric distances, Catalyzer+Lattice vs PQ."""
    p = ctx.params
    t = lattice_vs_pq_timings(p, ctx.seed, ctx.threads)
    ctx.note(
        f"timings on {p['n_timing']} random unit {p['d_out']}-d vectors scaled to 1M; encoding "
        f"with {ctx.threads} thread(s), distances with 1 thread over {p['nq_timing']} queries; "
        f"PQ = IndexPQ({p['d_out']}, {p['pq_M']}, {p['pq_nbits']})"
    )
    return [
        {"dataset": "n/a", "row": "Lattice", "encode_s": t["lattice_encode_s"]},
        {
            "dataset": "n/a",
            "row": "PQ",
            "encode_s": t["pq_encode_s"],
            "dist_1M_time": t["pq_dist_s"],
        },
        {"dataset": "n/a", "row": "Catalyzer+Lattice", "dist_1M_time": t["lattice_dist_s"]},
    ]


def encode_speedup_row(ctx, name: str, ds) -> dict:
    """Sec. 5.3: LSQ's encoding time over Catalyst+Lattice's (network + lattice, Table 1's
    catalyzer) on the base, ctx.threads threads. LSQ is trained with lsq_train_iters iterations
    only: its ILS encoding cost does not depend on its codebooks."""
    p = ctx.params
    xb = as_f32(ds.xb)
    lsq = lsq_index(
        ds.d,
        int(p["lsq_M"]),
        int(p["lsq_nbits"]),
        seed=ctx.seed,
        train_iters=int(p["lsq_train_iters"]),
    )
    lsq.train(as_f32(ds.xt[: int(p["ntrain_lsq"])]))
    t0 = time.perf_counter()
    lsq.sa_encode(xb)
    lsq_s = time.perf_counter() - t0
    cat = lattice_catalyzer(ctx, ds)
    t0 = time.perf_counter()
    cat.encode(xb, lattice_name(p))
    cat_s = time.perf_counter() - t0
    ctx.note(
        f"{name}: encode_speedup = LSQ {lsq_s:.3f} s / Catalyst+Lattice {cat_s:.3f} s on "
        f"{ds.nb} base vectors, {ctx.threads} thread(s); LSQ trained with "
        f"{p['lsq_train_iters']} iteration(s) on {p['ntrain_lsq']} vectors (its encoding cost "
        "does not depend on the codebooks' quality: 16 ILS iterations, faiss default); the "
        "catalyzer time includes the forward pass (Table 1 caption)"
    )
    return {"dataset": name, "row": "Catalyst+Lattice vs LSQ", "encode_speedup": lsq_s / cat_s}
