"""Command line of the catalyzer package.

    catalyzer train --xt learn.fvecs --out model.pt [--d-out 24 --lam 0.02 --preset paper ...]
                    [--checkpoint-dir DIR]   (a checkpoint per epoch; a rerun resumes from it)
    catalyzer encode --model model.pt --x base.fvecs --out codes.npy [--quantizer zn_79|sign]
    catalyzer search --model model.pt --codes codes.npy --xq query.fvecs --k 10 --out I.npy
    (train, encode, search: [--device cpu|cuda|cuda:N], where the network runs; default cpu)
    catalyzer reproduce [OPTIONS]
    catalyzer reference-run [--seeds 0 1 2] [--epochs 160] [--threads 2] [--out DIR]

`reproduce` runs the catalyzer tables through the annrepro runner: it is `annrepro reproduce
--tables 'catalyzer.*' [OPTIONS]` (a later `--tables catalyzer.table1` narrows the selection).
Vector files: anything `annrepro.vecio.read_vectors` reads (.fvecs, .bvecs, .npy, ...).
"""

from __future__ import annotations

import argparse
import logging
import sys

USAGE = """usage: catalyzer {train,encode,search,reproduce} ...

  train      train a catalyzer on a learn set, save weights + config + data fingerprint
  encode     encode vectors with a trained catalyzer + lattice (zn_<r2>) or sign
  search     search queries among encoded vectors, save the ids
  reproduce  `catalyzer reproduce`: run the catalyzer.* tables (OPTIONS as for
             `annrepro reproduce`, e.g.
             --scale tiny|small|medium|full, --tables catalyzer.table1)
  reference-run  the authors' released training protocol on sift-10K (d_out 24, lambda 0.02,
             hidden 1024, 160 epochs, HNSW32 negatives): 1-recall@1/10/100 of zn_79, zn_10,
             zn_3, OPQ8_64,PQ8 and no quantization, s/epoch, mining share, per seed"""


def _parser() -> argparse.ArgumentParser:
    from annrepro.cli import ArgumentParser, positive_int

    ap = ArgumentParser(prog="catalyzer")
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a catalyzer (Sec. 3, 5.2)")
    t.add_argument("--xt", required=True, help="learn vectors (last --n-val rows held out)")
    t.add_argument("--out", required=True, help="model file (.pt)")
    t.add_argument("--d-out", type=positive_int, default=24)
    t.add_argument("--hidden", type=positive_int, default=1024)
    t.add_argument("--lam", type=float, default=0.02, help="KoLeo weight lambda (Eq. 4)")
    t.add_argument("--preset", default="paper", choices=["paper", "released"])
    t.add_argument("--epochs", type=positive_int, default=None)
    t.add_argument("--batch-size", type=positive_int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--n-val", type=int, default=None, help="held-out rows (default 10000)")
    t.add_argument("--n-val-queries", type=positive_int, default=None)
    t.add_argument("--val-quantizer", default=None, help="zn_<r2> | sign | none")
    t.add_argument("--end2end-r2", type=int, default=None, help="lattice layer (end-to-end)")
    t.add_argument("--threads", type=positive_int, default=None)
    _device_option(t)
    t.add_argument(
        "--checkpoint-dir",
        default=None,
        help="a checkpoint (last.pt) after every epoch; rerunning the same command resumes "
        "from it (same weights as an uninterrupted run)",
    )
    e = sub.add_parser("encode", help="encode vectors")
    e.add_argument("--model", required=True)
    e.add_argument("--x", required=True)
    e.add_argument(
        "--out",
        required=True,
        help="codes file, written as named (an .npz archive with the model id); the input is "
        "encoded block by block into a temporary memory-mapped array beside it, so neither the "
        "vectors nor the codes are held in memory",
    )
    e.add_argument("--quantizer", default="zn_79")
    _device_option(e)
    e.add_argument(
        "--engine",
        choices=("single", "dask"),
        default="single",
        help="dask: --out is a folder of .npy code shards + manifest.json (annrepro.distributed)",
    )
    e.add_argument("--scheduler", help="address of a running Dask scheduler (else a local one)")
    e.add_argument("--workers", type=positive_int, default=None, help="local Dask workers")
    e.add_argument("--shard-rows", type=positive_int, default=1 << 20)
    s = sub.add_parser("search", help="search encoded vectors")
    s.add_argument("--model", required=True)
    s.add_argument("--codes", required=True, help="from encode (checked: quantizer, model)")
    s.add_argument("--xq", required=True)
    s.add_argument("--k", type=positive_int, default=10)
    s.add_argument("--quantizer", default="zn_79")
    _device_option(s)
    s.add_argument("--out", required=True, help="ids: .npy (int64) or .ivecs / .ibin (int32)")
    r = sub.add_parser("reference-run", help="the released code's protocol on sift-10K")
    r.add_argument("--dataset", default="sift-10K", help="registry data set (default sift-10K)")
    r.add_argument("--seeds", type=int, nargs="+", default=[0], help="one training per seed")
    r.add_argument("--epochs", type=positive_int, default=160, help="released: 160")
    r.add_argument("--hidden", type=positive_int, default=1024, help="released: 1024")
    r.add_argument("--n-train", type=positive_int, default=20000, help="training rows learn[:N]")
    r.add_argument(
        "--n-val-queries", type=positive_int, default=5000, help="validation queries after them"
    )
    r.add_argument(
        "--threads", type=positive_int, default=None, help="default: ANNREPRO_THREADS or cores"
    )
    r.add_argument("--out", default=None, help="folder of reference-run.json / .txt")
    return ap


def _device_option(parser) -> None:
    parser.add_argument(
        "--device",
        default="cpu",
        help="torch device of the network: cpu (default), cuda or cuda:N (negatives mining and "
        "searches stay on the CPU)",
    )


def _device(args) -> str:
    """--device, checked before any work (one line when torch has no such device)."""
    from annrepro.devices import check_device

    return check_device(args.device, "--device")


def _reference_run(args) -> int:
    from pathlib import Path

    from annrepro.paths import results_root

    from .reference import format_table, reference_run, write_results

    out = Path(args.out) if args.out else results_root() / "reference-run"
    _check_out(out / "reference-run.json")
    rec = reference_run(
        args.dataset,
        seeds=args.seeds,
        epochs=args.epochs,
        hidden=args.hidden,
        n_train=args.n_train,
        n_val_queries=args.n_val_queries,
        n_threads=_threads(args),
        progress=True,
    )
    js, txt = write_results(rec, out)
    print(format_table(rec), end="")
    print(f"results -> {js} and {txt}")
    return 0


def _threads(args) -> int:
    from annrepro.cli import announce_threads

    return announce_threads(f"catalyzer {args.command}", args.threads)


def _check_out(*paths) -> None:
    from annrepro.cli import check_outputs

    check_outputs(*paths)


def _train(args) -> int:
    from annrepro.threads import threads
    from annrepro.vecio import read_vectors

    from .api import Catalyzer

    device = _device(args)
    if args.checkpoint_dir is not None:
        from pathlib import Path

        from .train import CHECKPOINT_NAME

        _check_out(args.out, Path(args.checkpoint_dir) / CHECKPOINT_NAME)
    else:
        _check_out(args.out)
    over = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "n_val": args.n_val,
        "n_val_queries": args.n_val_queries,
        "val_quantizer": args.val_quantizer,
        "end2end_r2": args.end2end_r2,
    }
    over = {k: v for k, v in over.items() if v is not None}
    cat = Catalyzer(
        args.d_out, args.hidden, args.lam, args.preset, seed=args.seed, device=device, **over
    )
    xt = read_vectors(args.xt)
    with threads(_threads(args)):
        cat.fit(xt, progress=True, checkpoint_dir=args.checkpoint_dir)
    cat.save(args.out)
    r = cat.result
    print(
        f"trained {cat!r} on {xt.shape[0]} vectors in {r.train_s:.1f} s "
        f"({r.vectors_per_s:.0f} vectors/s, mining {100 * r.mining_share:.0f}%); best epoch "
        f"{r.best_epoch + 1}, validation 1-recall@10 {r.best_score}; saved {args.out}"
    )
    return 0


class ModelEncoder:
    """A picklable `x -> Catalyzer.load(model).encode(x, quantizer)` for Dask workers: each
    worker loads the model file (on shared storage) once and keeps it."""

    def __init__(self, model_path: str, quantizer: str, device: str = "cpu"):
        self.model_path, self.quantizer, self.device = model_path, quantizer, device
        self._cat = None

    def __getstate__(self):
        return {**self.__dict__, "_cat": None}

    def __call__(self, x):
        from .api import Catalyzer

        if self._cat is None:
            self._cat = Catalyzer.load(self.model_path).to(self.device)
        return self._cat.encode(x, self.quantizer)


def _encode_dask(args, cat) -> int:
    """`catalyzer encode --engine dask`: one code shard per task, resumable."""
    from pathlib import Path

    from annrepro.distributed import local_client, transform_sharded

    if args.scheduler:
        from distributed import Client

        client = Client(args.scheduler)
    else:
        client = local_client(args.workers)
    print(f"Dask dashboard: {client.dashboard_link}", flush=True)
    fn = ModelEncoder(str(Path(args.model).resolve()), args.quantizer, args.device)
    fingerprint = f"catalyzer-{cat.model_id}-{args.quantizer}"  # refuses shards of another model
    try:
        m = transform_sharded(
            fn, args.x, args.out, fingerprint, client=client, shard_rows=args.shard_rows
        )
    finally:
        client.close()
    print(
        f"{m['source']['n']} codes ({args.quantizer}, model {cat.model_id}): "
        f"{len(m['shards'])} shards in {args.out} (annrepro.distributed.read_shards)"
    )
    return 0


# rows per block of `catalyzer encode`: read from the memory-mapped input, catalyzed and
# quantized, so that memory holds one block of vectors, never the whole input or its features
# (issue 14); a multiple of Catalyzer.transform's batch (4096), so the network sees the batches
# of one transform over the whole file
BLOCK_ROWS = 1 << 16


def _encode(args) -> int:
    import os
    import tempfile
    from pathlib import Path

    import numpy as np
    from annrepro.validate import check_same_dim
    from annrepro.vecio import check_finite_rows, mmap_vectors

    from .api import Catalyzer

    device = _device(args)
    _check_out(args.out)
    cat = Catalyzer.load(args.model).to(device)
    x = mmap_vectors(args.x)  # rows are read block by block (dask: by the workers)
    check_same_dim(model=cat.d_in, input=x, paths={"model": args.model, "input": args.x})
    if args.engine == "dask":
        return _encode_dask(args, cat)
    # the codes go to a memory-mapped .npy beside --out, then into the .npz archive, which
    # numpy copies in 16 MiB chunks: neither the vectors nor the codes are held in memory
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)  # as annrepro.atomic.atomic_path does
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".codes.npy")
    os.close(fd)
    codes = None
    try:
        for i0 in range(0, x.shape[0], BLOCK_ROWS):
            block = np.ascontiguousarray(x[i0 : i0 + BLOCK_ROWS])
            check_finite_rows(block, args.x, offset=i0)
            c = cat.encode(block, args.quantizer)
            if codes is None:
                shape = (x.shape[0], *c.shape[1:])
                codes = np.lib.format.open_memmap(tmp, mode="w+", dtype=c.dtype, shape=shape)
            codes[i0 : i0 + len(c)] = c
        written = cat.save_codes(out, codes, args.quantizer)
    finally:
        del codes  # the map is closed before its file goes
        os.unlink(tmp)
    print(f"{x.shape[0]} codes ({args.quantizer}, model {cat.model_id}) -> {written}")
    return 0


def _search(args) -> int:
    from pathlib import Path

    import numpy as np
    from annrepro.errors import InputError
    from annrepro.validate import check_same_dim
    from annrepro.vecio import read_vectors, write_vectors

    from .api import Catalyzer

    out = Path(args.out)
    if out.suffix.lower() not in (".npy", ".ivecs", ".ibin"):  # the format its extension names
        raise InputError(f"{out}: ids are written as .npy (int64), .ivecs or .ibin (int32)")
    device = _device(args)
    _check_out(out)
    cat = Catalyzer.load(args.model).to(device)
    codes = cat.load_codes(args.codes, args.quantizer)
    xq = read_vectors(args.xq)
    check_same_dim(model=cat.d_in, query=xq, paths={"model": args.model, "query": args.xq})
    _, I = cat.search(xq, codes, args.k, args.quantizer)
    write_vectors(out, I if out.suffix.lower() == ".npy" else I.astype(np.int32))  # atomic
    print(f"{I.shape[0]} queries x {args.k} results -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The catalyzer command line (console script): exit code 0, 1 or 2 (bad input, one line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "reproduce":
        from annrepro.cli import reproduce_paper

        return reproduce_paper("catalyzer", rest)
    if command not in ("train", "encode", "search", "reference-run"):
        print(f"catalyzer: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    from annrepro.cli import run_cli

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    run = {
        "train": _train,
        "encode": _encode,
        "search": _search,
        "reference-run": _reference_run,
    }[command]
    return run_cli("catalyzer", lambda a: run(_parser().parse_args(a)), argv)


if __name__ == "__main__":
    sys.exit(main())
