"""Diagnostic: what do KDindex's distillation epochs add to its warm start? (not a test)

Issue 13's epochs ladder is flat at small, and on every rung the trainer keeps the initialised
student ("best epoch -1"). This script separates the parts of the margin "KDindex minus its
faiss student" on one stand-in (default sift-10K, PQ 8 x 256, L2; the ladder's settings):

- the warm start alone (faiss PQ on `n_warm` base documents, no initialisation round, no
  epochs), with balanced (Algorithm 1) or nearest index codes;
- the full trainer (one initialisation round, `--epochs` differentiable epochs, patience off),
  balanced index codes (the paper's final index, `TrainConfig.balance_index`) or nearest;
- variants of the differentiable epochs with nearest codes: no distillation loss (Table 5's
  "w/o Distillation": reconstruction only), the other two losses of Table 8, lr 0.1 and
  0.001 (Sec. 4.1 says 0.01), the reconstruction weighted 100x (the paper gives no weight).

- two more readings of what the paper leaves open: the reconstruction weighted 1000x, and the
  softmax temperature of Eq. 6 at 1 x the score spread instead of 0.1 x (`TrainConfig.temperature`).

Per variant: the validation recall the trainer measured before its first epoch and after each
(the teacher's top-10 of held-out training queries, on the codes the index stores), the epoch
kept, the 10-recall@10 of the exhaustive search (the ladder's measure) on the data set's test
queries (100 on sift-10K) and on `--n-extra` held-out learn vectors (the last ones, never
training queries: a tighter interval), the 10-recall@10 of the same held-out queries through the
posting lists (the paper's search, Sec. 3.4: the `--nprobe` best lists of each codebook (default 2:
Table 2's 16 of 256 equals the exhaustive search on the small stand-ins), ranked
by the asymmetric distance) with the mean number of documents scored, how far the codebooks
collapsed (`collapse_stats`: the median over codebooks of the share of those queries whose
best codeword by Eq. 6's score is the codebook's most popular one, 1/W when spread, 1 when all
agree; and the base's relative reconstruction error), and the wall time.
The faiss student trained on the learn set (the ladder's baseline) is the first row: PQ8np for
`--kind PQ`, OPQ8_d',PQ8np for OPQ, RQ8x8 for AQ (kdindex.ladder's baseline of KDindex (AQ), for
the GloVe inner-product stand-in, whose 100 dimensions PQ8 cannot split).
Training queries: the first `--ntrain` learn vectors labelled with their exact top-10 (the
ladder's KDindex labels them with its HNSW teacher's top-10, M 32, efSearch 100: nearly the
same lists on these bases, not always the same).

    python benchmarks/kdindex_distillation.py [--dataset sift-10K] [--kind PQ|OPQ|AQ]
        [--epochs 3] [--ntrain 10000] [--threads 1] [--out DIR] [--quick]
        [--variants NAME ...]
    # kdindex.ladder's documents ladder (KDindex (AQ) minus RQ8x8, its 100k rung):
    python benchmarks/kdindex_distillation.py --dataset glove100-ip-100K --kind AQ --epochs 2

`--out DIR` writes kdindex_distillation.csv and .json (settings, threads, commit, versions,
wall time) atomically. `--quick`: three variants, one epoch (a smoke run). Figures from this
script are quoted in docs/STATUS.md with the commit and thread count that produced them.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import platform
import time
from pathlib import Path

import numpy as np

# name -> (TrainConfig overrides): the differentiable epochs' budget is --epochs unless set
VARIANTS = {
    "warm start only, balanced codes": {"epochs": 0, "init_max_rounds": 0},
    "warm start only, nearest codes": {
        "epochs": 0,
        "init_max_rounds": 0,
        "balance_index": False,
        "val_codes": "nearest",
    },
    "trainer, balanced codes (paper's index)": {},
    "trainer, nearest codes": {"balance_index": False, "val_codes": "nearest"},
    "nearest, w/o distillation loss": {
        "balance_index": False,
        "val_codes": "nearest",
        "distill_weight": 0.0,
    },
    "nearest, weighted KL loss": {
        "balance_index": False,
        "val_codes": "nearest",
        "loss": "weighted_kl",
    },
    "nearest, lambdarank loss": {
        "balance_index": False,
        "val_codes": "nearest",
        "loss": "lambdarank",
    },
    "nearest, lr 0.1": {"balance_index": False, "val_codes": "nearest", "lr": 0.1},
    "nearest, lr 0.001": {"balance_index": False, "val_codes": "nearest", "lr": 0.001},
    "nearest, reconstruction x100": {
        "balance_index": False,
        "val_codes": "nearest",
        "rec_weight": 100.0,
    },
    "nearest, reconstruction x1000": {
        "balance_index": False,
        "val_codes": "nearest",
        "rec_weight": 1000.0,
    },
    "nearest, temperature 1 (softer Eq. 6)": {
        "balance_index": False,
        "val_codes": "nearest",
        "temperature": 1.0,
    },
}
QUICK = (
    "warm start only, nearest codes",
    "trainer, nearest codes",
    "nearest, w/o distillation loss",
)


def collapse_stats(index, xs: np.ndarray, xb: np.ndarray, metric: str) -> dict:
    """How far a KDIndex's codebooks collapsed (the trivial solution of Sec. 3.4): the share of
    the queries xs whose best codeword by the metric's score S(q, c) (Eq. 6's, per codebook) is
    the codebook's most popular one, the median over codebooks ("top codeword share": 1/W when
    spread, 1 when every query prefers one codeword), and the base's relative reconstruction
    error sum ||x - Q(x)||^2 / sum ||x||^2 on the stored codes."""
    from kdindex.student import lookup_tables

    q = index.quantizer
    xt = q.transform(np.ascontiguousarray(xs, dtype=np.float32))
    lut = lookup_tables(q, xt)  # (n, B, W) inner products, per subspace for PQ / OPQ
    if metric == "l2":  # argmax of -||x_b - c||^2 = 2 <x_b, c> - ||c||^2 + const
        lut = 2 * lut - (q.codebooks**2).sum(-1)[None]
    best = lut.argmax(-1)  # (n, B)
    share = [np.bincount(best[:, b], minlength=q.W).max() / len(xs) for b in range(q.B)]
    xr = q.decode(index.codes)
    err = float(((xb - xr) ** 2).sum() / (xb.astype(np.float64) ** 2).sum())
    return {"top codeword share": round(float(np.median(share)), 3), "recon error": round(err, 3)}


def baseline_index(kind: str, d: int, B: int, W: int, metric: str):
    """The ladders' faiss baseline for a KDindex of `kind` (untrained, and its factory name):
    PQ{B}np (needs d divisible by B), OPQ{B}_{d'},PQ{B}np (d' = d rounded up to a multiple of
    B) or, for AQ, RQ{B}x{log2 W} (kdindex.ladder's baseline of KDindex (AQ); any d). A bad
    combination is a ValueError with one line."""
    import faiss

    nbits = int(np.log2(W))
    fm = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    if kind == "PQ":
        if d % B:
            raise ValueError(
                f"dimension {d} is not a multiple of B = {B}: the PQ{B}np baseline row needs one; "
                f"use --kind AQ (baseline RQ{B}x{nbits}) or another --dataset"
            )
        name = f"PQ{B}np"
    elif kind == "OPQ":
        name = f"OPQ{B}_{-(-d // B) * B},PQ{B}np"
    elif kind == "AQ":
        name = f"RQ{B}x{nbits}"
    else:
        raise ValueError(f"unknown kind {kind!r}: PQ, OPQ or AQ")
    return faiss.index_factory(d, name, fm), name


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="sift-10K")
    p.add_argument("--kind", default="PQ", choices=("PQ", "OPQ", "AQ"))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--ntrain", type=int, default=10000)
    p.add_argument("--n-warm", type=int, default=5000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nprobe", type=int, default=2, help="posting lists per codebook; 0: none")
    p.add_argument("--n-extra", type=int, default=5000, help="held-out learn vectors as queries")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--aq-beam", type=int, default=1, help="AQ warm start's beam (ladder: 1)")
    p.add_argument("--aq-refine", action="store_true", help="AQ warm start's refinement (off)")
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--variants", nargs="+", metavar="NAME", help="run only these rows (names as printed)"
    )
    args = p.parse_args(argv)
    if args.variants:
        unknown = [v for v in args.variants if v not in VARIANTS]
        if unknown:
            raise SystemExit(f"--variants: unknown {unknown}; known: {list(VARIANTS)}")

    import faiss
    import torch
    from annrepro.atomic import atomic_write_text
    from annrepro.datasets import get_dataset
    from annrepro.errors import AnnreproError
    from annrepro.groundtruth import knn_exact
    from annrepro.metrics import n_recall_at
    from annrepro.tables.runner import _git_commit  # the commit stamp the tables' provenance uses
    from kdindex.api import KDIndex

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    print(f"threads: torch {torch.get_num_threads()}, faiss {faiss.omp_get_max_threads()}")
    try:
        ds = get_dataset(args.dataset)
    except AnnreproError as e:  # unknown name, missing or bad files: one line
        raise SystemExit(f"--dataset {args.dataset}: {e}") from None
    metric = ds.metric
    xb, xq = ds.xb, ds.xq
    xt = ds.xt[: args.ntrain]
    # a second, larger test set: the last learn vectors, not among the training queries
    n_extra = min(args.n_extra, max(0, len(ds.xt) - args.ntrain))
    xe = ds.xt[len(ds.xt) - n_extra :]
    _, gt = knn_exact(xq, xb, 10, metric)
    _, gte = knn_exact(xe, xb, 10, metric) if n_extra else (None, None)
    _, labels = knn_exact(xt, xb, 10, metric)
    B, W = 8, 256
    print(
        f"{ds.name}: base {xb.shape}, {len(xt)} training queries, {len(xq)} test queries and "
        f"{n_extra} held-out learn vectors as queries, {metric}"
    )

    def recalls(index) -> dict:
        out = {"recall@10": round(100 * n_recall_at(index.search(xq, 10)[1], gt, 10, 10), 2)}
        if n_extra:
            r = n_recall_at(index.search(xe, 10)[1], gte, 10, 10)
            out["recall@10 held-out learn"] = round(100 * r, 2)
        if isinstance(index, KDIndex) and args.nprobe:  # the paper's search: posting lists
            qs, g = (xe, gte) if n_extra else (xq, gt)
            _, I, ncand = index.search(qs, 10, nprobe=args.nprobe, return_ncand=True)
            out[f"recall@10 lists nprobe {args.nprobe}"] = round(100 * n_recall_at(I, g, 10, 10), 2)
            out["candidates per query"] = int(round(float(ncand.mean())))
        return out

    rows = []
    list_cols = {f"recall@10 lists nprobe {args.nprobe}": "", "candidates per query": ""}
    t0 = time.perf_counter()
    try:
        base, base_name = baseline_index(args.kind, xb.shape[1], B, W, metric)
    except ValueError as e:
        raise SystemExit(f"{ds.name}: {e}") from None
    base.train(xt)
    base.add(xb)
    rows.append(
        {
            "variant": f"faiss {base_name} on the learn set (the ladder's baseline)",
            "val_init": "",
            "val_best": "",
            "best_epoch": "",
            "val_curve": "",
            **recalls(base),
            **(list_cols if args.nprobe else {}),
            "top codeword share": "",
            "recon error": "",
            "wall_s": round(time.perf_counter() - t0, 1),
        }
    )
    print(
        f"{rows[-1]['variant']}: 10-recall@10 {rows[-1]['recall@10']} (test), "
        f"{rows[-1].get('recall@10 held-out learn', '-')} (held-out learn)"
    )
    names = tuple(args.variants) if args.variants else QUICK if args.quick else tuple(VARIANTS)
    epochs = 1 if args.quick else args.epochs
    for name in names:
        over = {"epochs": epochs, **VARIANTS[name]}
        t0 = time.perf_counter()
        kd = KDIndex(
            args.kind,
            metric,
            B,
            W,
            10,
            n_warm=args.n_warm,
            patience=max(10, epochs),
            init_max_rounds=over.pop("init_max_rounds", 1),
            seed=args.seed,
            progress=False,
            **over,
            **({"aq_beam": args.aq_beam, "aq_refine": args.aq_refine} if args.kind == "AQ" else {}),
        )
        kd.fit(xb, xt, labels=labels)
        vals = [c["val_recall"] for c in kd.result.curve if c["phase"] == "diff"]
        rows.append(
            {
                "variant": name,
                "val_init": round(100 * vals[0], 2),
                "val_best": round(100 * kd.result.best_val_recall, 2),
                "best_epoch": kd.result.best_epoch,
                "val_curve": " ".join(f"{100 * v:.2f}" for v in vals),
                **recalls(kd),
                **collapse_stats(kd, xe if n_extra else xq, xb, metric),
                "wall_s": round(time.perf_counter() - t0, 1),
            }
        )
        print(
            f"{name}: validation {rows[-1]['val_curve']} (epoch -1 first), kept epoch "
            f"{rows[-1]['best_epoch']}; 10-recall@10 {rows[-1]['recall@10']} (test), "
            f"{rows[-1].get('recall@10 held-out learn', '-')} (held-out learn), "
            f"top codeword share {rows[-1]['top codeword share']}, reconstruction error "
            f"{rows[-1]['recon error']}, {rows[-1]['wall_s']} s"
        )
        if args.nprobe:
            key = f"recall@10 lists nprobe {args.nprobe}"
            print(f"    posting lists: {rows[-1][key]} ({rows[-1]['candidates per query']} scored)")
    if args.out:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "kdindex_distillation.csv", buf.getvalue())
        prov = {
            "settings": {k: str(v) for k, v in vars(args).items()},
            "B": B,
            "W": W,
            "threads": {"torch": torch.get_num_threads(), "faiss": faiss.omp_get_max_threads()},
            "git_commit": _git_commit(),
            "versions": {
                "python": platform.python_version(),
                "numpy": np.__version__,
                "torch": torch.__version__,
                "faiss": faiss.__version__,
            },
            "cpu": platform.processor() or platform.machine(),
            "wall_s": round(sum(r["wall_s"] for r in rows), 1),
        }
        atomic_write_text(args.out / "kdindex_distillation.json", json.dumps(prov, indent=2) + "\n")
        print(f"wrote {args.out / 'kdindex_distillation.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
