"""Producers of the CCST tables (paper_tables/ccst/table{1..5}), registered with annrepro, in
the paper's order.

Tables 1, 2, 4: HNSW / NSG (and HNSW + 8-bit scalar quantization) built on the original features
or on CSST-compressed ones, always searched with the full-dimensional vectors (Sec. 4.2).
Table 3: IVFADC and Link & Code (ccst.linkcode) on original and CSST-compressed features.
Table 5: SRP, MLP, VAE, Catalyst and CSST, searched in the compressed space.

Specs and published numbers: `paper_tables/ccst/*.{toml,csv}`; the data sets are the spec's
(`ctx.each_dataset`: a stand-in missing on this machine is skipped with a note). How each index
is built, searched and scored, how CSST is trained and shared by the tables of a run, and the
compressors of Table 5 are in `ccst.experiments`. Rows not returned show as "not measured".
"""

from __future__ import annotations

from annrepro.ladder import register_ladder
from annrepro.tables import register

from ccst._indexes import build_hnsw_sq8, build_hnsw_sq8_built_on
from ccst.experiments import (
    billion_row,
    catalyst_pq_rows,
    catalyst_rows,
    comp_row,
    compress,
    compress_measured,
    compress_train_and_base,
    compressed_database,
    csst_factors,
    csst_rows,
    hnsw_row,
    ivfadc_row,
    learned_baseline_rows,
    linkcode_row,
    nsg_row,
    pq_m,
    queries,
    sq8_row,
    srp_rows,
    train_ccst,
)


@register("ccst.table1")
def table1(spec, ctx) -> list[dict]:
    """Table 1: HNSW and NSG built on the original features (cf=1) or on CSST features compressed
    by each factor of `compression_factors` (2, 4), always searched with the full-dimensional
    vectors (Sec. 4.2).

    Columns build_s (IND: graph construction plus filling the full-dimensional storage, built
    with ctx.threads threads; compression excluded, as in the paper), qps (SS, one search thread,
    k=100), 1-recall@1, 1-recall@10, 100-recall@100; 'Comp cf=k' rows: compress_s, the time to
    compress the database with the trained CSST (ctx.threads CPU threads here, one GPU in the
    paper) and gpu_mem_gb, the peak GPU memory of the compression when CSST runs on a GPU
    (ccst_device = "cuda"; not measured on the CPU). Units as annrepro.tables.spec.MEASURED_UNITS:
    seconds, q/s, fractions for the "%" columns, bytes for gpu_mem_gb; the runner converts.
    """
    rows = []
    for dataset, ds in ctx.each_dataset():
        ctx.log.info("%s -> %s", dataset, ds.describe())
        rows.append(hnsw_row(ctx, dataset, ds, "HNSW cf=1"))
        rows.append(nsg_row(ctx, dataset, ds, "NSG cf=1"))
        for cf in csst_factors(ctx, dataset, ds, "compression_factors"):
            model = train_ccst(ctx, dataset, ds, cf)
            xb_c, compress_s, gpu_bytes = compress_measured(ctx, model, ds.xb, source=ds)
            rows.append(comp_row(dataset, cf, "compress_s", compress_s, gpu_bytes))
            rows.append(hnsw_row(ctx, dataset, ds, f"HNSW cf={cf}", xg=xb_c))
            rows.append(nsg_row(ctx, dataset, ds, f"NSG cf={cf}", xg=xb_c))
    return rows


@register("ccst.table2")
def table2(spec, ctx) -> list[dict]:
    """Table 2 on Bigann-1B: HNSW built on the original features (cf=1) or on CSST features
    compressed by `compression_factor` (2), searched with the full-dimensional vectors
    (Sec. 4.2); indexing time and 1-recall@1, and the compression time ('Comp cf=2').

    build_h and compress_h are returned in seconds (the runner converts to the column's unit,
    hours). The paper does not name the graph index of Table 2; we use HNSW with the Sec. 4.2
    settings. The base may be a uint8 memory map larger than memory (full scale): it is
    compressed in batches under ccst_compress_mb into a float32 array, kept in memory up to
    compress_in_memory_mb and otherwise memory-mapped in a temporary file; faiss reads both in
    chunks. CSST is trained on the first ccst_train_rows database vectors.
    """
    rows = []
    for dataset, ds in ctx.each_dataset():
        ctx.log.info("%s -> %s", dataset, ds.describe())
        rows.append(billion_row(hnsw_row(ctx, dataset, ds, "HNSW cf=1")))
        for cf in csst_factors(ctx, dataset, ds, "compression_factor"):
            model = train_ccst(ctx, dataset, ds, cf)
            with compressed_database(ctx, model, ds.nb) as out:
                xb_c, compress_s, gpu_bytes = compress_measured(
                    ctx, model, ds.xb, out=out, source=ds
                )
                rows.append(comp_row(dataset, cf, "compress_h", compress_s, gpu_bytes))
                rows.append(billion_row(hnsw_row(ctx, dataset, ds, f"HNSW cf={cf}", xg=xb_c)))
    return rows


@register("ccst.table3")
def table3(spec, ctx) -> list[dict]:
    """Table 3: IVFADC with nlist=8 (8-bit codes) and Link & Code (coder M=8, ccst.linkcode) at
    the paper's byte budgets, on the original features ('PQ', 'L&C') and on CSST features
    compressed by `pq_compression_factor` ('CSST+PQ', 'CSST+L&C'; the paper does not give the
    factor: 4 as in Tables 4 and 5, our choice); 'Catalyst+PQ' on catalyst_datasets.

    Columns qps (one search thread, k=50), 1-recall@1, 1-recall@5, 1-recall@50, always against
    the exact neighbours of the original space. CSST rows compress the queries before the timed
    search (the paper does not say its speeds include query compression). Where the (compressed)
    d is not divisible by the byte budget, the nearest divisor of d is used as the number of
    sub-quantizers and the row keeps the paper's budget in its name (ctx.note says so). L&C's
    budget counts its PQ code; its 8 regression bytes come on top (ccst.linkcode).
    """
    rows = []
    for dataset, ds in ctx.each_dataset():
        ctx.log.info("%s -> %s", dataset, ds.describe())
        xq, gt = queries(ctx, ds, 50)
        spaces = [("", ds.xt, ds.xb, xq)]  # (row prefix, training set, database, queries)
        for cf in csst_factors(ctx, dataset, ds, "pq_compression_factor"):
            model = train_ccst(ctx, dataset, ds, cf)
            xt_c, xb_c = compress_train_and_base(ctx, model, ds)
            spaces.append(("CSST+", xt_c, xb_c, compress(ctx, model, xq)))
        for nbytes in ctx.param("pq_bytes", dataset):
            for prefix, xt, xb, xq_s in spaces:
                m = pq_m(ctx, dataset, ds, xb.shape[1], int(nbytes), f"{prefix}PQ")
                rows.append(ivfadc_row(ctx, dataset, f"{prefix}PQ {nbytes}B", xt, xb, xq_s, gt, m))
                if ctx.params.get("lc_beta_nsq"):
                    row = f"{prefix}L&C {nbytes}B"
                    rows.append(linkcode_row(ctx, dataset, row, xt, xb, xq_s, gt, m))
        if dataset in ctx.params.get("catalyst_datasets", ()):
            rows += catalyst_pq_rows(ctx, dataset, ds, xq, gt)
    return rows


@register("ccst.table4")
def table4(spec, ctx) -> list[dict]:
    """Table 4: HNSW with and without 8-bit scalar quantization (faiss IndexHNSWSQ, QT_8bit),
    each with the graph built on the original features or on CSST features compressed by
    `compression_factor` (4) and searched with the full-dimensional vectors (Sec. 4.2, 4.4).

    Columns build_s (training of the scalar quantizers included, compression excluded as in
    Table 1, whose 'HNSW cf=4' row Table 4 repeats), 1-recall@1, 1-recall@10, 100-recall@100.
    'CSST+HNSW+SQ8': the graph is built over the SQ8 codes of the compressed vectors and searched
    over the SQ8 codes of the full vectors (the 'HNSW+SQ8' search side; see
    ccst._indexes.build_hnsw_sq8_built_on).
    """
    rows = []
    for dataset, ds in ctx.each_dataset():
        ctx.log.info("%s -> %s", dataset, ds.describe())
        rows.append(hnsw_row(ctx, dataset, ds, "HNSW", qps=False))
        rows.append(sq8_row(ctx, dataset, ds, "HNSW+SQ8", build_hnsw_sq8, ds.xt, ds.xb))
        for cf in csst_factors(ctx, dataset, ds, "compression_factor"):
            model = train_ccst(ctx, dataset, ds, cf)
            xt_c, xb_c = compress_train_and_base(ctx, model, ds)
            rows.append(hnsw_row(ctx, dataset, ds, "CSST+HNSW", xg=xb_c, qps=False))
            sq8 = (build_hnsw_sq8_built_on, xt_c, xb_c, ds.xt, ds.xb)
            rows.append(sq8_row(ctx, dataset, ds, "CSST+HNSW+SQ8", *sq8))
    return rows


@register("ccst.table5")
def table5(spec, ctx) -> list[dict]:
    """Table 5: SRP, MLP, VAE, Catalyst and CSST to d / compression_factor, then HNSW and
    exhaustive search in the compressed space, scored against the original-space ground truth
    (1-recall@1, @5, @10).

    SRP: one sparse random projection (Eq. 2). MLP and VAE: `ccst.baselines` (architectures our
    choice; the MLP trained with the INRP loss like CSST). Catalyst: the catalyzer package, if
    installed, on catalyst_datasets (Deep1M). CSST: a trained CCST (Sec. 3).
    """
    rows = []
    k = 10
    cf = int(ctx.params["compression_factor"])
    for dataset, ds in ctx.each_dataset():
        ctx.log.info("%s -> %s", dataset, ds.describe())
        xq, gt = queries(ctx, ds, k)
        d_out = max(1, ds.d // cf)
        rows += srp_rows(ctx, dataset, ds, xq, gt, d_out, k)
        if ds.d % cf != 0:
            ctx.note(
                f"{dataset} ({ds.name}): no MLP, VAE, Catalyst or CSST rows, factor {cf} does "
                f"not divide d={ds.d}"
            )
            continue
        for name in ("MLP", "VAE"):
            rows += learned_baseline_rows(ctx, name, dataset, ds, xq, gt, cf, k)
        rows += catalyst_rows(ctx, dataset, ds, xq, gt, d_out, k)
        rows += csst_rows(ctx, dataset, ds, xq, gt, cf, k)
    return rows


register_ladder("ccst")  # ccst.ladder: paper_tables/ccst/ladder.toml
