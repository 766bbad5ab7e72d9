"""Producers of the KDindex tables (Lu et al., NeurIPS 2023), registered with annrepro, in the
paper's order: Tables 2-5, Figure 3 (Sec. 4), Tables 6-8 and Figure 4 (appendix).

Specs and published numbers: `paper_tables/kdindex/*.{toml,csv}`; the data sets are the spec's
(`ctx.each_dataset`). How each method is trained, searched and scored, and how runs are shared
between tables, is in `kdindex.experiments`; the plots in `kdindex.figures`; Table 2's t-test in
`kdindex.analysis`.
"""

from __future__ import annotations

from annrepro.groundtruth import knn_exact
from annrepro.ladder import register_ladder
from annrepro.metrics import recall_at
from annrepro.tables import register

from .analysis import paired_t_test_note
from .experiments import (
    baseline_rows,
    evaluate_baseline,
    evaluate_kdindex,
    get_teacher,
    kdindex_memory_row,
    kdindex_rows,
    label_seconds,
    latency_sweep,
    learned_baseline_rows,
    note_shared_standins,
    teacher_labels,
    teacher_params,
    train_queries,
)
from .figures import write_figure3, write_figure4
from .posting import PER_QUERY, per_query_scores
from .quantizers import KINDS, quantizer_memory_bytes
from .teacher import hnsw_memory_bytes_estimate

# Table 5 columns (Sec. 4.6) -> `experiments.train_config` variant
ABLATIONS = {
    "initialization": "initialization",
    "w/o distillation": "no_distillation",
    "w/o balance": "no_balance",
}

# Table 8 rows -> TrainConfig.loss (Sec. 3.3, App. C.2)
LOSSES = {
    "Lambdarank loss": "lambdarank",
    "Weighted KL loss": "weighted_kl",
    "Distributed-based loss": "distribution",
}


@register("kdindex.table2")
def table2(spec, ctx):
    """Table 2: PQ, OPQ and AQ baselines, the re-implemented learned baselines (DiffPQ, DeepPQ,
    GCD, RepCONC, PQVAE) and KDindex (PQ / OPQ / AQ); recall@10 and ndcg@10 (L2) / mrr@10
    (MS MARCO), mean and std over the seeds; the caption's paired t-test in the notes."""
    note_shared_standins(ctx, spec.datasets(ctx.scale))
    rows = []
    for name, ds in ctx.each_dataset():
        per_seed: dict = {}
        rows += baseline_rows(ctx, name, ds, per_seed=per_seed)
        rows += learned_baseline_rows(ctx, name, ds, per_seed=per_seed)
        rows += kdindex_rows(ctx, name, ds, per_seed=per_seed)
        ctx.note(paired_t_test_note(name, ds, per_seed, f"recall@{int(ctx.params.get('k', 10))}"))
    return rows


@register("kdindex.table3")
def table3(spec, ctx):
    """Table 3: index memory. HNSW = hnswlib's saved index (vectors + graph); PQ / OPQ / AQ =
    codes + codebooks (+ rotation), from shapes; KDindex = a trained index; compression_ratio =
    HNSW bytes / index bytes."""
    p = ctx.params
    rows = []
    for name, ds in ctx.each_dataset():
        if p.get("hnsw_memory", "measured") == "measured":
            hnsw = get_teacher(ctx, name, ds).memory_bytes()
        else:
            hnsw = hnsw_memory_bytes_estimate(ds.nb, ds.d, teacher_params(p, name)[0])
        rows.append({"dataset": name, "row": "HNSW", "memory_gb": hnsw})
        ctx.note(
            f"{name} ({ds.name}): HNSW {hnsw / 1e9:.6f} GB of which raw float32 vectors "
            f"{ds.nb * ds.d * 4 / 1e9:.6f} GB (the paper's HNSW sizes equal the raw vectors alone)"
        )
        for kind in KINDS:
            q = quantizer_memory_bytes(kind, ds.nb, ds.d, int(p["B"]), int(p["W"]))["total"]
            rows.append(
                {"dataset": name, "row": kind, "memory_gb": q, "compression_ratio": hnsw / q}
            )
        rows.append(kdindex_memory_row(ctx, name, ds, hnsw))
    return rows


@register("kdindex.table4")
def table4(spec, ctx):
    """Table 4 (Sec. 4.5): KDindex trained with the teacher's top-K, K in the `K` param list, on
    MS MARCO Doc; student `kd_kind` (AQ: the K = 10 row equals KDindex (AQ) of Table 2)."""
    kind = ctx.params.get("kd_kind", "AQ")
    rows = []
    for name, ds in ctx.each_dataset():
        for K in ctx.param_list("K"):
            rows += kdindex_rows(ctx, name, ds, kinds=(kind,), K=int(K), row=f"K={int(K)}")
    ctx.note(
        f"student {kind}; the top-K labels of every K are the first K of one teacher search "
        f"for max(K) neighbours (efSearch >= max(K))"
    )
    return rows


@register("kdindex.table5")
def table5(spec, ctx):
    """Table 5 (ablation on MS MARCO Doc, Sec. 4.6): per student X in PQ, OPQ, AQ: X
    ("Quantization"), KDindex (X) initialization (warm start + iterative initialisation, no
    differentiable epoch), w/o distillation (reconstruction loss only), w/o balance (nearest
    codes in the initialisation, the mini-batches and the posting lists), KDindex (X)."""
    rows = []
    for name, ds in ctx.each_dataset():
        rows += baseline_rows(ctx, name, ds)
        for kind in KINDS:
            for label, variant in ABLATIONS.items():
                row = f"KDindex ({kind}) {label}"
                rows += kdindex_rows(ctx, name, ds, kinds=(kind,), variant=variant, row=row)
            rows += kdindex_rows(ctx, name, ds, kinds=(kind,))
    return rows


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
        for kind in ctx.param_list("kinds"):
            for B in ctx.param_list("B_grid"):
                for W in ctx.param_list("W_grid"):
                    q = dict(p, B=int(B), W=int(W))
                    base = evaluate_baseline(kind, ds, ctx.seed, q)
                    kd = evaluate_kdindex(kind, ds, xt, labels, ctx.seed, q)
                    for method, res in ((kind, base), (f"KDindex ({kind})", kd)):
                        r, pq = res[f"recall@{k}"], res[f"recall@{k}" + PER_QUERY].tolist()
                        row = {"dataset": name, "row": f"{method} B={B} W={W}", "recall@10": r}
                        rows.append({**row, "recall@10" + PER_QUERY: pq})
                        points.append((name, method, int(B), int(W), r))
    write_figure3(ctx, points)
    return rows


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
    recall@10 of the teacher on the test queries (`recall_queries = "train"`: on the training
    queries against their exact top-10)."""
    p = ctx.params
    K = int(p.get("K", 10))
    src = p.get("recall_queries", "test")
    rows = []
    for name, ds in ctx.each_dataset():
        M, efc, efs = teacher_params(p, name)
        t = get_teacher(ctx, name, ds)
        xt = train_queries(ctx, name, ds)
        search_s = label_seconds(ctx, name, ds, xt, K)
        xq = ds.xq if src == "test" else xt
        gt = ds.gt(10) if src == "test" else knn_exact(xt, ds.xb, 10, ds.metric)[1]
        _, I = t.search(xq, 10)
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
            f"{name} ({ds.name}): build over {ds.nb} vectors and search of {len(xt)} training "
            f"queries (top-{K}) with {ctx.threads} threads; recall@10 on the {src} queries"
        )
    return rows


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


@register("kdindex.figure4")
def figure4(spec, ctx):
    """Figure 4 (App. D): recall@10 against the latency of the top-10 search per query, for
    KDindex (`kd_kind`) and its native student over the `nprobe_sweep` posting lists probed per
    codebook, and the teacher HNSW over `ef_sweep`. Latency: wall time of searching all test
    queries / nq, in ms, through faiss for both quantizers alike (`PostingListIndex.search`,
    method "faiss": one `search_preassigned` inverted file per codebook, cost following the
    probed lists; nprobe = W is faiss's exhaustive flat index), HNSW through hnswlib. Writes
    figure4.csv (every point) and figure4.png (one panel per data set) as artifacts."""
    k = int(ctx.params.get("k", 10))
    kind = ctx.params.get("kd_kind", "AQ")
    rows, points = [], []
    for name, ds in ctx.each_dataset():
        gt = ds.gt(k)
        for method, setting, I, seconds in latency_sweep(ctx, name, ds, kind, k):
            r = {"recall@10": recall_at(I, gt, k), "latency": seconds / ds.nq}  # s (spec: ms)
            pq = {"recall@10" + PER_QUERY: per_query_scores(I, gt, k)[f"recall@{k}"].tolist()}
            rows.append({"dataset": name, "row": f"{method} {setting}", **r, **pq})
            points.append((name, method, setting, r["recall@10"], 1e3 * r["latency"]))
    write_figure4(ctx, points)
    ctx.note(
        f"latency with {ctx.threads} thread(s) on this machine (the paper's points come from "
        "ANN-Benchmarks hardware); KDindex and the student searched alike through faiss "
        "(per-codebook inverted files, search_preassigned on the nprobe best codewords, merged "
        "without duplicates; nprobe = W: faiss's flat index), HNSW by hnswlib (C++). faiss's "
        "AQ list scanner recomputes the query's look-up table for every probed list, so AQ "
        "posting lists pay B x W x d per probed list that PQ's do not"
    )
    return rows


register_ladder("kdindex")  # kdindex.ladder: paper_tables/kdindex/ladder.toml
