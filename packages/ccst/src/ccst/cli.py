"""`ccst` command line.

    ccst train XT_FILE MODEL.pt [--factor 4] [--epochs N] [--checkpoint-dir DIR] ...
    ccst compress MODEL.pt IN_FILE OUT_FILE [--max-memory-mb 256]
    ccst reproduce [--scale tiny|small|full] [annrepro options]

Vector files are any format `annrepro.vecio` reads or writes (.fvecs, .fbin, .npy, ...).
`reproduce` is a thin wrapper over `annrepro reproduce --tables 'ccst.*'`; every option after
`reproduce` is passed on to annrepro unchanged.
"""

from __future__ import annotations

import argparse
import logging
import sys

LOSS_VARIANTS = ("squared", "abs")  # ccst.losses.LOSS_VARIANTS, without importing torch here


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
    tr.add_argument("--epochs", type=int, default=2400, help="Sec. 4.1: 2400")
    tr.add_argument("--batch-size", type=int, default=1024, help="Sec. 4.1: 1024")
    tr.add_argument("--lr", type=float, default=1e-4, help="Sec. 4.1: 1e-4")
    tr.add_argument("--loss", choices=LOSS_VARIANTS, default="squared")
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
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)

    if args.command == "reproduce":
        from annrepro.cli import reproduce_paper

        return reproduce_paper("ccst", rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        if args.command == "train":
            return _train(args)
        return _compress(args)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"ccst {args.command}: error: {e}", file=sys.stderr)
        return 1


def _train(args) -> int:
    from annrepro.vecio import mmap_vectors

    from ccst.api import CCST

    xt = mmap_vectors(args.xt)
    model = CCST(
        compression_factor=args.factor,
        d_out=args.d_out,
        n_tokens=args.tokens,
        depths=tuple(args.depths),
        heads=args.heads,
        qk_ratio=args.qk_ratio,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        loss=args.loss,
        val_fraction=args.val_fraction,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        device=args.device,
    ).fit(xt, checkpoint_dir=args.checkpoint_dir)
    model.save(args.model)
    last = model.history[-1]
    print(
        f"trained {model.d_in} -> {model.d_out} for {last['epoch']} epochs "
        f"(train loss {last['train_loss']:.4g}, val loss {last['val_loss']:.4g}); "
        f"saved {args.model}"
    )
    return 0


def _compress(args) -> int:
    from annrepro.vecio import mmap_vectors, write_vectors

    from ccst.api import CCST

    model = CCST.load(args.model, device=args.device)
    x = mmap_vectors(args.input)
    y = model.transform(x, max_memory_mb=args.max_memory_mb)
    write_vectors(args.output, y)
    print(f"compressed {x.shape[0]} vectors {model.d_in} -> {model.d_out}: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
