"""Command line of the kdindex package.

    kdindex teacher --xb base.fvecs --xt learn.fvecs --out labels.npy [--metric l2 -K 10
                    --M 32 --ef-construction 40 --ef-search 100 --n-train 100000]
    kdindex train --xb base.fvecs --xt learn.fvecs --labels labels.npy --out index.npz
                  [--kind AQ --metric l2 -B 8 -W 256 -K 10 --lr 0.01 --batch-size 64
                   --balance-index/--no-balance-index --val-codes index --aq-beam 5 ...
                   --checkpoint-dir DIR]   (a checkpoint per round / epoch; a rerun resumes)
    kdindex search --index index.npz --xq query.fvecs --out I.npy [--k 10 --nprobe 16
                   --gt gt.ivecs]
    kdindex reproduce [OPTIONS]

`teacher` labels training queries with the top-K of an HNSW teacher (Sec. 3.1, Table 7);
`train` fits a KDindex on them (Algorithm 2, `kdindex.api.KDIndex`); `search` searches it
exhaustively or through nprobe posting lists per codebook (Sec. 3.4). `reproduce` runs the
KDindex tables through the annrepro runner: it is `annrepro reproduce --tables 'kdindex.*'
[OPTIONS]` (a later `--tables kdindex.table2` narrows the selection). Vector files: anything
`annrepro.vecio.read_vectors` reads (.fvecs, .bvecs, .ivecs, .npy, ...).
"""

from __future__ import annotations

import argparse
import logging
import sys

USAGE = """usage: kdindex {teacher,train,search,reproduce} ...

  teacher    label training queries with an HNSW teacher's top-K (Sec. 3.1, Table 7)
  train      fit a KDindex student on labelled training queries (Algorithm 2), save it
  search     search queries in a saved KDindex, save the ids (optionally score them)
  reproduce  `kdindex reproduce [OPTIONS]`: run the kdindex.* tables (OPTIONS as for
             `annrepro reproduce`, e.g.
             --scale tiny|small|full, --tables kdindex.table2, --seed 0, --threads 1)"""


def _parser() -> argparse.ArgumentParser:
    from annrepro.cli import ArgumentParser, positive_int

    ap = ArgumentParser(prog="kdindex")
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("teacher", help="label training queries with HNSW top-K")
    t.add_argument("--xb", required=True, help="base (document) vectors")
    t.add_argument("--xt", required=True, help="training queries")
    t.add_argument("--out", required=True, help="labels, int64 (nt, K): .npy or .ivecs")
    t.add_argument("--metric", default="l2", choices=["l2", "ip"])
    t.add_argument("-K", type=positive_int, default=10, help="neighbours per query (Sec. 4.1: 10)")
    t.add_argument("--M", type=positive_int, default=32, help="HNSW links (Table 7: 32)")
    t.add_argument("--ef-construction", type=positive_int, default=40, help="Table 7: 40 or 100")
    t.add_argument("--ef-search", type=positive_int, default=100, help="Table 7: 100 to 1024")
    t.add_argument(
        "--n-train", type=positive_int, default=None, help="first n training queries only"
    )
    t.add_argument("--seed", type=int, default=100, help="hnswlib level generator")
    t.add_argument("--threads", type=positive_int, default=None)
    f = sub.add_parser("train", help="fit a KDindex (Algorithm 2)")
    f.add_argument("--xb", required=True, help="base (document) vectors")
    f.add_argument("--xt", required=True, help="training queries (the rows the labels cover)")
    f.add_argument("--labels", required=True, help="teacher top-K ids, (nt, >= K)")
    f.add_argument("--out", required=True, help="index file (.npz)")
    f.add_argument("--kind", default="AQ", choices=["PQ", "OPQ", "AQ"])
    f.add_argument("--metric", default="l2", choices=["l2", "ip"])
    f.add_argument("-B", type=positive_int, default=8, help="codebooks (Sec. 4.1: 8)")
    f.add_argument(
        "-W", type=positive_int, default=256, help="codewords per codebook (Sec. 4.1: 256)"
    )
    f.add_argument(
        "-K", type=positive_int, default=10, help="teacher neighbours used (Sec. 4.1: 10)"
    )
    f.add_argument("--loss", default="distribution", help="distribution|weighted_kl|lambdarank")
    f.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (Sec. 4.1)")
    f.add_argument("--batch-size", type=positive_int, default=64, help="Sec. 4.1: 64")
    f.add_argument("--epochs", type=positive_int, default=20, help="differentiable epochs at most")
    f.add_argument("--patience", type=positive_int, default=3, help="early stopping patience")
    f.add_argument("--init-rounds", type=int, default=10, help="iterative init rounds at most")
    f.add_argument(
        "--n-warm", type=positive_int, default=100_000, help="documents for the faiss warm start"
    )
    f.add_argument(
        "--balance-index",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="store the balanced codes of Algorithm 1 (the paper's final index, Sec. 3.4; "
        "default) or, with --no-balance-index, the nearest codes of the learned codebooks",
    )
    f.add_argument(
        "--val-codes",
        default="index",
        choices=["index", "nearest"],
        help="codes early stopping measures: those the index stores (default) or nearest ones",
    )
    f.add_argument(
        "--aq-beam",
        type=positive_int,
        default=5,
        help="AQ: beam of the faiss warm start and the encoder",
    )
    f.add_argument(
        "--distill-weight",
        type=float,
        default=1.0,
        help="weight of the distillation loss (1: the paper's; 0: reconstruction only)",
    )
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--threads", type=positive_int, default=None)
    f.add_argument("--device", default="cpu", help="torch device of training: cpu, cuda[:N]")
    f.add_argument(
        "--checkpoint-dir",
        default=None,
        help="a checkpoint (last.pt) after every initialisation round and epoch; rerunning the "
        "same command resumes from it (the same index as an uninterrupted run)",
    )
    s = sub.add_parser("search", help="search a saved KDindex")
    s.add_argument("--index", required=True, help="index file written by `kdindex train`")
    s.add_argument("--xq", required=True, help="query vectors")
    s.add_argument("--out", required=True, help="ids, int64 (nq, k): .npy or .ivecs")
    s.add_argument("--k", type=positive_int, default=10)
    s.add_argument(
        "--nprobe", type=positive_int, default=None, help="lists per codebook (default: all)"
    )
    s.add_argument("--gt", default=None, help="exact neighbour ids: print recall@k")
    s.add_argument("--threads", type=positive_int, default=None)
    return ap


def _threads(args):
    """A context setting the threads (--threads, else ANNREPRO_THREADS / OMP_NUM_THREADS, else
    the cores) and saying how many."""
    from annrepro.cli import announce_threads
    from annrepro.threads import threads

    return threads(announce_threads(f"kdindex {args.command}", args.threads))


def _check_out(*paths) -> None:
    from annrepro.cli import check_outputs

    check_outputs(*paths)


def _teacher(args) -> int:
    from annrepro.errors import InputError
    from annrepro.validate import check_same_dim
    from annrepro.vecio import read_vectors, write_vectors

    from .teacher import HNSWTeacher

    _check_out(args.out)
    if args.K > args.ef_search:
        raise InputError(f"-K {args.K} exceeds --ef-search {args.ef_search}")
    xb = read_vectors(args.xb).astype("float32", copy=False)
    xt = read_vectors(args.xt, stop=args.n_train).astype("float32", copy=False)
    check_same_dim(base=xb, learn=xt, paths={"base": args.xb, "learn": args.xt})
    with _threads(args):
        t = HNSWTeacher(
            xb.shape[1],
            args.metric,
            M=args.M,
            ef_construction=args.ef_construction,
            ef_search=args.ef_search,
            seed=args.seed,
            threads=args.threads or 1,
        )
        t.build(xb)
        labels = t.label(xt, args.K)
    write_vectors(args.out, labels.astype("int64" if args.out.endswith(".npy") else "int32"))
    print(f"labelled {len(xt)} queries with the teacher's top-{args.K} -> {args.out}")
    return 0


def _train(args) -> int:
    from annrepro.validate import check_same_dim, read_ground_truth
    from annrepro.vecio import read_vectors

    from .api import KDIndex
    from .student import check_device
    from .train import CHECKPOINT_NAME, TrainConfig

    device = check_device(args.device, "--device")  # before any work
    if args.checkpoint_dir is not None:
        from pathlib import Path

        _check_out(args.out, Path(args.checkpoint_dir) / CHECKPOINT_NAME)
    else:
        _check_out(args.out)
    xb = read_vectors(args.xb)
    labels = read_ground_truth(args.labels, nb=len(xb), nq=None, k=args.K)
    xt = read_vectors(args.xt, stop=len(labels))
    check_same_dim(base=xb, learn=xt, paths={"base": args.xb, "learn": args.xt})
    if len(xt) < len(labels):
        from annrepro.errors import InputError

        raise InputError(f"{args.labels}: {len(labels)} label rows for {len(xt)} training queries")
    cfg = TrainConfig(
        loss=args.loss,
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        patience=args.patience,
        init_max_rounds=args.init_rounds,
        seed=args.seed,
        balance_index=args.balance_index,
        val_codes=args.val_codes,
        distill_weight=args.distill_weight,
    )
    warm = {"aq_beam": args.aq_beam} if args.kind == "AQ" else {}
    kw = {"n_warm": args.n_warm, "device": device, **warm}
    index = KDIndex(args.kind, args.metric, args.B, args.W, args.K, cfg, **kw)
    with _threads(args):
        index.fit(xb, xt, labels=labels, checkpoint_dir=args.checkpoint_dir)
    index.save(args.out)
    r = index.result
    codes = "balanced" if args.balance_index else "nearest"
    measured = codes if args.val_codes == "index" else "nearest"
    print(
        f"trained KDindex ({args.kind}) on {len(xt)} queries: {r.init_rounds} init rounds, best "
        f"epoch {r.best_epoch}, validation recall {r.best_val_recall:.4f} (on {measured} codes); "
        f"{index.memory_bytes()['total']} bytes, {codes} codes; saved {args.out}"
    )
    return 0


def _search(args) -> int:
    import numpy as np
    from annrepro.validate import check_same_dim, read_ground_truth
    from annrepro.vecio import read_vectors, write_vectors

    from .api import KDIndex

    _check_out(args.out)
    index = KDIndex.load(args.index)
    xq = read_vectors(args.xq)
    check_same_dim(
        index=index.quantizer.d_in, query=xq, paths={"index": args.index, "query": args.xq}
    )
    nb = len(index.codes)
    gt = read_ground_truth(args.gt, nb=nb, nq=len(xq), k=args.k) if args.gt else None
    with _threads(args):
        _, I = index.search(xq, args.k, args.nprobe)
    write_vectors(args.out, I if args.out.endswith(".npy") else I.astype(np.int32))
    msg = f"{I.shape[0]} queries x {args.k} results -> {args.out}"
    if gt is not None:
        from annrepro.metrics import recall_at

        msg += f"; {args.k}-recall@{args.k} {recall_at(I, gt, args.k, nb=nb):.4f}"
    print(msg)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "reproduce":
        from annrepro.cli import reproduce_paper

        return reproduce_paper("kdindex", rest)
    if command not in ("teacher", "train", "search"):
        print(f"kdindex: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    from annrepro.cli import run_cli

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    run = {"teacher": _teacher, "train": _train, "search": _search}[command]
    return run_cli("kdindex", lambda a: run(_parser().parse_args(a)), argv)


if __name__ == "__main__":
    sys.exit(main())
