"""`ccst` command line.

    ccst train XT_FILE MODEL.pt [--factor 4] [--epochs N] [--checkpoint-dir DIR] ...
    ccst compress MODEL.pt IN_FILE OUT_FILE [--max-memory-mb 256]  (block by block: bounded memory)
    ccst index --model MODEL.pt --base xb.fvecs --kind HNSW32 --out idx.faiss
               [--search-at full|compressed] [--learn xt.fvecs] [--ef-construction 40] ...
    ccst search --index idx.faiss --queries xq.fvecs -k 10 [--out I.ivecs] [--gt gt.ivecs]
                [--model MODEL.pt] [--ef-search N | --search-l N | --nprobe N]
    ccst reproduce [--scale tiny|small|medium|full] [annrepro options]

`index` builds the paper's index (Sec. 4.2, `ccst.index.build_index`): a graph built on the
CCST-compressed base, searched with the full-dimensional vectors (--search-at full, the
default), written as a faiss index file that `search` (or faiss.read_index) reads; `search`
prints 1-recall@1, 1-recall@k and k-recall@k when --gt is given. An index built with
--search-at compressed lives in the compressed space: `search` then needs --model to compress
the queries.

Vector files are any format `annrepro.vecio` reads or writes (.fvecs, .fbin, .npy, ...).
`reproduce` is a thin wrapper over `annrepro reproduce --tables 'ccst.*'`; every option after
`reproduce` is passed on to annrepro unchanged.

Bad input (a vector or model file that is missing, damaged or unusable, NaN / inf or values
beyond float32 in the vectors, a model of another dimension, an output that cannot be written,
too few training vectors) is reported as one line `ccst: error: <file>: <problem>` with exit
code 2, as argparse and `annrepro` report theirs; outputs are checked before any work. A
training that diverges exits with 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

LOSS_VARIANTS = ("abs", "squared")  # ccst.losses.LOSS_VARIANTS, without importing torch here
NORMS = ("released", "layernorm", "none")  # ccst.model.NORMS, likewise


_INDEX_COMMANDS = {
    "index": "build a graph on CCST-compressed vectors, searched at full dimension (Sec. 4.2)",
    "search": "search an index built by `ccst index`; recall when --gt is given",
}


def main(argv: list[str] | None = None) -> int:
    """The ccst command line (console script): exit code 0, 1 or 2 (bad input, one line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _INDEX_COMMANDS:
        from annrepro.cli import run_cli

        _quiet_logging()
        run = {"index": _index, "search": _search}[argv[0]]
        return run_cli("ccst", lambda a: run(_checked(_index_parser().parse_args(a))), argv)
    parser = argparse.ArgumentParser(
        prog="ccst", description="Train and apply CCST; reproduce the tables of the CCST paper."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "reproduce",
        help="run every ccst.* table (options such as --scale are passed to annrepro)",
        add_help=False,
    )
    for name, text in _INDEX_COMMANDS.items():  # parsed by _index_parser (see ccst index -h)
        sub.add_parser(name, help=text, add_help=False)
    tr = sub.add_parser("train", help="train a CCST compressor on a vector file")
    tr.add_argument("xt", help="training vectors (float32, n x d_in)")
    tr.add_argument("model", help="output model file (.pt)")
    tr.add_argument("--factor", type=int, default=2, help="compression factor (divides d_in)")
    tr.add_argument("--d-out", type=int, default=None, help="default d_in / factor")
    tr.add_argument("--tokens", type=int, default=None, help="projections n (default 4f or 3f)")
    tr.add_argument("--depths", type=int, nargs="+", default=[2, 2], help="encoders per stage")
    tr.add_argument("--heads", type=int, default=4)
    tr.add_argument("--qk-ratio", type=float, default=0.5)
    tr.add_argument(
        "--norm",
        choices=NORMS,
        default=None,
        help="normalisation: released (default: the released code's batch norms), layernorm "
        "(ViT pre-norm) or none",
    )
    tr.add_argument("--pre-norm", action="store_true", help="the same as --norm layernorm")
    tr.add_argument("--epochs", type=int, default=2400, help="Sec. 4.1: 2400")
    tr.add_argument("--batch-size", type=int, default=1024, help="Sec. 4.1: 1024")
    tr.add_argument("--lr", type=float, default=1e-4, help="Sec. 4.1: 1e-4")
    tr.add_argument(
        "--loss",
        choices=LOSS_VARIANTS,
        default="abs",
        help="INRP distance error: abs (Eq. 4, released code) or squared",
    )
    tr.add_argument("--val-fraction", type=float, default=0.05)
    tr.add_argument("--checkpoint-dir", default=None, help="checkpoints; resumes from one there")
    tr.add_argument("--checkpoint-every", type=int, default=10)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=int, default=None, help="torch threads")
    tr.add_argument("--device", default="cpu")
    co = sub.add_parser("compress", help="compress a vector file with a trained model")
    co.add_argument("model")
    co.add_argument("input")
    co.add_argument(
        "output",
        help="compressed vectors (.fvecs, .fbin, .npy, ...), written block by block to a "
        "temporary file beside it and renamed when complete",
    )
    co.add_argument("--max-memory-mb", type=float, default=256.0)
    co.add_argument("--threads", type=int, default=None, help="torch threads")
    co.add_argument("--device", default="cpu")
    co.add_argument(
        "--engine",
        choices=("single", "dask"),
        default="single",
        help="dask: OUTPUT is a folder of .npy shards + manifest.json (annrepro.distributed)",
    )
    co.add_argument("--scheduler", help="address of a running Dask scheduler (else a local one)")
    co.add_argument("--workers", type=int, default=None, help="local Dask workers")
    co.add_argument("--shard-rows", type=int, default=1 << 20)
    args, rest = parser.parse_known_args(argv)

    if args.command == "reproduce":
        from annrepro.cli import reproduce_paper

        return reproduce_paper("ccst", rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    _quiet_logging()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return _run(_train if args.command == "train" else _compress, args)


def _checked(args):
    """args, once --device is a device torch has (one line `ccst: error: --device cuda:
    torch.cuda.is_available() is False ...` otherwise), before any work."""
    from annrepro.devices import check_device

    args.device = check_device(args.device, "--device")
    return args


def _quiet_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # 6-8 lines per call otherwise


def _index_parser():
    """Options of `ccst index` and `ccst search` (annrepro.cli.ArgumentParser: a usage error is
    one line, exit 2, through run_cli)."""
    from annrepro.cli import ArgumentParser, positive_int

    ap = ArgumentParser(prog="ccst")
    sub = ap.add_subparsers(dest="command", required=True)
    ix = sub.add_parser("index", help=_INDEX_COMMANDS["index"])
    ix.add_argument("--model", required=True, help="trained CCST model (.pt, from ccst train)")
    ix.add_argument("--base", required=True, help="database vectors (n x d_in, any vecio format)")
    ix.add_argument(
        "--kind",
        default="HNSW32",
        help="HNSW<M>, HNSW<M>,SQ8 or NSG<R> (default HNSW32); with --search-at compressed any "
        "faiss index_factory string (IVF8,PQ16, ...)",
    )
    ix.add_argument("--out", required=True, help="index file to write (faiss format, atomic)")
    ix.add_argument(
        "--search-at",
        choices=("full", "compressed"),
        default="full",
        help="full (default, Sec. 4.2): the index stores the full vectors and is searched with "
        "raw queries; compressed: it stores the compressed ones (search needs --model)",
    )
    ix.add_argument("--learn", default=None, help="training vectors of SQ8 / factory kinds")
    ix.add_argument("--metric", choices=("l2", "ip"), default="l2")
    ix.add_argument("--ef-construction", type=positive_int, default=40, help="HNSW (faiss: 40)")
    ix.add_argument("--nsg-L", type=positive_int, default=None, help="NSG pool (default R+32)")
    ix.add_argument("--nsg-C", type=positive_int, default=None, help="NSG pruning (R+100)")
    ix.add_argument("--nsg-GK", type=positive_int, default=64, help="NSG k-NN graph k (64)")
    ix.add_argument("--nsg-knn", choices=("nndescent", "brute"), default="nndescent")
    ix.add_argument("--max-memory-mb", type=float, default=256.0, help="per CCST forward pass")
    ix.add_argument("--threads", type=positive_int, default=None)
    ix.add_argument("--device", default="cpu", help="torch device of the compression")
    se = sub.add_parser("search", help=_INDEX_COMMANDS["search"])
    se.add_argument("--index", required=True, help="index file from ccst index")
    se.add_argument("--queries", required=True, help="query vectors (nq x d)")
    se.add_argument("-k", "--k", type=positive_int, default=10, help="neighbours per query")
    se.add_argument("--out", default=None, help="ids: .npy (int64) or .ivecs / .ibin (int32)")
    se.add_argument("--gt", default=None, help="exact neighbour ids: prints the recalls")
    se.add_argument("--model", default=None, help="for an index built --search-at compressed")
    se.add_argument("--ef-search", type=positive_int, default=None, help="HNSW efSearch")
    se.add_argument("--search-l", type=positive_int, default=None, help="NSG search_L")
    se.add_argument("--nprobe", type=positive_int, default=None, help="IVF nprobe")
    se.add_argument("--max-memory-mb", type=float, default=256.0)
    se.add_argument("--threads", type=positive_int, default=None)
    se.add_argument("--device", default="cpu")
    return ap


def _check_index_output(path) -> None:
    from annrepro.cli import check_outputs
    from annrepro.errors import InputError

    if Path(path).is_dir():
        raise InputError(f"{path}: is a directory; expected the path of a file to write")
    check_outputs(path)


def _index(args) -> int:
    import time

    from annrepro.cli import announce_threads
    from annrepro.errors import InputError
    from annrepro.threads import threads
    from annrepro.validate import check_same_dim
    from annrepro.vecio import mmap_vectors

    from ccst.api import CCST
    from ccst.errors import DataError
    from ccst.index import build_index, parse_kind, write_index

    _check_index_output(args.out)
    parse_kind(args.kind)  # a malformed graph kind: before loading anything
    model = CCST.load(args.model, device=args.device)
    xb = mmap_vectors(args.base)
    xt = None if args.learn is None else mmap_vectors(args.learn)
    paths = {"model": args.model, "base": args.base, "learn": args.learn}
    check_same_dim(model=model.d_in, base=xb, learn=xt, paths=paths)
    n_threads = announce_threads("ccst index", args.threads)
    try:
        with threads(n_threads):
            t0 = time.perf_counter()
            index = build_index(
                model,
                xb,
                args.kind,
                search_at=args.search_at,
                metric=args.metric,
                xt=xt,
                ef_construction=args.ef_construction,
                nsg_L=args.nsg_L,
                nsg_C=args.nsg_C,
                nsg_GK=args.nsg_GK,
                nsg_knn=args.nsg_knn,
                max_memory_mb=args.max_memory_mb,
            )
            seconds = time.perf_counter() - t0
    except DataError as e:  # a vector the model cannot compress: name the file it came from
        path = {"database vectors": args.base, "learn vectors": args.learn}.get(e.what, e.what)
        raise InputError(f"{path}: {e.problem}") from None
    write_index(index, args.out)
    if args.search_at == "full":
        codes = " (8-bit codes)" if parse_kind(args.kind).storage == "SQ8" else ""
        where = (
            f"graph built on the {model.d_out}-d CCST features, searched over the "
            f"{model.d_in}-d vectors{codes}"
        )
    else:
        where = f"on the {model.d_out}-d CCST features (search with --model {args.model})"
    print(
        f"{args.kind} over {index.ntotal} vectors, {where}; built in {seconds:.2f} s "
        f"(compression included, {n_threads} thread(s)); saved {args.out}"
    )
    return 0


def _search(args) -> int:
    import time

    import numpy as np
    from annrepro.cli import announce_threads
    from annrepro.errors import InputError
    from annrepro.metrics import n_recall_at, one_recall_at
    from annrepro.threads import threads
    from annrepro.validate import read_ground_truth
    from annrepro.vecio import read_vectors, write_vectors

    from ccst.index import read_index, search_index

    if args.out is None and args.gt is None:
        raise InputError("ccst search: nothing to do: give --out (the ids) and/or --gt (recall)")
    out = None if args.out is None else Path(args.out)
    if out is not None:
        if out.suffix.lower() not in (".npy", ".ivecs", ".ibin"):
            raise InputError(f"{out}: ids are written as .npy (int64), .ivecs or .ibin (int32)")
        _check_index_output(out)
    index = read_index(args.index)
    xq = read_vectors(args.queries)
    model = None
    if xq.shape[1] != index.d:
        if args.model is None:
            raise InputError(
                f"{args.queries}: queries of dimension {xq.shape[1]}, but the index {args.index} "
                f"has dimension {index.d} (built --search-at compressed? give --model)"
            )
        from ccst.api import CCST

        model = CCST.load(args.model, device=args.device)
        if model.d_in != xq.shape[1] or model.d_out != index.d:
            raise InputError(
                f"{args.model}: compresses {model.d_in} -> {model.d_out}, but the queries "
                f"{args.queries} have dimension {xq.shape[1]} and the index {args.index} "
                f"dimension {index.d}"
            )
    gt = None
    if args.gt is not None:
        gt = read_ground_truth(args.gt, nb=index.ntotal, nq=xq.shape[0], k=1)
    n_threads = announce_threads("ccst search", args.threads)
    with threads(n_threads):
        t0 = time.perf_counter()  # inside: threads() may import torch
        _, I = search_index(
            index,
            xq,
            args.k,
            model=model,
            ef_search=args.ef_search,
            search_L=args.search_l,
            nprobe=args.nprobe,
            max_memory_mb=args.max_memory_mb,
        )
        seconds = time.perf_counter() - t0
    line = f"{xq.shape[0]} queries x {args.k} results in {seconds:.2f} s ({n_threads} thread(s))"
    if out is not None:
        write_vectors(out, I if out.suffix.lower() == ".npy" else I.astype(np.int32))  # atomic
        line += f" -> {out}"
    print(line)
    if gt is not None:
        recalls = [f"1-recall@1 {one_recall_at(I, gt, 1):.4f}"]
        if args.k > 1:
            recalls.append(f"1-recall@{args.k} {one_recall_at(I, gt, args.k):.4f}")
        if gt.shape[1] >= args.k:
            recalls.append(f"{args.k}-recall@{args.k} {n_recall_at(I, gt, args.k, args.k):.4f}")
        print(f"{', '.join(recalls)} ({args.gt}, {xq.shape[0]} queries)")
    return 0


class _FileProblem(Exception):
    """A problem with a file or directory named on the command line."""

    def __init__(self, path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _run(command, args) -> int:
    """Run a subcommand; bad input -> one line `ccst: error: <file>: <problem>`, exit 2."""
    from annrepro.errors import AnnreproError

    from ccst.errors import ModelFileError

    try:
        return command(_checked(args))
    except (_FileProblem, ModelFileError) as e:
        print(f"ccst: error: {e.path}: {_one_line(e.problem)}", file=sys.stderr)
    # VectorFileError names its file; a ValueError is an option the library refuses (--factor)
    except (AnnreproError, ValueError) as e:
        print(f"ccst: error: {_one_line(e)}", file=sys.stderr)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"ccst: error: {where}{_one_line(e.strerror or e)}", file=sys.stderr)
    except RuntimeError as e:  # TrainingDiverged: not bad input
        print(f"ccst: error: {_one_line(e)}", file=sys.stderr)
        return 1
    return 2


def _check_output_file(path) -> None:
    """Before any work: `path` can be created or replaced (its directory exists and takes a new
    file; it is not a directory). Tested by creating and removing a temporary file there."""
    path = Path(path)
    if path.is_dir():
        raise _FileProblem(path, "is a directory; expected the path of a file to write")
    parent = path.parent
    if not parent.exists():
        raise _FileProblem(path, f"directory {parent} does not exist")
    if not parent.is_dir():
        raise _FileProblem(path, f"{parent} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".probe")
    except OSError as e:
        raise _FileProblem(
            path, f"directory {parent} is not writable ({e.strerror or e})"
        ) from None
    os.close(fd)
    os.unlink(probe)


def _check_checkpoint_dir(path) -> None:
    """Before any work: the checkpoint directory exists (created if needed) and is writable."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _FileProblem(path, f"cannot create the directory ({e.strerror or e})") from None
    _check_output_file(path / "last.pt")


def _train(args) -> int:
    from annrepro.vecio import mmap_vectors

    from ccst.api import CCST
    from ccst.errors import DataError

    _check_output_file(args.model)
    if args.checkpoint_dir is not None:
        _check_checkpoint_dir(args.checkpoint_dir)
    xt = mmap_vectors(args.xt)
    model = CCST(
        compression_factor=args.factor,
        d_out=args.d_out,
        n_tokens=args.tokens,
        depths=tuple(args.depths),
        heads=args.heads,
        qk_ratio=args.qk_ratio,
        norm=args.norm,
        pre_norm=True if args.pre_norm else None,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        loss=args.loss,
        val_fraction=args.val_fraction,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        device=args.device,
    )
    try:
        model.fit(xt, checkpoint_dir=args.checkpoint_dir)
    except DataError as e:
        raise _FileProblem(args.xt, e.problem) from None
    model.save(args.model)
    last = model.history[-1]
    val = "no validation split" if last["val_loss"] != last["val_loss"] else None
    val = val or f"val loss {last['val_loss']:.4g}"
    print(
        f"trained {model.d_in} -> {model.d_out} for {last['epoch']} epochs "
        f"(train loss {last['train_loss']:.4g}, {val}); saved {args.model}"
    )
    return 0


class ModelTransform:
    """A picklable `x -> CCST.load(model).transform(x)` for Dask workers: each worker loads the
    model file (on shared storage) once and keeps it."""

    def __init__(self, model_path: str, device: str, max_memory_mb: float):
        self.model_path, self.device, self.max_memory_mb = model_path, device, max_memory_mb
        self._model = None

    def __getstate__(self):
        return {**self.__dict__, "_model": None}

    def __call__(self, x):
        from ccst.api import CCST

        if self._model is None:
            self._model = CCST.load(self.model_path, device=self.device)
        return self._model.transform(x, max_memory_mb=self.max_memory_mb)


def _compress_dask(args, model) -> int:
    """`ccst compress --engine dask`: one shard per task, resumable (annrepro.distributed)."""
    import hashlib

    from annrepro.distributed import local_client, transform_sharded

    with open(args.model, "rb") as f:
        fingerprint = "ccst-" + hashlib.sha256(f.read()).hexdigest()
    if args.scheduler:
        from distributed import Client

        client = Client(args.scheduler)
    else:
        client = local_client(args.workers)
    print(f"Dask dashboard: {client.dashboard_link}", flush=True)
    fn = ModelTransform(str(Path(args.model).resolve()), args.device, args.max_memory_mb)
    try:
        m = transform_sharded(
            fn, args.input, args.output, fingerprint, client=client, shard_rows=args.shard_rows
        )
    finally:
        client.close()
    n = m["source"]["n"]
    print(
        f"compressed {n} vectors {model.d_in} -> {model.d_out}: {len(m['shards'])} shards in "
        f"{args.output} (annrepro.distributed.read_shards reads them back)"
    )
    return 0


# rows per block of `ccst compress`: read from the memory-mapped input, compressed (forward
# passes under --max-memory-mb, as CCST.transform batches) and appended to the output file, so
# that memory holds one block, never the whole input or output (issue 14). Rows are independent
# (the network is in eval mode): the file equals one transform of the whole input.
BLOCK_ROWS = 1 << 16


def _shift_rows(problem: str, offset: int) -> str:
    """A DataError problem about block rows ("row 3: ...") renumbered from the file's start."""
    import re

    return re.sub(r"^row (\d+)", lambda m: f"row {int(m.group(1)) + offset}", problem)


def _compress(args) -> int:
    from annrepro.vecio import FORMATS, VectorWriter, mmap_vectors

    from ccst.api import CCST
    from ccst.errors import DataError

    if args.engine == "dask":
        model = CCST.load(args.model, device=args.device)
        x = mmap_vectors(args.input)
        if x.shape[1] != model.d_in:
            raise _FileProblem(
                args.input,
                f"vectors of dimension {x.shape[1]}, but the model {args.model} was trained on "
                f"dimension {model.d_in}",
            )
        return _compress_dask(args, model)
    if Path(args.output).suffix.lower() not in FORMATS:
        raise _FileProblem(
            args.output, f"unknown extension; expected one of {', '.join(sorted(FORMATS))}"
        )
    _check_output_file(args.output)
    model = CCST.load(args.model, device=args.device)
    x = mmap_vectors(args.input)
    if x.shape[1] != model.d_in:
        raise _FileProblem(
            args.input,
            f"vectors of dimension {x.shape[1]}, but the model {args.model} was trained on "
            f"dimension {model.d_in}",
        )
    n = x.shape[0]
    dtype = "float32" if args.output.lower().endswith(".npy") else None
    # one block in memory at a time; the output is written atomically when every row is in
    with VectorWriter(args.output, n, model.d_out, dtype=dtype) as out:
        for i0 in range(0, n, BLOCK_ROWS):
            try:
                y = model.transform(x[i0 : i0 + BLOCK_ROWS], max_memory_mb=args.max_memory_mb)
            except DataError as e:
                raise _FileProblem(args.input, _shift_rows(e.problem, i0)) from None
            out.write(y)
    print(f"compressed {n} vectors {model.d_in} -> {model.d_out}: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
