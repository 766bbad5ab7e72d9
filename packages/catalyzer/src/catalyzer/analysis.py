"""Analyses behind the catalyzer paper's text: the uniformity statistic of Sec. 3.3, Figure 7's
range search (Appendix C) in the input and catalyzed spaces, and Appendix B's lattice arithmetic.
"""

from __future__ import annotations

import numpy as np
from annrepro.validate import as_f32

from .lattice import ZnSphereLattice, atom_permutations, atom_sign_bits


def nn_overlap_probability(d1: np.ndarray, dn: np.ndarray) -> float:
    """P(d1[i] > dn[j]) over ordered pairs i != j (Sec. 3.3).

    Args:
        d1: float (n,) distance of each point to its nearest neighbour.
        dn: float (n,) distance of each point to its n-th nearest neighbour (dn >= d1).
    Returns:
        the fraction of pairs (i, j), i != j, where point i's nearest neighbour is farther than
        point j's n-th neighbour (0 for a perfectly uniform space, 50% for a very imbalanced one).
    """
    d1 = np.asarray(d1, dtype=np.float64)
    dn = np.asarray(dn, dtype=np.float64)
    n = d1.shape[0]
    if n < 2:
        raise ValueError("need at least two points")
    count = np.searchsorted(np.sort(dn), d1, side="left").astype(np.int64)
    count -= (dn < d1).astype(np.int64)  # never true when dn >= d1; kept for safety (i == j)
    return float(count.sum() / (n * (n - 1)))


def range_search_at_recall(xq, xb, nn: np.ndarray, target_recall: float) -> tuple[float, float]:
    """Figure 7 (Appendix C): radius reaching `target_recall` of nearest neighbours, and results.

    Appendix C measures the recall "in terms of the nearest neighbors in the original space": in
    the catalyzed space too, a query's hit is its ORIGINAL-space nearest neighbour, so `nn` comes
    from the input space whichever space xq / xb are in.

    Args:
        xq: float32 (nq, d) queries; xb: float32 (nb, d) base (input or catalyzed space).
        nn: int (nq,) id in xb of each query's true nearest neighbour in the original space.
        target_recall: fraction of queries whose nearest neighbour must be within the radius.
    Returns:
        (epsilon, mean number of base vectors within epsilon per query), epsilon an L2 distance
        (not squared) in the space of xq / xb.
    """
    import faiss

    xq, xb = as_f32(xq), as_f32(xb)
    nn = np.asarray(nn, dtype=np.int64).ravel()
    if nn.shape[0] != xq.shape[0]:
        raise ValueError(f"nn has {nn.shape[0]} ids for {xq.shape[0]} queries")
    d1 = np.linalg.norm(xq.astype(np.float64) - xb[nn].astype(np.float64), axis=1)
    # smallest radius whose ball holds the nearest neighbour of >= target_recall of the queries
    eps = float(np.quantile(d1, target_recall, method="inverted_cdf"))
    index = faiss.IndexFlatL2(xb.shape[1])
    index.add(xb)
    # faiss keeps dis < radius, computed in float32: a relative 1e-5 slack keeps the neighbours
    # at exactly epsilon (among them the nearest neighbour of the query at the quantile)
    radius = eps * eps * (1 + 1e-5)
    lims, _, _ = index.range_search(xq, radius)
    return eps, float(np.diff(lims).mean())


def _space_row(name: str, space: str, xq, xb, D, nn, target_recall: float) -> tuple[dict, tuple]:
    """The row of one space (Sec. 3.3 statistic on its own neighbours' distances D, float
    (nq, n_rank) squared L2; Figure 7 on the original-space neighbours nn) and its distances to
    the 1st and n_rank-th neighbours (nq,) for Figure 3."""
    dist = np.sqrt(np.maximum(D, 0))
    d1, dn = dist[:, 0], dist[:, -1]
    eps, nres = range_search_at_recall(xq, xb, nn, target_recall)
    row = {
        "dataset": name,
        "row": space,
        "p_nn1_gt_nn100": nn_overlap_probability(d1, dn),
        "epsilon": eps,
        "results_per_query": nres,
    }
    return row, (d1, dn)


def uniformity_rows(ctx, name: str, ds, cat) -> tuple[list[dict], list[tuple]]:
    """Sec. 3.3 and Figure 7 on one data set, in the input space and after the catalyzer `cat`
    (anything with `transform(x) -> float32 (n, d_out)`): P(NN1 of a query farther than the
    NN<n_rank> of another), and the range-search radius reaching target_recall of the
    ORIGINAL-space nearest neighbours with its mean number of results (Appendix C).

    Returns:
        (rows "input space" and "Catalyzer output", Figure 3's histograms: (paper name,
        stand-in, space, d1 float (nq,), d_{n_rank} float (nq,)) per space).
    """
    from annrepro.groundtruth import knn_exact

    n_rank, target = int(ctx.params["n_rank"]), float(ctx.params["target_recall"])
    ctx.log.info("%s: %s", name, ds.describe())
    if ds.metric != "l2":
        raise ValueError(f"{name}: the Sec. 3.3 statistic is defined for L2 data")
    xq, xb = as_f32(ds.xq), ds.xb
    D, I = knn_exact(xq, xb, n_rank, ds.metric)
    nn = I[:, 0]  # Appendix C: recall of the ORIGINAL-space nearest neighbour, both spaces
    row_in, hist_in = _space_row(name, "input space", xq, as_f32(xb), D, nn, target)
    ctx.note(
        f"{name}: Sec. 3.3 / Figure 7 statistics over the {ds.nq} queries of {ds.name} against "
        f"its {ds.nb} base vectors (results_per_query scales with the base size; the paper's "
        "base has 1M)"
    )
    yq, yb = cat.transform(xq), cat.transform(as_f32(xb))
    # Sec. 3.3 / Figure 3: neighbour distances of the output space itself; Figure 7: the radius
    # that finds the ORIGINAL nearest neighbour, measured in the catalyzed space
    D, _ = knn_exact(yq, yb, n_rank, "l2")
    row_out, hist_out = _space_row(name, "Catalyzer output", yq, yb, D, nn, target)
    ctx.note(
        f"{name}: 'Catalyzer output' = d_out {ctx.params['d_out']}, lambda {ctx.params['cat_lam']}"
        " (the paper states neither); Sec. 3.3 statistic on the output space's own "
        "neighbours; Figure 7's epsilon and results on the original-space nearest neighbours "
        "(Appendix C)"
    )
    hist = [
        (name, ds.name, "input space", *hist_in),
        (name, ds.name, "Catalyzer output", *hist_out),
    ]
    return [row_in, row_out], hist


def lattice_arithmetic_rows(p: dict) -> list[dict]:
    """Appendix B's arithmetic: the code size of S_{d_out} with squared radius r2 (ceil(log2
    #points)), and the permutations and sign bits of the example atom."""
    lattice = ZnSphereLattice(int(p["d_out"]), int(p["r2"]))
    atom = [int(a) for a in p["atom"]]
    atom_row = f"atom ({' '.join(map(str, atom))}) d={len(atom)} r2={sum(a * a for a in atom)}"
    return [
        {
            "dataset": "n/a",
            "row": f"Zn d={lattice.d} r2={lattice.r2}",
            "code_bits": lattice.code_size_bits,
        },
        {
            "dataset": "n/a",
            "row": atom_row,
            "n_permutations": atom_permutations(atom),
            "n_sign_bits": atom_sign_bits(atom),
        },
    ]
