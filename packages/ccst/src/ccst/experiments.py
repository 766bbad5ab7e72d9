"""The experiments behind the CCST tables: build, search and score each method the way the
paper's Sec. 4 does, and turn the results into table rows.

- the graph indexes of Tables 1, 2 and 4 (`hnsw_row`, `nsg_row`, `sq8_row`): HNSW / NSG (and
  HNSW + 8-bit scalar quantization) built on the original features or on CSST-compressed ones,
  always searched with the full-dimensional vectors (Sec. 4.2);
- the CSST model (`train_ccst`, Sec. 4.1: trained on the database) and the compression of a
  database under a memory bound (`compress`, `compress_measured`, `compressed_database`;
  Tables 1 and 2's 'Comp cf=k' rows, `comp_row`);
- Table 3's IVFADC and Link & Code rows (`ivfadc_row`, `linkcode_row`, `pq_m`) and its
  Catalyst+PQ rows (`catalyst_pq_rows`);
- Table 5's compressors searched in the compressed space (`compressed_search_rows`): SRP
  (`srp_rows`), MLP and VAE (`learned_baseline_rows`, `ccst.baselines`), Catalyst
  (`catalyze`, `catalyst_rows`) and CSST (`csst_rows`).

Hyper-parameters come from the spec's [params] (merged with the scale's; `ctx.param` resolves
the per-data-set ones, e.g. ``efSearch = { GIST1M = 100, Deep1M = 200 }``). The trained CSST
models and the catalyzed data are shared by the tables of one run through `ctx.memo` (one
model per data set, factor and settings: Tables 1, 3, 4 and 5 reuse the cf=4 model; Tables 3
and 5 share the catalyzer when their settings agree).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from typing import Any

import numpy as np
from annrepro.groundtruth import knn_exact
from annrepro.metrics import n_recall_at, one_recall_at
from annrepro.tables import ProducerError
from annrepro.threads import threads
from annrepro.timing import Timer, measure_qps

from ccst._indexes import (
    NNDescentParams,
    build_hnsw_flat,
    build_hnsw_flat_built_on,
    build_ivfpq,
    build_nsg_flat,
    build_nsg_flat_built_on,
    nearest_pq_m,
    set_search_params,
)
from ccst.srp import srp_matrix, srp_project


# ------------------------------------------------------------------------ queries and search
def queries(ctx, ds, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The queries float32 (nq, d) and their exact top-k ids int64 (nq, k), optionally cut to
    the first `nq` (param)."""
    xq, gt = ds.xq, ds.gt(k)
    nq = ctx.params.get("nq")
    if nq:
        xq, gt = xq[:nq], gt[:nq]
    return np.ascontiguousarray(xq, dtype=np.float32), gt


def graph_recalls(I: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """The recalls of Tables 1, 2 and 4: 1@1, 1@10 and 100@100 (fractions).

    I: int64 (nq, >=100) returned ids; gt: int64 (nq, >=100) exact ids.
    """
    return {
        "1-recall@1": one_recall_at(I, gt, 1),
        "1-recall@10": one_recall_at(I, gt, 10),
        "100-recall@100": n_recall_at(I, gt, 100, 100),
    }


def timed_search(ctx, search, xq: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Single-threaded search throughput (Table 1 caption: best of qps_repeats warm runs) and
    the returned ids int64 (nq, k). search: `index.search`-like (xq, k) -> (D, I)."""
    repeats = int(ctx.params["qps_repeats"])
    qps, (_, I) = measure_qps(lambda x: search(x, k), xq, repeats=repeats, threads=1)
    return qps, I


# ----------------------------------------------------------------- graphs (Tables 1, 2, 4)
def nndescent(ctx, dataset: str) -> NNDescentParams | None:
    """NN-descent parameters of the NSG k-NN graph (Sec. 4.2), or None for brute force."""
    if ctx.param("nsg_knn", dataset) == "brute":
        return None
    return NNDescentParams(
        L=ctx.param("knn_L", dataset),
        iter=ctx.param("knn_iter", dataset),
        S=ctx.param("knn_S", dataset),
        R=ctx.param("knn_R", dataset),
    )


def hnsw_row(ctx, dataset: str, ds, row: str, xg=None, qps: bool = True, k: int = 100) -> dict:
    """Build HNSW-Flat and search it with the full-dimensional queries (Sec. 4.2): build_s,
    qps (one search thread; `qps=False`: one untimed search, Table 4) and the graph recalls.

    xg: None builds the graph on the original features; else float32 (nb, d_c), the compressed
    database the graph is built on (Table 1 'HNSW cf=k'); the search still uses ds.xb.
    """
    xq, gt = queries(ctx, ds, k)
    M, efc = int(ctx.params["M"]), int(ctx.params["efConstruction"])
    with threads(ctx.threads), Timer() as t:
        if xg is None:
            index = build_hnsw_flat(ds.xb, M, efc, ds.metric)
        else:
            index = build_hnsw_flat_built_on(xg, ds.xb, M, efc, ds.metric)
    set_search_params(index, ef_search=int(ctx.param("efSearch", dataset)))
    if not qps:
        with threads(1):
            _, I = index.search(xq, k)
        ctx.log.info("%s %s: build %.2f s", dataset, row, t.s)
        return {"dataset": dataset, "row": row, "build_s": t.s, **graph_recalls(I, gt)}
    speed, I = timed_search(ctx, index.search, xq, k)
    ctx.log.info("%s %s: build %.2f s, %.0f q/s", dataset, row, t.s, speed)
    return {"dataset": dataset, "row": row, "build_s": t.s, "qps": speed, **graph_recalls(I, gt)}


def nsg_row(ctx, dataset: str, ds, row: str, xg=None, k: int = 100) -> dict:
    """Build NSG-Flat (on ds.xb, or on the compressed xg: float32 (nb, d_c)) and search it with
    the full-dimensional queries (Sec. 4.2); the columns of `hnsw_row`."""
    xq, gt = queries(ctx, ds, k)
    knn = nndescent(ctx, dataset)
    kw = dict(
        R=int(ctx.params["nsg_R"]),
        L=int(ctx.params["nsg_L"]),
        C=int(ctx.params["nsg_C"]),
        GK=int(ctx.param("knn_GK", dataset)),
        nndescent=knn,
        metric=ds.metric,
    )
    with threads(ctx.threads), Timer() as t:
        if xg is None:
            index = build_nsg_flat(ds.xb, **kw)
        else:
            index = build_nsg_flat_built_on(xg, ds.xb, **kw)
    set_search_params(index, search_L=int(ctx.param("nsg_search_L", dataset)))
    qps, I = timed_search(ctx, index.search, xq, k)
    ctx.log.info("%s %s: build %.2f s, %.0f q/s", dataset, row, t.s, qps)
    if knn is None and xg is None:
        ctx.note(f"{dataset}: NSG k-NN graph built by brute force, not NN-descent")
    return {"dataset": dataset, "row": row, "build_s": t.s, "qps": qps, **graph_recalls(I, gt)}


def sq8_row(ctx, dataset: str, ds, row: str, build, *arrays, k: int = 100) -> dict:
    """Time build(*arrays, M, efConstruction, metric) (an HNSW+SQ8 builder of ccst._indexes),
    then one single-thread search with the full-dimensional queries (Table 4)."""
    xq, gt = queries(ctx, ds, k)
    with threads(ctx.threads), Timer() as t:
        index = build(*arrays, int(ctx.params["M"]), int(ctx.params["efConstruction"]), ds.metric)
    set_search_params(index, ef_search=int(ctx.param("efSearch", dataset)))
    with threads(1):
        _, I = index.search(xq, k)
    ctx.log.info("%s %s: build %.2f s", dataset, row, t.s)
    return {"dataset": dataset, "row": row, "build_s": t.s, **graph_recalls(I, gt)}


def billion_row(row: dict) -> dict:
    """A Table 1 style row cut to Table 2's columns (build_h in seconds)."""
    return {
        "dataset": row["dataset"],
        "row": row["row"],
        "build_h": row["build_s"],  # seconds: the column's unit "h" converts
        "1-recall@1": row["1-recall@1"],
    }


# ------------------------------------------------------------------ CSST and its compression
def csst_factors(ctx, dataset: str, ds, name: str) -> list[int]:
    """The compression factors of the spec param `name` (one or a list) that divide the
    stand-in's d (the others: a note, no row)."""
    factors = [int(cf) for cf in ctx.param_list(name)]
    kept = [cf for cf in factors if ds.d % cf == 0]
    for cf in sorted(set(factors) - set(kept)):
        ctx.note(f"{dataset} ({ds.name}): no CSST cf={cf} rows, {cf} does not divide d={ds.d}")
    return kept


def train_ccst(ctx, dataset: str, ds, cf: int):
    """A `ccst.api.CCST` trained on the database (Sec. 4.1: 'we take database as training set')
    with the spec's ccst_* params, once per run for the same data and settings (`ctx.memo`:
    the tables of one run share one model per data set and factor).

    Optional spec params: ccst_input_scaling (ccst.api.CCST's input_scaling: "output" unless
    set), ccst_norm (the network's normalisation, ccst.model.CCSTConfig.norm: "released", the
    released code's batch norms, unless set; "layernorm" or "none"), ccst_train_rows (train on
    the first rows of the database only: Bigann-1B). The old ccst_pre_norm is refused (it
    would be silently ignored otherwise).
    """
    from ccst.api import CCST  # torch is imported only when a CCST row is produced

    if "ccst_pre_norm" in ctx.params:
        raise ProducerError(
            f"{ctx.spec.id}: spec param ccst_pre_norm was replaced by ccst_norm = 'released' | "
            "'layernorm' | 'none' (ccst_pre_norm = true is 'layernorm', false 'none')"
        )

    heads = int(ctx.param("ccst_heads"))
    d_out = ds.d // cf
    if d_out % heads:
        heads = math.gcd(heads, d_out)  # heads must divide d_out (a stand-in's odd dimension)
        ctx.note(f"{dataset} ({ds.name}): CSST uses {heads} heads so that they divide {d_out}")
    kw = dict(
        compression_factor=cf,
        depths=tuple(ctx.param("ccst_depths")),
        heads=heads,
        epochs=int(ctx.param("ccst_epochs")),
        batch_size=int(ctx.param("ccst_batch_size")),
        lr=float(ctx.param("ccst_lr")),
        loss=str(ctx.param("ccst_loss")),
        seed=ctx.seed,
        input_scaling=str(ctx.params.get("ccst_input_scaling", "output")),
        norm=str(ctx.params.get("ccst_norm", "released")),
        # CPU by default (deterministic); full scale needs a GPU: spec param ccst_device = "cuda"
        device=str(ctx.param("ccst_device")),
    )
    nt = min(int(ctx.params.get("ccst_train_rows") or ds.nb), ds.nb)
    trained = []

    def fit():
        trained.append(True)
        model = CCST(**kw, progress=False)
        with threads(ctx.threads):
            return model.fit(ds.xb[:nt] if nt < ds.nb else ds.xb)

    model = ctx.memo(("ccst.model", ds.name, ds.nb, ds.d, nt, tuple(sorted(kw.items()))), fit)
    last = model.history[-1]
    ctx.note(
        f"{dataset} ({ds.name}): CSST {model.d_in} -> {model.d_out} dims, "
        f"{model.config.n_tokens} projection tokens, depths {list(model.config.depths)}, "
        f"{model.config.heads} heads, normalisation {model.config.norm!r}, "
        f"input scaling {model.input_scaling!r}, "
        "trained "
        f"{last['epoch']} epochs on {nt} database vectors "
        f"(batch {model.train_config.batch_size}, {model.train_config.loss} INRP loss; final "
        f"train loss {last['train_loss']:.4g}, val loss {last['val_loss']:.4g})"
        + ("" if trained else "; model reused from an earlier table of this run")
    )
    return model


def compress(ctx, model, x: np.ndarray, out: np.ndarray | None = None, source=None) -> np.ndarray:
    """CSST-compress x: (n, d) (float32, or a uint8 memory map) in batches whose activations stay
    under ccst_compress_mb (Table 1 caption: GPU memory restricted to about 1 GB), with
    ctx.threads threads. Returns float32 (n, d_out): `out` (e.g. a np.memmap) when given.

    source: the data set whose base x is; with ANNREPRO_ENGINE=dask and a base stored as one
    file (`Dataset.base_file`), the compression runs on the cluster instead (`sharded_compress`:
    resumable shards under the cache, read back memory-mapped)."""
    max_mb = float(ctx.params.get("ccst_compress_mb", 1024))
    if source is not None and os.environ.get("ANNREPRO_ENGINE", "single") not in ("", "single"):
        path = source.base_file()
        if path is not None:
            y = sharded_compress(ctx, model, path, max_mb)
            if out is None:
                return y
            out[:] = y
            return out
    with threads(ctx.threads):
        return model.transform(x, max_memory_mb=max_mb, out=out)


def sharded_compress(ctx, model, path, max_mb: float) -> np.ndarray:
    """The base file at `path` compressed on the configured Dask cluster
    (`annrepro.distributed.engine_client`, `transform_sharded`): the model is saved under the
    cache (shared storage on a multi-machine cluster), one shard per task, resumable."""
    import hashlib

    from annrepro.distributed import engine_client, read_shards, transform_sharded
    from annrepro.paths import cache_dir

    from .cli import ModelTransform

    root = cache_dir() / "ccst-sharded"
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".model-{os.getpid()}.pt"
    model.save(tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    model_path = root / f"model-{digest[:16]}.pt"
    os.replace(tmp, model_path)
    out_dir = root / f"{digest[:16]}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    ctx.note(f"CSST compression of {path} on Dask (ANNREPRO_ENGINE=dask), shards in {out_dir}")
    fn = ModelTransform(str(model_path), str(getattr(model, "device", "cpu")), max_mb)
    transform_sharded(fn, path, out_dir, f"ccst-{digest}", client=engine_client(), progress=True)
    return read_shards(out_dir, mmap=True)


def compress_train_and_base(ctx, model, ds) -> tuple[np.ndarray, np.ndarray]:
    """(xt_c, xb_c): the CSST-compressed training set and database (one array where the data
    set's training set is its database)."""
    xb_c = compress(ctx, model, ds.xb, source=ds)
    return (compress(ctx, model, ds.xt) if ds.xt is not ds.xb else xb_c), xb_c


def compress_measured(ctx, model, x: np.ndarray, out: np.ndarray | None = None, source=None):
    """`compress`, timed, plus the peak GPU memory of the compression in bytes (torch's
    max_memory_allocated; the 'Comp' rows' gpu_mem_gb: the runner converts bytes to the column's
    GB, annrepro.tables.spec.MEASURED_UNITS), or None on the CPU (noted).
    Returns (float32 (n, d_out), seconds, bytes or None)."""
    on_gpu = str(getattr(model, "device", "cpu")).startswith("cuda")
    if on_gpu:
        import torch

        torch.cuda.reset_peak_memory_stats()
    with Timer() as t:
        y = compress(ctx, model, x, out, source=source)
    if not on_gpu:
        ctx.note("gpu_mem_gb not measured: CSST runs on the CPU here (ccst_device = 'cuda')")
        return y, t.s, None
    import torch

    return y, t.s, int(torch.cuda.max_memory_allocated())


def comp_row(dataset: str, cf: int, column: str, seconds: float, gpu_bytes) -> dict:
    """A 'Comp cf=k' row: compression time (column compress_s or compress_h, in seconds) and
    the peak GPU memory in bytes where measured (column gpu_mem_gb; the runner converts)."""
    row = {"dataset": dataset, "row": f"Comp cf={cf}", column: seconds}
    if gpu_bytes is not None:
        row["gpu_mem_gb"] = gpu_bytes
    return row


@contextlib.contextmanager
def compressed_database(ctx, model, nb: int):
    """A float32 (nb, d_out) array for the compressed database: None (transform allocates in
    memory) when it fits in compress_in_memory_mb (param, default 4096), else a np.memmap in a
    temporary file under $ANNREPRO_CACHE (or the system temp dir), removed afterwards."""
    nbytes = nb * model.d_out * 4
    limit_mb = float(ctx.params.get("compress_in_memory_mb", 4096))
    if nbytes <= limit_mb * 2**20:
        yield None
        return
    root = os.environ.get("ANNREPRO_CACHE") or None
    if root:
        os.makedirs(root, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix="ccst-compressed-") as tmp:
        path = os.path.join(tmp, "xb_c.f32")
        ctx.note(f"compressed database ({nbytes / 2**30:.3g} GiB) memory-mapped at {path}")
        mm = np.memmap(path, dtype=np.float32, mode="w+", shape=(nb, model.d_out))
        try:
            yield mm
        finally:
            del mm


# ------------------------------------------------------------------- Table 3: PQ and L&C
def pq_m(ctx, dataset: str, ds, d: int, nbytes: int, method: str) -> int:
    """Sub-quantizers for a code of `nbytes` bytes over d dimensions: nbytes if it divides d,
    else the nearest divisor of d (noted: the row keeps the paper's budget in its name)."""
    m = nearest_pq_m(d, nbytes)
    if m != nbytes:
        ctx.note(
            f"{dataset} ({ds.name}, d={d}): {method} {nbytes}B uses m={m}"
            f" sub-quantizers ({m} bytes), the divisor of d nearest to {nbytes}"
        )
    return m


def table3_row(dataset: str, row: str, qps: float, I: np.ndarray, gt: np.ndarray) -> dict:
    """Table 3's columns: qps, 1-recall@1, @5, @50 of ids I: int64 (nq, 50)."""
    return {
        "dataset": dataset,
        "row": row,
        "qps": qps,
        "1-recall@1": one_recall_at(I, gt, 1),
        "1-recall@5": one_recall_at(I, gt, 5),
        "1-recall@50": one_recall_at(I, gt, 50),
    }


def ivfadc_row(ctx, dataset: str, row: str, xt, xb, xq, gt, m: int, k: int = 50) -> dict:
    """IVFADC 'IVF{nlist},PQ{m}' trained on xt, filled with xb, searched with xq (Table 3)."""
    with threads(ctx.threads), Timer() as t:
        index = build_ivfpq(
            xt, xb, int(ctx.params["nlist"]), m, "l2", pq_niter=int(ctx.params["pq_niter"])
        )
    set_search_params(index, nprobe=int(ctx.params["nprobe"]))
    qps, I = timed_search(ctx, index.search, xq, k)
    ctx.log.info("%s %s (m=%d): build %.2f s, %.0f q/s", dataset, row, m, t.s, qps)
    return table3_row(dataset, row, qps, I, gt)


def linkcode_row(ctx, dataset: str, row: str, xt, xb, xq, gt, m: int, k: int = 50) -> dict:
    """Link & Code (ccst.linkcode) with PQ{m} codes plus lc_beta_nsq regression bytes."""
    from ccst.linkcode import LinkCode, LinkCodeParams

    params = LinkCodeParams(
        pq_m=m,
        pq_niter=int(ctx.params["pq_niter"]),  # as the PQ rows
        hnsw_M=int(ctx.params["lc_hnsw_M"]),
        ef_construction=int(ctx.params["lc_efConstruction"]),
        ef_search=int(ctx.params["lc_efSearch"]),
        beta_nsq=int(ctx.params["lc_beta_nsq"]),
        beta_k=int(ctx.params["lc_beta_k"]),
        beta_niter=int(ctx.params["lc_beta_niter"]),
        seed=ctx.seed,
    )
    with threads(ctx.threads), Timer() as t:
        lc = LinkCode(params).fit(xt, xb)
    qps, I = timed_search(ctx, lc.search, xq, k)
    pq_err, lc_err = lc.reconstruction_errors(xb)
    ctx.note(
        f"{dataset} {row}: PQ{m} + {params.beta_nsq} regression bytes; reconstruction MSE "
        f"{pq_err:.4g} (PQ) -> {lc_err:.4g} (refined); built in {t.s:.1f} s"
    )
    return table3_row(dataset, row, qps, I, gt)


def catalyst_pq_rows(ctx, dataset: str, ds, xq, gt) -> list[dict]:
    """Table 3 'Catalyst+PQ' rows: the catalyzer (trained on the database to d /
    pq_compression_factor, as the CSST+PQ rows) then IVFADC at catalyst_pq_bytes. The paper
    gives neither Catalyst's d_out nor its training here: the CSST factor and Table 5's catalyst
    settings are our choice. The catalyzer's output is on the unit sphere; PQ trains on the
    catalyzed base."""
    cf = int(ctx.params["pq_compression_factor"])
    out = catalyze(ctx, dataset, ds, xq, ds.d // cf)
    if out is None:
        return []
    xb_c, xq_c = out
    rows = []
    for nbytes in ctx.params.get("catalyst_pq_bytes", ()):
        m = pq_m(ctx, dataset, ds, xb_c.shape[1], int(nbytes), "Catalyst+PQ")
        rows.append(ivfadc_row(ctx, dataset, f"Catalyst+PQ {nbytes}B", xb_c, xb_c, xq_c, gt, m))
    return rows


# ------------------------------------------------- Table 5: search in the compressed space
def compressed_search_rows(ctx, name: str, dataset: str, xb_c, xq_c, gt, metric, k=10):
    """'<name>+HNSW' and '<name>+brute' rows of Table 5: search in the compressed space
    (xb_c: float32 (nb, d_c), xq_c: float32 (nq, d_c)), scored against the original-space
    ground truth gt: int64 (nq, >= 1)."""
    with threads(ctx.threads):
        index = build_hnsw_flat(
            xb_c, int(ctx.params["M"]), int(ctx.params["efConstruction"]), metric
        )
    set_search_params(index, ef_search=int(ctx.param("efSearch", dataset)))
    with threads(1):
        _, I_hnsw = index.search(xq_c, k)
    with threads(ctx.threads):
        _, I_brute = knn_exact(xq_c, xb_c, k, metric)
    return [
        {
            "dataset": dataset,
            "row": f"{name}+{search}",
            "1-recall@1": one_recall_at(I, gt, 1),
            "1-recall@5": one_recall_at(I, gt, 5),
            "1-recall@10": one_recall_at(I, gt, 10),
        }
        for search, I in (("HNSW", I_hnsw), ("brute", I_brute))
    ]


def srp_rows(ctx, dataset: str, ds, xq, gt, d_out: int, k: int) -> list[dict]:
    """Table 5 'SRP' rows: one sparse random projection (Eq. 2, s = sqrt(d)) to d_out, seed
    ctx.seed."""
    ctx.note(
        f"{dataset} ({ds.name}): SRP {ds.d} -> {d_out} dims, s = sqrt({ds.d}), seed {ctx.seed}"
    )
    w = srp_matrix(ds.d, d_out, seed=ctx.seed)
    xb_c, xq_c = srp_project(ds.xb, w), srp_project(xq, w)
    return compressed_search_rows(ctx, "SRP", dataset, xb_c, xq_c, gt, ds.metric, k)


def prefixed_params(ctx, prefix: str, dataset: str) -> dict[str, Any]:
    """Spec params '<prefix>_<name>' as {name: value}, per-data-set values resolved."""
    n = len(prefix) + 1
    return {k[n:]: ctx.param(k, dataset) for k in ctx.params if k.startswith(prefix + "_")}


def learned_baseline_rows(ctx, name: str, dataset: str, ds, xq, gt, cf: int, k: int):
    """Table 5 'MLP' / 'VAE' rows (ccst.baselines): trained on the database as CSST is
    (Sec. 4.1), settings from the spec's mlp_* / vae_* params, then `compressed_search_rows`."""
    from ccst.baselines import MLPCompressor, VAECompressor  # torch only when produced

    prefix = name.lower()
    p = prefixed_params(ctx, prefix, dataset)
    for key in ("epochs", "batch_size", "lr"):
        if key not in p:
            raise ProducerError(f"{ctx.spec.id}: spec lacks the {name} parameter {prefix}_{key}")
    if "hidden_ratios" in p:
        p["hidden_ratios"] = tuple(p["hidden_ratios"])
    if name == "MLP" and "ccst_input_scaling" in ctx.params:
        p.setdefault("input_scaling", ctx.params["ccst_input_scaling"])  # CSST's normalisation
    cls = {"MLP": MLPCompressor, "VAE": VAECompressor}[name]
    try:
        model = cls(
            compression_factor=cf,
            seed=ctx.seed,
            device=str(ctx.param("ccst_device")),
            progress=False,
            **p,
        )
    except TypeError as e:  # a misspelt <prefix>_* parameter
        raise ProducerError(f"{ctx.spec.id}: bad {prefix}_* parameter: {e}") from e
    with threads(ctx.threads), Timer() as t:
        model.fit(ds.xb)
        xb_c, xq_c = model.transform(ds.xb), model.transform(xq)
    last, cfg = model.history[-1], model.net.cfg
    loss = (
        f"{model.train_config.loss} INRP loss"
        if name == "MLP"
        else f"negative ELBO, KL weight {model.kl_weight:g}"
    )
    if name == "MLP":
        loss += f", input scaling {model.input_scaling!r} as CSST's"
    ctx.note(
        f"{dataset} ({ds.name}): {name} {cfg.d_in} -> {cfg.d_out} dims, hidden Linear-ABN "
        f"widths {list(cfg.hidden)}, trained {last['epoch']} epochs on the database (batch "
        f"{model.train_config.batch_size}, lr {model.train_config.lr:g}, {loss}; final train "
        f"loss {last['train_loss']:.4g}, val loss {last['val_loss']:.4g}) in {t.s:.1f} s"
    )
    return compressed_search_rows(ctx, name, dataset, xb_c, xq_c, gt, ds.metric, k)


def catalyze(ctx, dataset: str, ds, xq, d_out: int):
    """The catalyzer (optional dependency) trained on the database to d_out with the spec's
    catalyst_* params, applied to ds.xb and xq: (xb_c, xq_c) float32 (nb, d_out), (nq, d_out),
    or None (with a note) when the catalyzer package is not installed. Once per run for a data
    set and settings (`ctx.memo`), so Tables 3 and 5 share the model when their settings agree."""
    from ccst.baselines import catalyst_compress

    p = prefixed_params(ctx, "catalyst", dataset)
    p.pop("datasets", None)
    p.pop("pq_bytes", None)

    def train():
        with threads(ctx.threads), Timer() as t:
            out = catalyst_compress(ds.xb, xq, d_out, ctx.seed, p)
        ctx.note(
            f"{dataset} ({ds.name}): Catalyst {ds.d} -> {d_out} dims (catalyzer package, trained "
            f"on the database, its last {p.get('n_val')} vectors held out for validation; "
            f"{', '.join(f'{key}={v}' for key, v in sorted(p.items()))}) in {t.s:.1f} s"
        )
        return out

    key = ("ccst.catalyst", ds.name, int(d_out), ctx.seed, len(xq), repr(sorted(p.items())))
    try:
        return ctx.memo(key, train)  # a failed import is not memoised: noted by each table
    except ModuleNotFoundError as e:
        if e.name != "catalyzer":
            raise
        ctx.note(
            f"{dataset}: Catalyst rows not measured: catalyzer not installed "
            "(pip install 'annrepro-ccst[catalyst]')"
        )
        return None


def catalyst_rows(ctx, dataset: str, ds, xq, gt, d_out: int, k: int) -> list[dict]:
    """Table 5 'Catalyst' rows: the catalyzer package (optional dependency) trained on the
    database to d_out, on the data sets of catalyst_datasets only (Table 5: Deep1M)."""
    if dataset not in ctx.params.get("catalyst_datasets", ()):
        return []
    out = catalyze(ctx, dataset, ds, xq, d_out)
    if out is None:
        return []
    return compressed_search_rows(ctx, "Catalyst", dataset, *out, gt, ds.metric, k)


def csst_rows(ctx, dataset: str, ds, xq, gt, cf: int, k: int) -> list[dict]:
    """Table 5 'CSST' rows: the run's CSST model of factor cf (`train_ccst`)."""
    model = train_ccst(ctx, dataset, ds, cf)
    with threads(ctx.threads):
        xb_c, xq_c = model.transform(ds.xb), model.transform(xq)
    return compressed_search_rows(ctx, "CSST", dataset, xb_c, xq_c, gt, ds.metric, k)
