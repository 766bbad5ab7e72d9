"""Producers of the KDindex tables (Lu et al., NeurIPS 2023), registered with annrepro.

Specs and published numbers: `paper_tables/kdindex/{table2..8,figure4}.{toml,csv}`. This module
produces the rows of the faiss baselines and the teacher:

- Table 2: the PQ, OPQ and AQ baselines (faiss, B = 8 codebooks of W = 256 codewords, Sec. 4.1),
  searched through their posting lists (`posting.PostingListIndex`), mean and std over 5 seeds
  (Sec. 4.2: "Experiments are run 5 times");
- Table 3: memory of the teacher HNSW and of the PQ / OPQ / AQ indexes, and the ratio;
- Table 5: the "Quantization" column (the same PQ / OPQ / AQ runs on MS MARCO Doc);
- Table 6: statistics of the data sets actually used;
- Table 7: the teacher HNSW (hnswlib) with the paper's M / efConstruction / efSearch.

and the KDindex rows (the learned student, `kdindex.api.KDIndex`, Algorithm 2), trained on the
training queries labelled by the teacher (`teacher_labels`) and searched through the same posting
lists with the same nprobe as the baselines:

- Table 2: KDindex (PQ / OPQ / AQ), mean and std over `kd_n_seeds` seeds;
- Table 3: the memory of a trained KDindex (AQ) index and its ratio to the HNSW;
- Table 4: KDindex (AQ) with the teacher's top-K, K in {5, 10, 20, 50, 100};
- Table 5: the ablation variants (Initialization, w/o Distillation loss, w/o Balance, KDindex);
- Table 8: KDindex (AQ) under the three distillation losses (Eq. 4, 5, 6);
- Figure 4: recall@10 against search latency over nprobe (KDindex, its student) and efSearch
  (the teacher HNSW), with figure4.csv / figure4.png artifacts.

The re-implemented learned baselines of Table 2 (DiffPQ, DeepPQ, GCD, RepCONC, PQVAE) come from
`kdindex.baselines`, trained on the labels of `teacher_labels` (`learned_baseline_rows`).
"""

from __future__ import annotations

import logging

import numpy as np
from annrepro.metrics import recall_at
from annrepro.plotting import pyplot_or_note, save_figure, write_points
from annrepro.stats import mean_std_row, paired_ttest
from annrepro.tables import register
from annrepro.timing import Timer

from .posting import PER_QUERY, PostingListIndex, per_query_scores, search_scores
from .quantizers import KINDS, quantizer_memory_bytes, train_quantizer
from .teacher import HNSWTeacher

log = logging.getLogger(__name__)

# the paper's second metric per data set (Table 2 header): NDCG@10 on L2 sets, MRR@10 on MS MARCO
SECOND_METRIC = {
    "SIFT1M": "ndcg@10",
    "GIST1M": "ndcg@10",
    "MSMARCO-Doc": "mrr@10",
    "MSMARCO-Passage": "mrr@10",
}

# results of baseline runs and the last teacher built, shared by the tables of one process:
# MS MARCO Doc and Passage have the same stand-in below the full scale, and Table 5 repeats
# Table 2's MS MARCO Doc baselines.
_BASELINE_CACHE: dict = {}
_TEACHER_CACHE: dict = {}


def _second_metric(paper_name: str) -> str:
    return SECOND_METRIC.get(paper_name, "ndcg@10")


def _train_sample(ds, n_train: int, seed: int) -> np.ndarray:
    """float32 (min(n_train, nb), d): a seeded random sample of the documents, in random order.

    PQ, OPQ and AQ learn from "document embeddings without the query information" (Sec. 1), so
    they train on the base, not on the training queries.
    """
    rng = np.random.default_rng(seed)
    n = min(int(n_train), ds.nb)
    idx = np.sort(rng.permutation(ds.nb)[:n])  # sorted: cheap reads from a memory map
    return np.ascontiguousarray(ds.xb[idx][rng.permutation(n)], dtype=np.float32)


def evaluate_baseline(kind: str, ds, seed: int, p: dict) -> dict:
    """Train one faiss baseline on a data set, search it through its posting lists, score it.

    kind: "PQ" | "OPQ" | "AQ"; ds: annrepro Dataset; p: table params (B, W, k, nprobe, n_train,
    opq_niter, aq_beam, aq_refine). Returns fractions {"recall@10", "ndcg@10", "mrr@10"} and
    "scanned" (mean fraction of the base scored per query), "train_s".
    """
    k = int(p.get("k", 10))
    xt = _train_sample(ds, p["n_train"], seed)
    with Timer() as t:
        qz = train_quantizer(
            kind,
            xt,
            B=int(p["B"]),
            W=int(p["W"]),
            seed=seed,
            opq_niter=int(p["opq_niter"]),
            aq_beam=int(p["aq_beam"]),
            aq_refine=bool(p["aq_refine"]),
        )
    index = PostingListIndex(qz, ds.metric, xb=ds.xb)
    return {**search_scores(index, ds, k, p["nprobe"]), "train_s": t.s}


def _mean_std_row(
    paper_name: str, row: str, runs: list[dict], cols, seeds=(), per_seed: dict | None = None
) -> dict:
    """One table row from per-seed runs (annrepro.stats.mean_std_row: the mean of each column,
    its sample std under "<column>:std", per-query values averaged over the runs for the
    runner's bootstrap interval). per_seed (optional) receives {row: {seed: run}} for the paired
    t-test of Table 2."""
    if per_seed is not None:
        per_seed[row] = dict(zip(seeds, runs, strict=True))
    return mean_std_row(paper_name, row, runs, cols)


def learned_baseline_rows(ctx, paper_name: str, ds, per_seed: dict | None = None) -> list[dict]:
    """Table 2 rows of the re-implemented learned baselines (kdindex.baselines: DiffPQ,
    DeepPQ, GCD, RepCONC, PQVAE), trained with KDindex's distillation objective on the same
    teacher-labelled training queries as KDindex (Sec. 4.1) and searched through the same
    posting lists; mean and std over `lb_n_seeds` seeds (default `n_seeds`)."""
    from .baselines import LEARNED_BASELINES, evaluate_learned_baseline  # torch

    p = ctx.params
    k = int(p.get("k", 10))
    cols = [f"recall@{k}", _second_metric(paper_name).replace("@10", f"@{k}")]
    seeds = ctx.seeds(int(p.get("lb_n_seeds", p["n_seeds"])))
    xt, labels = teacher_labels(ctx, paper_name, ds)
    lb = {key: v for key, v in p.items() if key.startswith("lb_") and key != "lb_n_seeds"}
    rows, times = [], []
    for name in LEARNED_BASELINES:
        runs = []
        for seed in ctx.progress(seeds, desc=f"{paper_name} {name}", total=len(seeds)):
            key = ("learned", ds.name, name, seed, len(xt), repr(sorted(p.items())))
            if key not in _BASELINE_CACHE:
                _BASELINE_CACHE[key] = evaluate_learned_baseline(
                    name, ds, xt, labels, seed, {**_baseline_params(p), **lb}
                )
            runs.append(_BASELINE_CACHE[key])
        rows.append(_mean_std_row(paper_name, name, runs, cols, seeds, per_seed))
        times.append(
            f"{name} {np.mean([r['train_s'] for r in runs]):.1f} s, "
            f"{100 * np.mean([r['scanned'] for r in runs]):.1f}% of the base scored per query"
        )
    ctx.note(
        f"{paper_name} ({ds.name}): learned baselines (re-implementations) trained on {len(xt)} "
        f"teacher-labelled training queries, {len(seeds)} seed(s); per run: " + "; ".join(times)
    )
    return rows


def _baseline_params(p: dict) -> dict:
    names = ("B", "W", "k", "nprobe", "n_train", "opq_niter", "aq_beam", "aq_refine")
    return {n: p[n] for n in names if n in p}


def _baseline_key(ds, kind: str, seed: int, p: dict) -> tuple:
    names = ("B", "W", "k", "nprobe", "n_train", "opq_niter", "aq_beam", "aq_refine")
    return (ds.name, kind, seed) + tuple(p.get(n) for n in names)


def baseline_rows(
    ctx, paper_name: str, ds, kinds=KINDS, per_seed: dict | None = None
) -> list[dict]:
    """Table 2 / Table 5 rows of the faiss baselines on one data set: mean and sample std
    (ddof = 1) over `n_seeds` seeds ctx.seed, ctx.seed + 1, ...; std under "<column>:std"."""
    p = ctx.params
    k = int(p.get("k", 10))
    cols = [f"recall@{k}", _second_metric(paper_name).replace("@10", f"@{k}")]
    seeds = ctx.seeds(int(p["n_seeds"]))
    rows, scanned = [], []
    for kind in kinds:
        runs = []
        for seed in ctx.progress(seeds, desc=f"{paper_name} {kind}", total=len(seeds)):
            key = _baseline_key(ds, kind, seed, p)
            if key not in _BASELINE_CACHE:
                _BASELINE_CACHE[key] = evaluate_baseline(kind, ds, seed, p)
            runs.append(_BASELINE_CACHE[key])
        rows.append(_mean_std_row(paper_name, kind, runs, cols, seeds, per_seed))
        scanned.append(f"{kind} {100 * np.mean([r['scanned'] for r in runs]):.1f}%")
    ctx.note(
        f"{paper_name} ({ds.name}): {len(seeds)} seeds; nprobe={p['nprobe']} of W={p['W']} "
        f"codewords per codebook; share of the base scored per query: {', '.join(scanned)}"
    )
    return rows


def _check_shared_standins(ctx, names) -> None:
    mapping = ctx.spec.datasets(ctx.scale)
    by_ds: dict = {}
    for n in names:
        by_ds.setdefault(mapping.get(n), []).append(n)
    for reg, papers in by_ds.items():
        if reg is not None and len(papers) > 1:
            ctx.note(
                f"{' and '.join(papers)} share the stand-in {reg} at the {ctx.scale} scale: "
                "their measured rows are the same runs"
            )


@register("kdindex.table2")
def table2(spec, ctx):
    """Table 2: PQ, OPQ and AQ baselines, the re-implemented learned baselines (DiffPQ, DeepPQ,
    GCD, RepCONC, PQVAE) and KDindex (PQ / OPQ / AQ); recall@10 and ndcg@10 (L2) / mrr@10
    (MS MARCO)."""
    _check_shared_standins(ctx, spec.datasets(ctx.scale))
    rows = []
    for name, ds in ctx.each_dataset():
        per_seed: dict = {}
        rows += baseline_rows(ctx, name, ds, per_seed=per_seed)
        rows += learned_baseline_rows(ctx, name, ds, per_seed=per_seed)
        rows += kdindex_rows(ctx, name, ds, per_seed=per_seed)
        ctx.note(paired_t_test_note(name, ds, per_seed, f"recall@{int(ctx.params.get('k', 10))}"))
    return rows


paired_t_test = paired_ttest  # annrepro.stats: two-sided, over the seeds both rows ran


def paired_t_test_note(paper_name: str, ds, per_seed: dict, column: str) -> str:
    """Table 2 caption: 'The improvement over the strongest baseline is statistically significant
    on a paired t-test (p < 0.05)': the best KDindex row against the best other row by mean
    `column`, paired over the seeds both ran."""

    def mean(row):
        return np.mean([r[column] for r in per_seed[row].values()])

    kd = [r for r in per_seed if r.startswith("KDindex")]
    other = [r for r in per_seed if not r.startswith("KDindex")]
    if not kd or not other:
        return f"{paper_name}: no paired t-test (KDindex or baseline rows missing)"
    best_kd, best_base = max(kd, key=mean), max(other, key=mean)
    seeds = sorted(set(per_seed[best_kd]) & set(per_seed[best_base]))
    head = (
        f"{paper_name} ({ds.name}): paired t-test on {column}, best KDindex {best_kd} "
        f"({100 * mean(best_kd):.2f}) vs strongest baseline {best_base} "
        f"({100 * mean(best_base):.2f}) over seeds {seeds}: "
    )
    if len(seeds) < 2:
        return head + "not computed (fewer than two common seeds)"
    a = [per_seed[best_kd][s][column] for s in seeds]
    b = [per_seed[best_base][s][column] for s in seeds]
    t, p = paired_t_test(a, b)
    verdict = "significant" if p < 0.05 and t > 0 else "not significant"
    return head + f"t = {t:.3g}, two-sided p = {p:.3g} ({verdict} at 0.05)"


# Table 5 columns (Sec. 4.6) -> `evaluate_kdindex` variant
ABLATIONS = {
    "initialization": "initialization",
    "w/o distillation": "no_distillation",
    "w/o balance": "no_balance",
}


@register("kdindex.table5")
def table5(spec, ctx):
    """Table 5 (ablation on MS MARCO Doc, Sec. 4.6): per student X in PQ, OPQ, AQ: X
    ("Quantization"), KDindex (X) initialization (warm start + iterative initialisation, no
    differentiable epoch), w/o distillation (reconstruction loss only), w/o balance (nearest
    codes in the initialisation, the mini-batches and the posting lists), KDindex (X)."""
    name = "MSMARCO-Doc"
    ds = ctx.dataset(name)
    rows = baseline_rows(ctx, name, ds)
    for kind in KINDS:
        for label, variant in ABLATIONS.items():
            rows += kdindex_rows(
                ctx, name, ds, kinds=(kind,), variant=variant, row=f"KDindex ({kind}) {label}"
            )
        rows += kdindex_rows(ctx, name, ds, kinds=(kind,))
    return rows


def _teacher_params(p: dict, paper_name: str) -> tuple[int, int, int]:
    """(M, efConstruction, efSearch) of Table 7 for a paper data set (params may be per data set
    tables or single numbers)."""

    def get(key):
        v = p[key]
        return int(v[paper_name] if isinstance(v, dict) else v)

    return get("M"), get("efConstruction"), get("efSearch")


def get_teacher(ctx, paper_name: str, ds) -> HNSWTeacher:
    """The teacher HNSW of Table 7 built over ds.xb, built once per data set and parameters.

    Built indexes stay cached while their total expected size is within the `teacher_cache_gb`
    param (default 2 GB; the latest is always kept), so Tables 3 and 7 share the builds.
    """
    from .teacher import hnsw_memory_bytes_estimate

    M, efc, efs = _teacher_params(ctx.params, paper_name)
    seed = int(ctx.params.get("hnsw_seed", 100))
    key = (ds.name, M, efc, seed, ctx.threads)
    t = _TEACHER_CACHE.pop(key, None)
    if t is None:
        t = HNSWTeacher(
            ds.d, ds.metric, M=M, ef_construction=efc, ef_search=efs, seed=seed, threads=ctx.threads
        )
        t.build(ds.xb)
    budget = float(ctx.params.get("teacher_cache_gb", 2.0)) * 1e9
    used = hnsw_memory_bytes_estimate(t.nb, t.d, t.M)
    for old_key in list(_TEACHER_CACHE):  # oldest first
        old = _TEACHER_CACHE[old_key]
        size = hnsw_memory_bytes_estimate(old.nb, old.d, old.M)
        if used + size > budget:
            del _TEACHER_CACHE[old_key]
        else:
            used += size
    _TEACHER_CACHE[key] = t  # most recent last
    t.ef_search = efs
    return t


def label_seconds(t: HNSWTeacher, xt: np.ndarray, K: int) -> float:
    """Seconds for the teacher to label xt with its top-K (memoised per teacher, query count, K and
    efSearch: MS MARCO Doc and Passage share a stand-in below the full scale)."""
    memo = t.__dict__.setdefault("_label_seconds", {})
    key = (len(xt), K, t.ef_search)
    if key not in memo:
        with Timer() as ts:
            t.label(xt, K)
        memo[key] = ts.s
    return memo[key]


# ----------------------------------------------------------------------------- KDindex rows
_LABEL_CACHE: dict = {}
_KD_CACHE: dict = {}


def _as_list(v) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _label_K(p: dict) -> int:
    """Neighbours to ask the teacher for: the `K` param, or its largest value when it is a list
    (Table 4); the smaller K's labels are its prefixes."""
    return max(int(k) for k in _as_list(p.get("K", 10)))


def teacher_labels(ctx, paper_name: str, ds) -> tuple[np.ndarray, np.ndarray]:
    """Training queries and their teacher labels `D_K^T` (Sec. 3.1).

    xt: float32 (nt, d), the first `n_train_queries` training queries of ds (all when the param
    is absent or None; the base stands in where ds has no learn set, Table 6);
    labels: int64 (nt, K), the top-K ids of the teacher HNSW of Table 7 (`get_teacher`, params
    M / efConstruction / efSearch), nearest first, K = the `K` param (10 by default, Sec. 4.1;
    its largest value when `K` is a list). Cached per data set, teacher and query count.
    """
    p = ctx.params
    K = _label_K(p)
    cap = p.get("n_train_queries")
    nt = ds.nt if cap is None else min(ds.nt, int(cap))
    if nt < 1:
        raise ValueError(f"{paper_name}: n_train_queries={cap} leaves no training query")
    M, efc, efs = _teacher_params(p, paper_name)
    if K > efs:
        raise ValueError(
            f"{paper_name}: K={K} exceeds the teacher's efSearch={efs} (Table 7): HNSW cannot "
            "return more neighbours than its search beam"
        )
    key = (ds.name, M, efc, efs, int(p.get("hnsw_seed", 100)), nt, K)
    if key not in _LABEL_CACHE:
        t = get_teacher(ctx, paper_name, ds)
        xt = np.ascontiguousarray(ds.xt[:nt], dtype=np.float32)
        _LABEL_CACHE[key] = (xt, t.label(xt, K))
    return _LABEL_CACHE[key]


# Training params of `TrainConfig` that the table specs may set (the rest keep their defaults)
TRAIN_PARAMS = (
    "lr",
    "batch_size",
    "epochs",
    "patience",
    "val_frac",
    "init_max_rounds",
    "rec_weight",
    "temperature",
    "sinkhorn_reg",
    "sinkhorn_iter",
    "balance_chunk",
    "kl_weighting",
    "balance_rounding",
    "val_codes",
)


def train_config(p: dict, seed: int, variant: str = "full", loss: str | None = None):
    """`TrainConfig` from table params (TRAIN_PARAMS) for one seed and Table 5 variant:
    "full" | "initialization" (no differentiable epoch) | "no_distillation" (distill_weight 0)
    | "no_balance" (`TrainConfig.without_balance`)."""
    from .train import TrainConfig

    kw = {n: type(getattr(TrainConfig, n))(p[n]) for n in TRAIN_PARAMS if n in p}
    cfg = TrainConfig(seed=seed, progress=False, loss=loss or p.get("loss", "distribution"), **kw)
    if variant == "full":
        return cfg
    if variant == "initialization":
        cfg.epochs = 0
        return cfg
    if variant == "no_distillation":
        cfg.distill_weight = 0.0
        return cfg
    if variant == "no_balance":
        return cfg.without_balance()
    raise ValueError(f"unknown KDindex variant {variant!r}")


def evaluate_kdindex(
    kind: str,
    ds,
    xt: np.ndarray,
    labels: np.ndarray,
    seed: int,
    p: dict,
    variant: str = "full",
    loss: str | None = None,
    K: int | None = None,
) -> dict:
    """Fit one KDindex (student `kind`, warm-started like the baseline of the same kind: n_train
    documents, opq_niter, aq_beam, aq_refine) on training queries xt float32 (nt, d) labelled by
    labels int64 (nt, >= K), search ds.xq through its posting lists with the table's nprobe
    (the baselines' protocol), score it. Returns the fractions of `evaluate_baseline` plus
    "memory_bytes" (codes + codebooks + rotation of the trained index) and "train_s"."""
    k = int(p.get("k", 10))
    with Timer() as t:
        index = fit_kdindex(kind, ds, xt, labels, seed, p, variant, loss, K)
    return {
        **search_scores(index, ds, k, p["nprobe"]),
        "memory_bytes": index.memory_bytes()["total"],
        "train_s": t.s,
        "best_epoch": index.result.best_epoch,
    }


def fit_kdindex(
    kind: str,
    ds,
    xt: np.ndarray,
    labels: np.ndarray,
    seed: int,
    p: dict,
    variant: str = "full",
    loss: str | None = None,
    K: int | None = None,
):
    """The trained `KDIndex` of `evaluate_kdindex` (same arguments)."""
    from .api import KDIndex

    K = int(K if K is not None else _label_K(p))
    index = KDIndex(
        kind,
        ds.metric,
        B=int(p["B"]),
        W=int(p["W"]),
        K=K,
        config=train_config(p, seed, variant, loss),
        n_warm=int(p["n_train"]),
        opq_niter=int(p["opq_niter"]),
        aq_beam=int(p["aq_beam"]),
        aq_refine=bool(p["aq_refine"]),
    )
    return index.fit(ds.xb, xt, labels=labels[:, :K])


def _kd_key(ds, kind, seed, variant, loss, K, xt, p) -> tuple:
    names = ("B", "W", "k", "nprobe", "n_train", "opq_niter", "aq_beam", "aq_refine", "loss")
    return (
        (ds.name, kind, seed, variant, loss, K, len(xt))
        + tuple(p.get(n) for n in names)
        + tuple(p.get(n) for n in TRAIN_PARAMS)
    )


def kdindex_rows(
    ctx,
    paper_name: str,
    ds,
    kinds=KINDS,
    variant: str = "full",
    loss: str | None = None,
    K: int | None = None,
    row: str | None = None,
    per_seed: dict | None = None,
) -> list[dict]:
    """KDindex rows on one data set: per student kind, mean and sample std (ddof = 1) over
    `kd_n_seeds` seeds (default `n_seeds`) ctx.seed, ctx.seed + 1, ...; std under
    "<column>:std". Row key "KDindex (<kind>)" unless `row` is given. Runs are cached per data
    set, kind, seed, variant, loss, K and params, so Tables 2, 4, 5 and 8 share them."""
    p = ctx.params
    k = int(p.get("k", 10))
    cols = [f"recall@{k}", _second_metric(paper_name).replace("@10", f"@{k}")]
    n_seeds = int(p.get("kd_n_seeds", p.get("n_seeds", 1)))
    seeds = ctx.seeds(n_seeds)
    xt, labels = teacher_labels(ctx, paper_name, ds)
    K = int(K if K is not None else _label_K(p))
    rows, notes = [], []
    for kind in kinds:
        runs = []
        name = row or f"KDindex ({kind})"
        for seed in ctx.progress(seeds, desc=f"{paper_name} {name}", total=len(seeds)):
            key = _kd_key(ds, kind, seed, variant, loss or p.get("loss", "distribution"), K, xt, p)
            if key not in _KD_CACHE:
                _KD_CACHE[key] = evaluate_kdindex(kind, ds, xt, labels, seed, p, variant, loss, K)
            runs.append(_KD_CACHE[key])
        rows.append(_mean_std_row(paper_name, name, runs, cols, seeds, per_seed))
        notes.append(
            f"{name} {np.mean([r['train_s'] for r in runs]):.1f} s, "
            f"{100 * np.mean([r['scanned'] for r in runs]):.1f}% of the base scored per query"
        )
    ctx.note(
        f"{paper_name} ({ds.name}): KDindex trained on {len(xt)} training queries with the "
        f"teacher's top-{K}, {n_seeds} seed(s), searched with nprobe={p['nprobe']}; per run: "
        f"{'; '.join(notes)}"
    )
    return rows


@register("kdindex.table3")
def table3(spec, ctx):
    """Table 3: index memory. HNSW = hnswlib's saved index (vectors + graph); PQ / OPQ / AQ =
    codes + codebooks (+ rotation), from shapes; compression_ratio = HNSW bytes / index bytes."""
    p = ctx.params
    B, W = int(p["B"]), int(p["W"])
    rows = []
    for name, ds in ctx.each_dataset():
        if p.get("hnsw_memory", "measured") == "measured":
            hnsw = get_teacher(ctx, name, ds).memory_bytes()
        else:
            from .teacher import hnsw_memory_bytes_estimate

            hnsw = hnsw_memory_bytes_estimate(ds.nb, ds.d, _teacher_params(p, name)[0])
        rows.append({"dataset": name, "row": "HNSW", "memory_gb": hnsw})
        vec = ds.nb * ds.d * 4
        ctx.note(
            f"{name} ({ds.name}): HNSW {hnsw / 1e9:.6f} GB of which raw float32 vectors "
            f"{vec / 1e9:.6f} GB (the paper's HNSW sizes equal the raw vectors alone)"
        )
        for kind in KINDS:
            q = quantizer_memory_bytes(kind, ds.nb, ds.d, B, W)["total"]
            rows.append(
                {"dataset": name, "row": kind, "memory_gb": q, "compression_ratio": hnsw / q}
            )
        rows.append(kdindex_memory_row(ctx, name, ds, hnsw))
    return rows


def kdindex_memory_row(ctx, paper_name: str, ds, hnsw_bytes: float) -> dict:
    """Table 3's KDindex row: the bytes held by a trained KDindex index (student `kd_kind`,
    default AQ; packed codes + codebooks + rotation, `KDIndex.memory_bytes`) and HNSW / it."""
    p = ctx.params
    kind = p.get("kd_kind", "AQ")
    xt, labels = teacher_labels(ctx, paper_name, ds)
    K = _label_K(p)
    key = _kd_key(ds, kind, ctx.seed, "full", p.get("loss", "distribution"), K, xt, p)
    if key not in _KD_CACHE:
        _KD_CACHE[key] = evaluate_kdindex(kind, ds, xt, labels, ctx.seed, p)
    mem = _KD_CACHE[key]["memory_bytes"]
    ctx.note(
        f"{paper_name}: KDindex = a trained KDindex ({kind}) index, {mem / ds.nb:.2f} B per "
        f"vector (codes {p['B']} x log2({p['W']}) bits + codebooks, Sec. 3.6)"
    )
    return {
        "dataset": paper_name,
        "row": "KDindex",
        "memory_gb": mem,
        "compression_ratio": hnsw_bytes / mem,
    }


@register("kdindex.table6")
def table6(spec, ctx):
    """Table 6: statistics of the data sets actually used at this scale."""
    rows = []
    for name, ds in ctx.each_dataset():
        rows.append(
            {
                "dataset": name,
                "row": "statistics",
                "nb": ds.nb,
                "n_train_queries": ds.nt,
                "n_test_queries": ds.nq,
                "d": ds.d,
            }
        )
        if not ds.has_learn:
            ctx.note(f"{name} ({ds.name}) has no training queries: the base stands in for them")
    return rows


@register("kdindex.table7")
def table7(spec, ctx):
    """Table 7: the teacher HNSW. build_s over the base, search_s to label the training queries
    with their top-K (App. B.3: "Building and Searching are on multi-threads for train sets"),
    recall@10 of the teacher on the test queries."""
    p = ctx.params
    K = int(p.get("K", 10))
    rows = []
    for name, ds in ctx.each_dataset():
        M, efc, efs = _teacher_params(p, name)
        t = get_teacher(ctx, name, ds)
        nt = ds.nt if p.get("n_train_queries") is None else min(ds.nt, int(p["n_train_queries"]))
        xt = np.ascontiguousarray(ds.xt[:nt], dtype=np.float32)
        search_s = label_seconds(t, xt, K)
        src = p.get("recall_queries", "test")
        if src == "test":
            _, I = t.search(ds.xq, 10)
            gt = ds.gt(10)
        else:  # the teacher's labels on the training queries against their exact top-10
            from annrepro.groundtruth import knn_exact

            _, I = t.search(xt, 10)
            gt = knn_exact(xt, ds.xb, 10, ds.metric)[1]
        rows.append(
            {
                "dataset": name,
                "row": "HNSW",
                "M": M,
                "efConstruction": efc,
                "efSearch": efs,
                "build_s": t.build_s,
                "search_s": search_s,
                "recall@10": recall_at(I, gt, 10),
                "recall@10" + PER_QUERY: per_query_scores(I, gt, 10)["recall@10"].tolist(),
            }
        )
        ctx.note(
            f"{name} ({ds.name}): build over {ds.nb} vectors and search of {nt} training "
            f"queries (top-{K}) with {ctx.threads} threads; recall@10 on the {src} queries"
        )
    return rows


# Table 8 rows -> TrainConfig.loss (Sec. 3.3, App. C.2)
LOSSES = {
    "Lambdarank loss": "lambdarank",
    "Weighted KL loss": "weighted_kl",
    "Distributed-based loss": "distribution",
}


@register("kdindex.table8")
def table8(spec, ctx):
    """Table 8 (App. C.2): KDindex under the Lambdarank (Eq. 4), weighted KL (Eq. 5) and
    distribution-based (Eq. 6) distillation losses. Student: the `kd_kind` param (AQ: the
    distribution-based row equals KDindex (AQ) of Table 2)."""
    kind = ctx.params.get("kd_kind", "AQ")
    rows = []
    for name, ds in ctx.each_dataset():
        for row, loss in LOSSES.items():
            rows += kdindex_rows(ctx, name, ds, kinds=(kind,), loss=loss, row=row)
    ctx.note(f"student {kind} (unnamed in the paper; its default-loss row equals KDindex (AQ))")
    return rows


@register("kdindex.table4")
def table4(spec, ctx):
    """Table 4 (Sec. 4.5): KDindex trained with the teacher's top-K, K in the `K` param list, on
    MS MARCO Doc; student `kd_kind` (AQ: the K = 10 row equals KDindex (AQ) of Table 2)."""
    kind = ctx.params.get("kd_kind", "AQ")
    name = "MSMARCO-Doc"
    ds = ctx.dataset(name)
    rows = []
    for K in _as_list(ctx.params["K"]):
        rows += kdindex_rows(ctx, name, ds, kinds=(kind,), K=int(K), row=f"K={int(K)}")
    ctx.note(
        f"student {kind}; the top-K labels of every K are the first K of one teacher search "
        f"for max(K) neighbours (efSearch >= max(K))"
    )
    return rows


@register("kdindex.figure4")
def figure4(spec, ctx):
    """Figure 4 (App. D): recall@10 against the latency of the top-10 search per query, for
    KDindex (`kd_kind`) and its native student over the `nprobe_sweep` posting lists probed per
    codebook, and the teacher HNSW over `ef_sweep`. Latency: wall time of searching all test
    queries / nq, in ms, through faiss for both quantizers alike (`PostingListIndex.search`,
    method "faiss": one `search_preassigned` inverted file per codebook, cost following the
    probed lists; nprobe = W is faiss's exhaustive flat index), HNSW through hnswlib. Writes
    figure4.csv (every point) and figure4.png (one panel per data set) as artifacts."""
    p = ctx.params
    k = int(p.get("k", 10))
    kind = p.get("kd_kind", "AQ")
    rows, points = [], []

    def point(name, method, setting, I, gt, seconds, nq):
        r = {"recall@10": recall_at(I, gt, k), "latency": seconds / nq}  # s (spec unit: ms)
        pq = {"recall@10" + PER_QUERY: per_query_scores(I, gt, k)[f"recall@{k}"].tolist()}
        rows.append({"dataset": name, "row": f"{method} {setting}", **r, **pq})
        points.append((name, method, setting, r["recall@10"], 1e3 * r["latency"]))

    for name, ds in ctx.each_dataset():
        gt = ds.gt(k)
        xt, labels = teacher_labels(ctx, name, ds)
        kd = fit_kdindex(kind, ds, xt, labels, ctx.seed, p)
        qz = train_quantizer(
            kind,
            _train_sample(ds, p["n_train"], ctx.seed),
            B=int(p["B"]),
            W=int(p["W"]),
            seed=ctx.seed,
            opq_niter=int(p["opq_niter"]),
            aq_beam=int(p["aq_beam"]),
            aq_refine=bool(p["aq_refine"]),
        )
        indexes = {
            f"KDindex ({kind})": PostingListIndex(kd.quantizer, ds.metric, codes=kd.codes),
            kind: PostingListIndex(qz, ds.metric, xb=ds.xb),
        }
        for method, index in indexes.items():
            for nprobe in _as_list(p["nprobe_sweep"]):
                if int(nprobe) > int(p["W"]):
                    continue
                # untimed: builds the faiss indexes (inverted files / flat index)
                index.search(ds.xq[:1], k, int(nprobe), method="faiss")
                with Timer() as t:
                    _, I = index.search(ds.xq, k, int(nprobe), method="faiss")
                point(name, method, f"nprobe={int(nprobe)}", I, gt, t.s, ds.nq)
        teacher = get_teacher(ctx, name, ds)
        for ef in _as_list(p["ef_sweep"]):
            with Timer() as t:
                _, I = teacher.search(ds.xq, k, ef=max(int(ef), k))
            point(name, "HNSW", f"ef={int(ef)}", I, gt, t.s, ds.nq)
    _write_figure4(ctx, points)
    ctx.note(
        f"latency with {ctx.threads} thread(s) on this machine (the paper's points come from "
        "ANN-Benchmarks hardware); KDindex and the student searched alike through faiss "
        "(per-codebook inverted files, search_preassigned on the nprobe best codewords, merged "
        "without duplicates; nprobe = W: faiss's flat index), HNSW by hnswlib (C++). faiss's "
        "AQ list scanner recomputes the query's look-up table for every probed list, so AQ "
        "posting lists pay B x W x d per probed list that PQ's do not"
    )
    return rows


def _write_figure4(ctx, points) -> None:
    header = ("dataset", "method", "setting", "recall@10", "latency_ms")
    write_points(ctx, "figure4.csv", header, points)
    plt = pyplot_or_note(ctx, "Figure 4")
    if plt is None:
        return
    names = list(dict.fromkeys(d for d, *_ in points))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for method in dict.fromkeys(m for d, m, *_ in points if d == name):
            pts = [(ms, r) for d, m, _, r, ms in points if d == name and m == method]
            ax.plot([x for x, _ in pts], [100 * y for _, y in pts], marker="o", label=method)
        ax.set_xscale("log")
        ax.set_xlabel("latency per query (ms)")
        ax.set_ylabel("Recall@10 (%)")
        ax.set_title(f"{name} ({ctx.scale})")
        ax.legend()
    save_figure(fig, ctx.artifact("figure4.png"))


@register("kdindex.figure3")
def figure3(spec, ctx):
    """Figure 3 (Sec. 4.7): recall@10 of each student X (PQ / OPQ / AQ, `kinds`) and of KDindex
    (X) for every B in `B_grid` and W in `W_grid`, one seed, searched through the posting lists
    with the table's nprobe. Writes figure3.csv and figure3.png (heat maps: first line the
    quantizers, second line KDindex, as the paper)."""
    p = ctx.params
    k = int(p.get("k", 10))
    rows, points = [], []
    for name, ds in ctx.each_dataset():
        xt, labels = teacher_labels(ctx, name, ds)
        for kind in _as_list(p["kinds"]):
            for B in _as_list(p["B_grid"]):
                for W in _as_list(p["W_grid"]):
                    q = dict(p, B=int(B), W=int(W))
                    base = evaluate_baseline(kind, ds, ctx.seed, q)
                    kd = evaluate_kdindex(kind, ds, xt, labels, ctx.seed, q)
                    for method, res in ((kind, base), (f"KDindex ({kind})", kd)):
                        r = res[f"recall@{k}"]
                        pq = res[f"recall@{k}" + PER_QUERY].tolist()
                        rows.append(
                            {
                                "dataset": name,
                                "row": f"{method} B={B} W={W}",
                                "recall@10": r,
                                "recall@10" + PER_QUERY: pq,
                            }
                        )
                        points.append((name, method, int(B), int(W), r))
    _write_figure3(ctx, points)
    return rows


def _write_figure3(ctx, points) -> None:
    write_points(ctx, "figure3.csv", ("dataset", "method", "B", "W", "recall@10"), points)
    plt = pyplot_or_note(ctx, "Figure 3")
    if plt is None:
        return
    methods = list(dict.fromkeys(m for _, m, *_ in points))
    kinds = [m for m in methods if not m.startswith("KDindex")]
    Bs = sorted({B for _, _, B, _, _ in points})
    Ws = sorted({W for _, _, _, W, _ in points})
    fig, axes = plt.subplots(2, len(kinds), figsize=(4 * len(kinds), 7), squeeze=False)
    for j, kind in enumerate(kinds):
        for i, method in enumerate((kind, f"KDindex ({kind})")):
            grid = np.full((len(Bs), len(Ws)), np.nan)
            for _, m, B, W, r in points:
                if m == method:
                    grid[Bs.index(B), Ws.index(W)] = 100 * r
            ax = axes[i][j]
            ax.imshow(grid, cmap="Blues", vmin=0, vmax=100)
            ax.set_xticks(range(len(Ws)), [str(w) for w in Ws])
            ax.set_yticks(range(len(Bs)), [str(b) for b in Bs])
            if i == 1:
                ax.set_xlabel("W")
            ax.set_ylabel("B")
            ax.set_title(method)
            for (bi, wi), v in np.ndenumerate(grid):
                ax.text(wi, bi, f"{v:.1f}", ha="center", va="center", fontsize=8)
    fig.tight_layout()
    save_figure(fig, ctx.artifact("figure3.png"))
