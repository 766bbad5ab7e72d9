"""Producers of the catalyzer paper's tables (Sablayrolles et al., ICLR 2019), registered with
annrepro, in the paper's order: Figure 5 and Table 1 (Sec. 5.3), Table 2 (Sec. 5.4), Table 3
(Appendix A), then the numbers of the text (Sec. 3.3, 5.3, Appendix B; Figures 3 and 7).

Specs and published numbers: `paper_tables/catalyzer/*.{toml,csv}`; the data sets are the spec's
(`ctx.each_dataset`). How each method is trained, encoded, searched and scored, and how the
catalyzers are shared between tables and runs (`cache.fit_cached`), is in
`catalyzer.experiments`; the plots in `catalyzer.figures`; the text's statistics in
`catalyzer.analysis`. The only files producers write are the figures' artifacts
(`ctx.artifact`).
"""

from __future__ import annotations

from annrepro.ladder import register_ladder
from annrepro.tables import register

from .analysis import lattice_arithmetic_rows, uniformity_rows
from .experiments import (
    binary_rows,
    binary_seed_counts,
    cross_validate_lambda,
    encode_speedup_row,
    lattice_catalyzer,
    lattice_points,
    note_catalyzers,
    opq_points,
    table1_rows,
    timing_rows,
)
from .figures import write_figure3, write_figure5
from .lattice import ZnSphereLattice


@register("catalyzer.figure5")
def figure5(spec, ctx):
    """Figure 5 (Sec. 5.3): 1-recall@10 vs code size of the lattice on catalyzed features (one
    curve per d_out, lambda = Table 3's published optimum, over the radii r2) and of OPQ. Writes
    figure5.csv and figure5.png (one panel per data set, as the paper's Deep1M / BigAnn1M)."""
    points = []
    for name, ds in ctx.each_dataset():
        gt = ds.gt(10)
        points += lattice_points(ctx, name, ds, gt) + opq_points(ctx, name, ds, gt)
    write_figure5(ctx, points)
    note_catalyzers(ctx)
    return [pt.table_row() for pt in points]


@register("catalyzer.table1")
def table1(spec, ctx):
    """Table 1 (Sec. 5.3, 5.4): OPQ, LSQ, PCA + Lattice and the catalyst rows (Catalyst+OPQ,
    Catalyst+Lattice, Catalyst+Lattice+end2end) at 64 bits: 1-recall@1/10/100 and the time to
    encode the base (catalyst rows: the forward pass included)."""
    lattice = ZnSphereLattice(int(ctx.params["d_out"]), int(ctx.params["r2"]))
    ctx.note(
        f"PCA+Lattice: S_{lattice.d} with r^2 = {lattice.r2} has {lattice.nv} points = "
        f"{lattice.code_bits:.2f} bits, stored in {lattice.code_size_bits}-bit codes"
    )
    rows = []
    for name, ds in ctx.each_dataset():
        rows += table1_rows(ctx, name, ds)
    note_catalyzers(ctx)
    return rows


@register("catalyzer.table2")
def table2(spec, ctx):
    """Table 2 (Sec. 5.4): LSH, ITQ and Catalyzer+sign binary codes of 16 to 128 bits, Hamming
    search, 1-recall@10 averaged over 5 seeds (mean and sample std)."""
    n_seeds, cat_n_seeds = binary_seed_counts(ctx)
    rows = []
    for name, ds in ctx.each_dataset():
        rows += binary_rows(ctx, name, ds, n_seeds, cat_n_seeds)
    ctx.note(
        f"Table 2: mean and sample std (ddof 1) over {n_seeds} seeds (ctx.seed + 0..{n_seeds - 1})"
    )
    if cat_n_seeds != n_seeds and "Catalyzer+sign" in ctx.params["methods"]:
        ctx.note(
            f"Table 2: Catalyzer+sign rows over {cat_n_seeds} seed(s) only (cat_n_seeds; one "
            f"trained network per seed and code size), the baselines over {n_seeds}"
        )
    note_catalyzers(ctx)
    return rows


@register("catalyzer.table3")
def table3(spec, ctx):
    """Table 3 (Appendix A): per d_out, the lambda maximising the validation 1-recall@10 of the
    lattice search with squared radius r2 (grid search, as the authors' crossvalidate.sh)."""
    r2 = int(ctx.params["r2"])
    rows = []
    for name, ds in ctx.each_dataset():
        for d_out in ctx.progress(ctx.params["d_outs"], desc=name):
            best = cross_validate_lambda(ctx, name, ds, int(d_out), r2)
            rows.append({"dataset": name, "row": f"d_out={int(d_out)}", "lambda": best})
    note_catalyzers(ctx)
    return rows


@register("catalyzer.text")
def text(spec, ctx):
    """Numbers of the text (paper_tables/catalyzer/text.toml): Appendix B's lattice arithmetic;
    the encoding of 1M vectors, lattice vs PQ (Appendix B), and 1M asymmetric distances (Sec.
    5.3); Sec. 3.3's uniformity statistic and Figure 7's range search in the input space and
    after Table 1's Catalyst+Lattice catalyzer, with Figure 3's histograms (figure3.csv /
    figure3.png); Sec. 5.3's encoding speed-up of Catalyst+Lattice over LSQ."""
    rows = lattice_arithmetic_rows(ctx.params) + timing_rows(ctx)
    hist = []
    for name, ds in ctx.each_dataset(ctx.param("datasets")):
        space_rows, space_hist = uniformity_rows(ctx, name, ds, lattice_catalyzer(ctx, ds))
        rows += space_rows
        hist += space_hist
    write_figure3(ctx, hist, int(ctx.params["n_rank"]))
    for name, ds in ctx.each_dataset(ctx.param("speedup_datasets")):
        rows.append(encode_speedup_row(ctx, name, ds))
    note_catalyzers(ctx)
    return rows


register_ladder("catalyzer")  # catalyzer.ladder: paper_tables/catalyzer/ladder.toml
