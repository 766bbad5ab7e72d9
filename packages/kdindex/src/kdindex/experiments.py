"""The experiments behind the KDindex tables (Lu et al., NeurIPS 2023): train, search and score
each method the way the paper's Sec. 4 does, and turn per-seed runs into table rows.

- the faiss baselines PQ / OPQ / AQ (`evaluate_baseline`, `baseline_rows`), B codebooks of W
  codewords trained on a seeded sample of the documents, searched through their posting lists
  (`posting.PostingListIndex`) with the table's nprobe;
- the teacher HNSW of Table 7 (`get_teacher`) and its top-K labels of the training queries
  (`teacher_labels`, Sec. 3.1);
- KDindex (`evaluate_kdindex`, `kdindex_rows`): the student `kdindex.api.KDIndex` (Algorithm 2)
  trained on those labels, warm-started like the baseline of its kind, searched through the same
  posting lists;
- the re-implemented learned baselines of Table 2 (`learned_baseline_rows`, `kdindex.baselines`);
- Figure 4's recall-latency sweep (`latency_sweep`).

Runs are shared by the tables of one run through `ctx.memo` (Tables 2, 4, 5 and 8 repeat
KDindex (AQ); Table 5 repeats Table 2's MS MARCO Doc baselines; MS MARCO Doc and Passage share a
stand-in below the full scale; Tables 3 and 7 share the teacher).
"""

from __future__ import annotations

from functools import partial

import numpy as np
from annrepro.stats import mean_std_row
from annrepro.timing import Timer

from .posting import PostingListIndex, search_scores
from .quantizers import KINDS, train_quantizer
from .teacher import HNSWTeacher, hnsw_memory_bytes_estimate

# Params of the faiss quantizers (and of the warm start of KDindex and the learned baselines)
BASELINE_PARAMS = ("B", "W", "k", "nprobe", "n_train", "opq_niter", "aq_beam", "aq_refine")

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


def as_list(v) -> list:
    """A parameter value as a list (a scalar: one element), for plain params dicts."""
    return list(v) if isinstance(v, (list, tuple)) else [v]


# ------------------------------------------------------------------------------ table rows
def metric_columns(ctx, paper_name: str) -> list[str]:
    """The metric columns the paper prints for `paper_name` (the spec's published cells), in the
    spec's column order, at the cut-off k: Table 2's header gives Recall@10 with NDCG@10 on the
    L2 sets and MRR@10 on MS MARCO."""
    k = int(ctx.params.get("k", 10))
    printed = {c.column for c in ctx.spec.cells if c.dataset == paper_name}
    cols = [c.replace("@10", f"@{k}") for c in ctx.spec.columns if c in printed]
    if not cols:
        raise ValueError(f"{ctx.spec.id}: the spec prints no metric column for {paper_name!r}")
    return cols


def seed_row(
    paper_name: str, row: str, runs: list[dict], cols, seeds=(), per_seed: dict | None = None
) -> dict:
    """One table row from per-seed runs (annrepro.stats.mean_std_row: the mean of each column,
    its sample std under "<column>:std", the per-query values of every run for the runner's
    bootstrap interval over seeds and queries). per_seed (optional) receives {row: {seed: run}}
    for the paired t-test of Table 2."""
    if per_seed is not None:
        per_seed[row] = dict(zip(seeds, runs, strict=True))
    return mean_std_row(paper_name, row, runs, cols)


def note_shared_standins(ctx, names) -> None:
    """Say which paper data sets share one stand-in at this scale (their rows are the same runs)."""
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


# -------------------------------------------------------------------------- faiss baselines
def train_sample(ds, n_train: int, seed: int) -> np.ndarray:
    """float32 (min(n_train, nb), d): a seeded random sample of the documents, in random order.

    PQ, OPQ and AQ learn from "document embeddings without the query information" (Sec. 1), so
    they train on the base, not on the training queries.
    """
    rng = np.random.default_rng(seed)
    n = min(int(n_train), ds.nb)
    idx = np.sort(rng.permutation(ds.nb)[:n])  # sorted: cheap reads from a memory map
    return np.ascontiguousarray(ds.xb[idx][rng.permutation(n)], dtype=np.float32)


def train_baseline(kind: str, xt: np.ndarray, seed: int, p: dict):
    """The faiss quantizer `kind` ("PQ" | "OPQ" | "AQ") trained on xt float32 (n, d) (a
    `train_sample`) with the table params B, W, opq_niter, aq_beam, aq_refine."""
    return train_quantizer(
        kind,
        xt,
        B=int(p["B"]),
        W=int(p["W"]),
        seed=seed,
        opq_niter=int(p["opq_niter"]),
        aq_beam=int(p["aq_beam"]),
        aq_refine=bool(p["aq_refine"]),
    )


def evaluate_baseline(kind: str, ds, seed: int, p: dict) -> dict:
    """Train one faiss baseline on a data set, search it through its posting lists, score it.

    kind: "PQ" | "OPQ" | "AQ"; ds: annrepro Dataset; p: table params (`BASELINE_PARAMS`).
    Returns fractions {"recall@10", "ndcg@10", "mrr@10"} and "scanned" (mean fraction of the
    base scored per query), "train_s" (the sample is drawn outside the timer).
    """
    k = int(p.get("k", 10))
    xt = train_sample(ds, p["n_train"], seed)
    with Timer() as t:
        qz = train_baseline(kind, xt, seed, p)
    index = PostingListIndex(qz, ds.metric, xb=ds.xb)
    return {**search_scores(index, ds, k, p["nprobe"]), "train_s": t.s}


def baseline_rows(
    ctx, paper_name: str, ds, kinds=KINDS, per_seed: dict | None = None
) -> list[dict]:
    """Table 2 / Table 5 rows of the faiss baselines on one data set: mean and sample std
    (ddof = 1) over `n_seeds` seeds ctx.seed, ctx.seed + 1, ...; std under "<column>:std"."""
    p = ctx.params
    cols = metric_columns(ctx, paper_name)
    seeds = ctx.seeds(int(p["n_seeds"]))
    rows, scanned = [], []
    for kind in kinds:
        runs = []
        for seed in ctx.progress(seeds, desc=f"{paper_name} {kind}", total=len(seeds)):
            key = ("kdindex.baseline", ds.name, kind, seed, *(p.get(n) for n in BASELINE_PARAMS))
            runs.append(ctx.memo(key, partial(evaluate_baseline, kind, ds, seed, p)))
        rows.append(seed_row(paper_name, kind, runs, cols, seeds, per_seed))
        scanned.append(f"{kind} {100 * np.mean([r['scanned'] for r in runs]):.1f}%")
    ctx.note(
        f"{paper_name} ({ds.name}): {len(seeds)} seeds; nprobe={p['nprobe']} of W={p['W']} "
        f"codewords per codebook; share of the base scored per query: {', '.join(scanned)}"
    )
    return rows


# ---------------------------------------------------------------------------------- teacher
def teacher_params(p: dict, paper_name: str) -> tuple[int, int, int]:
    """(M, efConstruction, efSearch) of Table 7 for a paper data set (params may be per data set
    tables or single numbers)."""

    def get(key):
        v = p[key]
        return int(v[paper_name] if isinstance(v, dict) else v)

    return get("M"), get("efConstruction"), get("efSearch")


def _teacher_key(ctx, paper_name: str, ds) -> tuple:
    M, efc, _ = teacher_params(ctx.params, paper_name)
    return ("kdindex.teacher", ds.name, M, efc, int(ctx.params.get("hnsw_seed", 100)), ctx.threads)


def get_teacher(ctx, paper_name: str, ds) -> HNSWTeacher:
    """The teacher HNSW of Table 7 built over ds.xb, once per run for a data set and parameters
    (`ctx.memo`, counted at its expected size), set to the data set's efSearch."""
    M, efc, efs = teacher_params(ctx.params, paper_name)
    seed = int(ctx.params.get("hnsw_seed", 100))

    def build():
        t = HNSWTeacher(
            ds.d, ds.metric, M=M, ef_construction=efc, ef_search=efs, seed=seed, threads=ctx.threads
        )
        t.build(ds.xb)
        return t

    size = hnsw_memory_bytes_estimate(ds.nb, ds.d, M)
    t = ctx.memo(_teacher_key(ctx, paper_name, ds), build, nbytes=size)
    t.ef_search = efs
    return t


def n_train_queries(ctx, paper_name: str, ds) -> int:
    """nt: the `n_train_queries` param capped at ds.nt (all when the param is absent or None)."""
    cap = ctx.params.get("n_train_queries")
    nt = ds.nt if cap is None else min(ds.nt, int(cap))
    if nt < 1:
        raise ValueError(f"{paper_name}: n_train_queries={cap} leaves no training query")
    return nt


def train_queries(ctx, paper_name: str, ds) -> np.ndarray:
    """float32 (nt, d): the first `n_train_queries` training queries of ds (the base stands in
    where ds has no learn set, Table 6)."""
    return np.ascontiguousarray(ds.xt[: n_train_queries(ctx, paper_name, ds)], dtype=np.float32)


def label_seconds(ctx, paper_name: str, ds, xt: np.ndarray, K: int) -> float:
    """Seconds for the teacher of `get_teacher` to label xt with its top-K (once per run for a
    teacher, query count, K and efSearch: MS MARCO Doc and Passage share a stand-in below the
    full scale)."""
    t = get_teacher(ctx, paper_name, ds)

    def timed():
        with Timer() as ts:
            t.label(xt, K)
        return ts.s

    return ctx.memo(_teacher_key(ctx, paper_name, ds) + (len(xt), K, t.ef_search), timed)


def label_K(p: dict) -> int:
    """Neighbours to ask the teacher for: the `K` param, or its largest value when it is a list
    (Table 4); the smaller K's labels are its prefixes."""
    return max(int(k) for k in as_list(p.get("K", 10)))


def teacher_labels(ctx, paper_name: str, ds) -> tuple[np.ndarray, np.ndarray]:
    """Training queries and their teacher labels `D_K^T` (Sec. 3.1).

    xt: float32 (nt, d), `train_queries`; labels: int64 (nt, K), the top-K ids of the teacher
    HNSW of Table 7 (`get_teacher`, params M / efConstruction / efSearch), nearest first, K =
    the `K` param (10 by default, Sec. 4.1; its largest value when `K` is a list). Computed once
    per run for a data set, teacher and query count.
    """
    p = ctx.params
    K = label_K(p)
    nt = n_train_queries(ctx, paper_name, ds)
    M, efc, efs = teacher_params(p, paper_name)
    if K > efs:
        raise ValueError(
            f"{paper_name}: K={K} exceeds the teacher's efSearch={efs} (Table 7): HNSW cannot "
            "return more neighbours than its search beam"
        )

    def label():
        xt = train_queries(ctx, paper_name, ds)
        return xt, get_teacher(ctx, paper_name, ds).label(xt, K)

    key = ("kdindex.labels", ds.name, M, efc, efs, int(p.get("hnsw_seed", 100)), nt, K)
    return ctx.memo(key, label)


# ---------------------------------------------------------------------------------- KDindex
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

    K = int(K if K is not None else label_K(p))
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


def kdindex_run(
    ctx, paper_name: str, ds, kind: str, seed: int, variant="full", loss=None, K=None
) -> dict:
    """`evaluate_kdindex` on the teacher's labels, once per run for a data set, kind, seed,
    variant, loss, K and params (Tables 2, 3, 4, 5 and 8 share KDindex (AQ))."""
    p = ctx.params
    xt, labels = teacher_labels(ctx, paper_name, ds)
    K = int(K if K is not None else label_K(p))
    key = (
        ("kdindex.kdindex", ds.name, kind, seed, variant, loss or p.get("loss", "distribution"))
        + (K, len(xt))
        + tuple(p.get(n) for n in BASELINE_PARAMS + ("loss",) + TRAIN_PARAMS)
    )
    return ctx.memo(key, lambda: evaluate_kdindex(kind, ds, xt, labels, seed, p, variant, loss, K))


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
    "<column>:std". Row key "KDindex (<kind>)" unless `row` is given (`kdindex_run`)."""
    p = ctx.params
    cols = metric_columns(ctx, paper_name)
    n_seeds = int(p.get("kd_n_seeds", p.get("n_seeds", 1)))
    seeds = ctx.seeds(n_seeds)
    xt, _ = teacher_labels(ctx, paper_name, ds)
    K = int(K if K is not None else label_K(p))
    rows, notes = [], []
    for kind in kinds:
        name = row or f"KDindex ({kind})"
        runs = [
            kdindex_run(ctx, paper_name, ds, kind, seed, variant, loss, K)
            for seed in ctx.progress(seeds, desc=f"{paper_name} {name}", total=len(seeds))
        ]
        rows.append(seed_row(paper_name, name, runs, cols, seeds, per_seed))
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


def kdindex_memory_row(ctx, paper_name: str, ds, hnsw_bytes: float) -> dict:
    """Table 3's KDindex row: the bytes held by a trained KDindex index (student `kd_kind`,
    default AQ; packed codes + codebooks + rotation, `KDIndex.memory_bytes`) and HNSW / it."""
    p = ctx.params
    kind = p.get("kd_kind", "AQ")
    mem = kdindex_run(ctx, paper_name, ds, kind, ctx.seed)["memory_bytes"]
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


# ------------------------------------------------------------------------ learned baselines
def learned_baseline_rows(ctx, paper_name: str, ds, per_seed: dict | None = None) -> list[dict]:
    """Table 2 rows of the re-implemented learned baselines (kdindex.baselines: DiffPQ, DeepPQ,
    GCD, RepCONC, PQVAE), trained with KDindex's distillation objective on the same
    teacher-labelled training queries as KDindex (Sec. 4.1) and searched through the same
    posting lists; mean and std over `lb_n_seeds` seeds (default `n_seeds`)."""
    from .baselines import LEARNED_BASELINES, evaluate_learned_baseline  # torch

    p = ctx.params
    cols = metric_columns(ctx, paper_name)
    seeds = ctx.seeds(int(p.get("lb_n_seeds", p["n_seeds"])))
    xt, labels = teacher_labels(ctx, paper_name, ds)
    lb = {key: v for key, v in p.items() if key.startswith("lb_") and key != "lb_n_seeds"}
    q = {**{n: p[n] for n in BASELINE_PARAMS if n in p}, **lb}
    rows, times = [], []
    for name in LEARNED_BASELINES:
        runs = []
        for seed in ctx.progress(seeds, desc=f"{paper_name} {name}", total=len(seeds)):
            key = ("kdindex.learned", ds.name, name, seed, len(xt), repr(sorted(p.items())))
            run = partial(evaluate_learned_baseline, name, ds, xt, labels, seed, q)
            runs.append(ctx.memo(key, run))
        rows.append(seed_row(paper_name, name, runs, cols, seeds, per_seed))
        times.append(
            f"{name} {np.mean([r['train_s'] for r in runs]):.1f} s, "
            f"{100 * np.mean([r['scanned'] for r in runs]):.1f}% of the base scored per query"
        )
    ctx.note(
        f"{paper_name} ({ds.name}): learned baselines (re-implementations) trained on {len(xt)} "
        f"teacher-labelled training queries, {len(seeds)} seed(s); per run: " + "; ".join(times)
    )
    return rows


# ----------------------------------------------------------------------------- Figure 4
def latency_sweep(ctx, paper_name: str, ds, kind: str, k: int):
    """Yield (method, setting, I int64 (nq, k), seconds) for Figure 4: KDindex (`kind`) and its
    native student over the `nprobe_sweep` posting lists probed per codebook (nprobe <= W),
    searched through faiss (`PostingListIndex.search`, method "faiss"; a one-query search first,
    untimed, builds the faiss indexes), and the teacher HNSW over `ef_sweep` (efSearch >= k).
    seconds: wall time of searching all ds.xq."""
    p = ctx.params
    xt, labels = teacher_labels(ctx, paper_name, ds)
    kd = fit_kdindex(kind, ds, xt, labels, ctx.seed, p)
    indexes = {
        f"KDindex ({kind})": PostingListIndex(kd.quantizer, ds.metric, codes=kd.codes),
        kind: PostingListIndex(
            train_baseline(kind, train_sample(ds, p["n_train"], ctx.seed), ctx.seed, p),
            ds.metric,
            xb=ds.xb,
        ),
    }
    for method, index in indexes.items():
        for nprobe in as_list(p["nprobe_sweep"]):
            if int(nprobe) > int(p["W"]):
                continue
            index.search(ds.xq[:1], k, int(nprobe), method="faiss")
            with Timer() as t:
                _, I = index.search(ds.xq, k, int(nprobe), method="faiss")
            yield method, f"nprobe={int(nprobe)}", I, t.s
    teacher = get_teacher(ctx, paper_name, ds)
    for ef in as_list(p["ef_sweep"]):
        with Timer() as t:
            _, I = teacher.search(ds.xq, k, ef=max(int(ef), k))
        yield "HNSW", f"ef={int(ef)}", I, t.s
