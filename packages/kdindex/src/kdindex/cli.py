"""Command line of the kdindex package.

    kdindex teacher --xb base.fvecs --xt learn.fvecs --out labels.npy [--metric l2 -K 10
                    --M 32 --ef-construction 40 --ef-search 100 --n-train 100000]
    kdindex train --xb base.fvecs --xt learn.fvecs --labels labels.npy --out index.npz
                  [--kind AQ --metric l2 -B 8 -W 256 -K 10 --lr 0.01 --batch-size 64
                   --balance-index/--no-balance-index --val-codes index --aq-beam 5 ...
                   --checkpoint-dir DIR]   (a checkpoint per round / epoch; a rerun resumes)
    kdindex search --index index.npz --xq query.fvecs --out I.npy [--k 10 --nprobe 16
                   --gt gt.ivecs]
    kdindex encode --index index.npz --xb new_docs.fvecs [--out index2.npz]
                   [--codes-out codes.npy] [--out-dir DIR] [--engine single|dask
                   --scheduler ADDR --workers N --max-memory 4GB --shard-rows N]
    kdindex reproduce [OPTIONS]

`teacher` labels training queries with the top-K of an HNSW teacher (Sec. 3.1, Table 7);
`train` fits a KDindex on them (Algorithm 2, `kdindex.api.KDIndex`); `search` searches it
exhaustively or through nprobe posting lists per codebook (Sec. 3.4). `encode` encodes new
documents with a saved index's codebooks (`KDIndex.encode`: nearest codes, AQ by faiss's beam
search; not Algorithm 1's balanced assignment, which is solved once at training) and appends
them (`--out`: ids continue after the stored documents, `KDIndex.add`) or writes their codes
(`--codes-out`, int32 (n, B)). With `--out-dir` (required by `--engine dask`) the codes go into
resumable shards (`annrepro.distributed.transform_sharded`: a rerun computes only the missing
ones), encoded on a Dask cluster with `--engine dask`. `reproduce` runs the
KDindex tables through the annrepro runner: it is `annrepro reproduce --tables 'kdindex.*'
[OPTIONS]` (a later `--tables kdindex.table2` narrows the selection). Vector files: anything
`annrepro.vecio.read_vectors` reads (.fvecs, .bvecs, .ivecs, .npy, ...).

One style for every subcommand: options only (no positional arguments), each with a long name
(`-K`, `-B`, `-W`, `-k` stay as short forms of `--K`, `--B`, `--W`, `--k`) and a line in
`kdindex <command> --help`; bad input (through `annrepro.cli.run_cli`) is one line
`kdindex: error: ...` and exit 2, outputs are checked before any work (`check_outputs`), and
the thread count is said on stderr (`announce_threads`).
"""

from __future__ import annotations

import argparse
import logging
import sys

USAGE = """usage: kdindex {teacher,train,search,encode,reproduce} ...

  teacher    label training queries with an HNSW teacher's top-K (Sec. 3.1, Table 7)
  train      fit a KDindex student on labelled training queries (Algorithm 2), save it
  search     search queries in a saved KDindex, save the ids (optionally score them)
  encode     encode new documents with a saved KDindex: append them to it or save their codes
             (--engine dask: resumable code shards on a Dask cluster)
  reproduce  `kdindex reproduce [OPTIONS]`: run the kdindex.* tables (OPTIONS as for
             `annrepro reproduce`, e.g.
             --scale tiny|small|medium|full, --tables kdindex.table2, --seed 0, --threads 1)"""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` lists every option with its default (none shown where there is none)."""

    def _get_help_string(self, action):
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


_THREADS_HELP = (
    "faiss / torch threads (default: ANNREPRO_THREADS or OMP_NUM_THREADS, else the cores)"
)


def _parser() -> argparse.ArgumentParser:
    """Every subcommand takes options only (no positional arguments); each option has a long
    name (-K, -B, -W, -k are kept as short forms) and a help line."""
    from annrepro.cli import ArgumentParser, positive_int

    from .losses import LOSSES

    ap = ArgumentParser(prog="kdindex")
    sub = ap.add_subparsers(dest="command", required=True)

    def command(name: str, text: str):
        return sub.add_parser(name, help=text, description=text, formatter_class=_HelpFormatter)

    t = command("teacher", "label training queries with an HNSW teacher's top-K (Sec. 3.1)")
    t.add_argument("--xb", required=True, help="base (document) vectors")
    t.add_argument("--xt", required=True, help="training queries")
    t.add_argument("--out", required=True, help="labels, int64 (nt, K): .npy or .ivecs")
    t.add_argument("--metric", default="l2", choices=["l2", "ip"], help="similarity")
    t.add_argument(
        "-K", "--K", type=positive_int, default=10, help="neighbours per query (Sec. 4.1: 10)"
    )
    t.add_argument("--M", type=positive_int, default=32, help="HNSW links (Table 7: 32)")
    t.add_argument(
        "--ef-construction",
        type=positive_int,
        default=40,
        help="HNSW build beam (Table 7: 40, 100)",
    )
    t.add_argument(
        "--ef-search", type=positive_int, default=100, help="HNSW search beam (Table 7: 100-1024)"
    )
    t.add_argument(
        "--n-train", type=positive_int, default=None, help="first n training queries only"
    )
    t.add_argument("--seed", type=int, default=100, help="hnswlib level generator")
    t.add_argument("--threads", type=positive_int, default=None, help=_THREADS_HELP)

    f = command("train", "fit a KDindex on labelled training queries (Algorithm 2), save it")
    f.add_argument("--xb", required=True, help="base (document) vectors")
    f.add_argument("--xt", required=True, help="training queries (the rows the labels cover)")
    f.add_argument("--labels", required=True, help="teacher top-K ids, (nt, >= K)")
    f.add_argument("--out", required=True, help="index file (.npz)")
    f.add_argument("--kind", default="AQ", choices=["PQ", "OPQ", "AQ"], help="student quantizer")
    f.add_argument("--metric", default="l2", choices=["l2", "ip"], help="similarity")
    f.add_argument("-B", "--B", type=positive_int, default=8, help="codebooks (Sec. 4.1: 8)")
    f.add_argument(
        "-W", "--W", type=positive_int, default=256, help="codewords per codebook (Sec. 4.1: 256)"
    )
    f.add_argument(
        "-K", "--K", type=positive_int, default=10, help="teacher neighbours used (Sec. 4.1: 10)"
    )
    f.add_argument("--loss", default="distribution", choices=LOSSES, help="distillation loss")
    f.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (Sec. 4.1)")
    f.add_argument("--batch-size", type=positive_int, default=64, help="mini-batch (Sec. 4.1: 64)")
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
        help="store the balanced codes of Algorithm 1 (the paper's final index, Sec. 3.4) or, "
        "with --no-balance-index, the nearest codes of the learned codebooks",
    )
    f.add_argument(
        "--val-codes",
        default="index",
        choices=["index", "nearest"],
        help="codes early stopping measures: those the index stores, or nearest ones",
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
    f.add_argument("--seed", type=int, default=0, help="warm-start sample, k-means, batch order")
    f.add_argument("--threads", type=positive_int, default=None, help=_THREADS_HELP)
    f.add_argument("--device", default="cpu", help="torch device of training: cpu, cuda[:N]")
    f.add_argument(
        "--checkpoint-dir",
        default=None,
        help="a checkpoint (last.pt) after every initialisation round and epoch; rerunning the "
        "same command resumes from it (the same index as an uninterrupted run)",
    )

    s = command("search", "search queries in a saved KDindex, save the ids (and score them)")
    s.add_argument("--index", required=True, help="index file written by `kdindex train`")
    s.add_argument("--xq", required=True, help="query vectors")
    s.add_argument("--out", required=True, help="ids, int64 (nq, k): .npy or .ivecs")
    s.add_argument("-k", "--k", type=positive_int, default=10, help="results per query")
    s.add_argument(
        "--nprobe",
        type=positive_int,
        default=None,
        help="posting lists per codebook (Sec. 3.4; default: all, exhaustive search)",
    )
    s.add_argument("--gt", default=None, help="exact neighbour ids: print k-recall@k")
    s.add_argument("--threads", type=positive_int, default=None, help=_THREADS_HELP)

    e = command("encode", "encode new documents with a saved KDindex: append them or save codes")
    e.add_argument("--index", required=True, help="index file written by `kdindex train`")
    e.add_argument("--xb", required=True, help="new documents, of the index's dimension")
    e.add_argument(
        "--out",
        default=None,
        help="write the index with the new documents appended (ids continue after the stored "
        "ones); may be --index itself (replaced atomically)",
    )
    e.add_argument(
        "--codes-out", default=None, help="the new documents' codes, int32 (n, B): .npy or .ivecs"
    )
    e.add_argument(
        "--out-dir",
        default=None,
        help="folder of code shards + manifest.json (annrepro.distributed); a rerun computes "
        "only the missing shards; required with --engine dask",
    )
    e.add_argument(
        "--engine",
        choices=("single", "dask"),
        default="single",
        help="single: this process; dask: one task per shard on a Dask cluster",
    )
    e.add_argument("--scheduler", default=None, help="dask: address of a running scheduler")
    e.add_argument(
        "--workers", type=positive_int, default=None, help="dask: local workers (default: cores)"
    )
    e.add_argument(
        "--max-memory", default=None, help="dask: memory of all local workers together, e.g. 4GB"
    )
    e.add_argument(
        "--shard-rows", type=positive_int, default=1 << 20, help="rows per shard (--out-dir)"
    )
    e.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help=_THREADS_HELP + "; with --engine dask: per worker (local workers share them)",
    )
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
        t.build(xb, progress=True)
        labels = t.label(xt, args.K, progress=True)
    write_vectors(args.out, labels.astype("int64" if args.out.endswith(".npy") else "int32"))
    print(f"labelled {len(xt)} queries with the teacher's top-{args.K} -> {args.out}")
    return 0


def _train(args) -> int:
    from annrepro.devices import check_device
    from annrepro.validate import check_same_dim, read_ground_truth
    from annrepro.vecio import read_vectors

    from .api import KDIndex
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
    recall = f"validation recall {r.best_val_recall:.4f} (on {measured} codes)"
    if r.best_epoch >= 0:
        kept = f"best epoch {r.best_epoch}, {recall}"
    elif r.best_val_recall >= 0:  # train.TrainResult.best_epoch -1
        kept = (
            f"no differentiable epoch improved on the initialised student's {recall}: the "
            "initialised student is kept"
        )
    else:
        kept = "no validation split to stop early on: the initialised student is kept"
    print(
        f"trained KDindex ({args.kind}) on {len(xt)} queries: {r.init_rounds} init rounds, "
        f"{kept}; {index.memory_bytes()['total']} bytes, {codes} codes; saved {args.out}"
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


class IndexEncoder:
    """A picklable `x -> KDIndex.load(index).encode(x)` (int32 (n, B) codes of float32 (n, d)
    documents) for `annrepro.distributed.transform_sharded`: each Dask worker loads the index
    file (on storage every worker reads) once and keeps it; threads: faiss / torch threads of
    each call (None: the worker's own setting)."""

    def __init__(self, index_path: str, threads: int | None = None):
        self.index_path, self.threads = index_path, threads
        self._index = None

    def __getstate__(self):
        return {**self.__dict__, "_index": None}

    def __call__(self, x):
        from .api import KDIndex

        if self._index is None:
            self._index = KDIndex.load(self.index_path)
        if self.threads is None:
            return self._index.encode(x)
        from annrepro.threads import threads

        with threads(self.threads):
            return self._index.encode(x)


_CODE_EXTS = (".npy", ".ivecs", ".ibin")  # int32 codes in a format annrepro.vecio writes


def _encode_checks(args):
    """Options of `kdindex encode` that contradict each other or name unusable outputs, before
    any work (InputError, one line)."""
    from pathlib import Path

    from annrepro.errors import InputError

    if args.out is None and args.codes_out is None and args.out_dir is None:
        raise InputError("kdindex encode: nothing to write: give --out, --codes-out or --out-dir")
    if args.engine == "dask" and args.out_dir is None:
        raise InputError("--engine dask writes code shards: give --out-dir")
    if args.engine != "dask":
        given = [o for o in ("scheduler", "workers", "max_memory") if getattr(args, o)]
        if given:
            names = ", ".join("--" + o.replace("_", "-") for o in given)
            raise InputError(f"{names}: for --engine dask only")
    outputs = [p for p in (args.out, args.codes_out) if p is not None]
    if args.codes_out is not None and Path(args.codes_out).suffix.lower() not in _CODE_EXTS:
        raise InputError(f"{args.codes_out}: codes are written as .npy, .ivecs or .ibin")
    for p in outputs:
        if Path(p).is_dir():
            raise InputError(f"{p}: is a folder; expected the path of a file to write")
    if args.out_dir is not None:
        outputs.append(Path(args.out_dir) / "manifest.json")
    _check_out(*outputs)


def _dask_client(args):
    from annrepro.distributed import local_client

    if args.scheduler:
        from distributed import Client

        return Client(args.scheduler)
    return local_client(args.workers, args.max_memory)


def _encode_shards(args, n_threads: int) -> dict:
    """Codes of --xb into shards in --out-dir (this process, or a Dask cluster); the manifest."""
    import hashlib
    from pathlib import Path

    from annrepro.distributed import transform_sharded
    from annrepro.threads import threads

    h = hashlib.sha256()
    with open(args.index, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    # the index file decides the codes (codebooks, rotation, AQ beam): shards of another index
    # in --out-dir are refused, whichever engine made them
    fingerprint = "kdindex-encode-" + h.hexdigest()
    path = str(Path(args.index).resolve())
    if args.engine == "single":
        with threads(n_threads):
            return transform_sharded(
                IndexEncoder(path), args.xb, args.out_dir, fingerprint, shard_rows=args.shard_rows
            )
    client = _dask_client(args)
    try:
        print(f"Dask dashboard: {client.dashboard_link}", flush=True)
        per_worker = args.threads
        if per_worker is None and not args.scheduler:  # local workers share this machine
            per_worker = max(1, n_threads // len(client.scheduler_info()["workers"]))
        return transform_sharded(
            IndexEncoder(path, per_worker),
            args.xb,
            args.out_dir,
            fingerprint,
            client=client,
            shard_rows=args.shard_rows,
        )
    finally:
        client.close()


def _append_codes(index, codes) -> None:
    """`KDIndex.add` for codes already computed by `KDIndex.encode` (the shards): the same
    codes and norms, without encoding again."""
    import numpy as np

    from .student import reconstruction_norms2

    norms2 = reconstruction_norms2(index.quantizer, codes)
    index.codes = np.concatenate([index.codes, codes])
    index.norms2 = np.concatenate([index.norms2, norms2])


def _encode(args) -> int:
    import numpy as np
    from annrepro.errors import InputError
    from annrepro.validate import check_same_dim
    from annrepro.vecio import mmap_vectors, read_vectors, write_vectors

    from .api import KDIndex

    _encode_checks(args)
    index = KDIndex.load(args.index)
    nb = len(index.codes)
    paths = {"index": args.index, "documents": args.xb}
    if args.out_dir is not None:
        from annrepro.distributed import read_shards

        x = mmap_vectors(args.xb)  # the shards read their rows; nothing loaded here
        check_same_dim(index=index.quantizer.d_in, documents=x, paths=paths)
        from annrepro.cli import announce_threads

        m = _encode_shards(args, announce_threads("kdindex encode", args.threads))
        codes = read_shards(args.out_dir)
        if codes.shape != (len(x), index.B) or codes.dtype != np.int32:
            raise InputError(
                f"{args.out_dir}: shards hold codes {codes.dtype} {codes.shape}, expected int32 "
                f"({len(x)}, {index.B})"
            )
        where = f"{len(m['shards'])} shards in {args.out_dir}"
        if args.out is not None:
            _append_codes(index, codes)
    else:
        x = read_vectors(args.xb)
        check_same_dim(index=index.quantizer.d_in, documents=x, paths=paths)
        with _threads(args):
            if args.out is not None:
                index.add(x)
                codes = index.codes[nb:]
            else:
                codes = index.encode(x)
        where = None
    n = len(codes)
    done = [f"encoded {n} documents with {args.index} ({index.kind}, {index.B} x {index.W})"]
    if where:
        done.append(where)
    if args.codes_out is not None:
        write_vectors(args.codes_out, np.ascontiguousarray(codes, dtype=np.int32))
        done.append(f"codes int32 ({n}, {index.B}) -> {args.codes_out}")
    if args.out is not None:
        index.save(args.out)
        done.append(f"appended as ids {nb}..{nb + n - 1}: {nb + n} documents -> {args.out}")
    print("; ".join(done))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The kdindex command line (console script): exit code 0, 1 or 2 (bad input, one line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "reproduce":
        from annrepro.cli import reproduce_paper

        return reproduce_paper("kdindex", rest)
    if command not in ("teacher", "train", "search", "encode"):
        print(f"kdindex: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    from annrepro.cli import run_cli

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    run = {"teacher": _teacher, "train": _train, "search": _search, "encode": _encode}[command]
    return run_cli("kdindex", lambda a: run(_parser().parse_args(a)), argv)


if __name__ == "__main__":
    sys.exit(main())
