"""`ccst` command line.

    ccst train XT_FILE MODEL.pt [--factor 4] [--epochs N] [--checkpoint-dir DIR] ...
    ccst compress MODEL.pt IN_FILE OUT_FILE [--max-memory-mb 256]
    ccst reproduce [--scale tiny|small|full] [annrepro options]

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ccst", description="Train and apply CCST; reproduce the tables of the CCST paper."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "reproduce",
        help="run every ccst.* table (options such as --scale are passed to annrepro)",
        add_help=False,
    )
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
    co.add_argument("output")
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
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)

    if args.command == "reproduce":
        from annrepro.cli import reproduce_paper

        return reproduce_paper("ccst", rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # 6-8 lines per call otherwise
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return _run(_train if args.command == "train" else _compress, args)


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
        return command(args)
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


def _compress(args) -> int:
    from annrepro.vecio import FORMATS, mmap_vectors, write_vectors

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
    try:
        y = model.transform(x, max_memory_mb=args.max_memory_mb)
    except DataError as e:
        raise _FileProblem(args.input, e.problem) from None
    write_vectors(args.output, y)
    print(f"compressed {x.shape[0]} vectors {model.d_in} -> {model.d_out}: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
