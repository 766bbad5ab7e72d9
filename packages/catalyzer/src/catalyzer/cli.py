"""Command line of the catalyzer package.

    catalyzer train --xt learn.fvecs --out model.pt [--d-out 24 --lam 0.02 --preset paper ...]
    catalyzer encode --model model.pt --x base.fvecs --out codes.npy [--quantizer zn_79|sign]
    catalyzer search --model model.pt --codes codes.npy --xq query.fvecs --k 10 --out I.npy
    catalyzer reproduce [OPTIONS]

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
             --scale tiny|small|full, --tables catalyzer.table1)"""


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="catalyzer")
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a catalyzer (Sec. 3, 5.2)")
    t.add_argument("--xt", required=True, help="learn vectors (last --n-val rows held out)")
    t.add_argument("--out", required=True, help="model file (.pt)")
    t.add_argument("--d-out", type=int, default=24)
    t.add_argument("--hidden", type=int, default=1024)
    t.add_argument("--lam", type=float, default=0.02, help="KoLeo weight lambda (Eq. 4)")
    t.add_argument("--preset", default="paper", choices=["paper", "released"])
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--n-val", type=int, default=None)
    t.add_argument("--n-val-queries", type=int, default=None)
    t.add_argument("--val-quantizer", default=None, help="zn_<r2> | sign | none")
    t.add_argument("--end2end-r2", type=int, default=None, help="lattice layer (end-to-end)")
    t.add_argument("--threads", type=int, default=None)
    e = sub.add_parser("encode", help="encode vectors")
    e.add_argument("--model", required=True)
    e.add_argument("--x", required=True)
    e.add_argument("--out", required=True, help=".npy codes")
    e.add_argument("--quantizer", default="zn_79")
    s = sub.add_parser("search", help="search encoded vectors")
    s.add_argument("--model", required=True)
    s.add_argument("--codes", required=True)
    s.add_argument("--xq", required=True)
    s.add_argument("--k", type=int, default=10)
    s.add_argument("--quantizer", default="zn_79")
    s.add_argument("--out", required=True, help=".npy ids, int64 (nq, k)")
    return ap


def _train(args) -> int:
    from annrepro.threads import default_threads, threads
    from annrepro.vecio import read_vectors

    from .api import Catalyzer

    over = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "n_val": args.n_val,
        "n_val_queries": args.n_val_queries,
        "val_quantizer": args.val_quantizer,
        "end2end_r2": args.end2end_r2,
    }
    over = {k: v for k, v in over.items() if v is not None}
    cat = Catalyzer(args.d_out, args.hidden, args.lam, args.preset, seed=args.seed, **over)
    xt = read_vectors(args.xt)
    with threads(args.threads or default_threads()):
        cat.fit(xt, progress=True)
    cat.save(args.out)
    r = cat.result
    print(
        f"trained {cat!r} on {xt.shape[0]} vectors in {r.train_s:.1f} s "
        f"({r.vectors_per_s:.0f} vectors/s, mining {100 * r.mining_share:.0f}%); best epoch "
        f"{r.best_epoch + 1}, validation 1-recall@10 {r.best_score}; saved {args.out}"
    )
    return 0


def _encode(args) -> int:
    import numpy as np
    from annrepro.vecio import read_vectors

    from .api import Catalyzer

    codes = Catalyzer.load(args.model).encode(read_vectors(args.x), args.quantizer)
    np.save(args.out, codes)
    print(f"{codes.shape[0]} codes ({args.quantizer}) -> {args.out}")
    return 0


def _search(args) -> int:
    import numpy as np
    from annrepro.vecio import read_vectors

    from .api import Catalyzer

    cat = Catalyzer.load(args.model)
    _, I = cat.search(read_vectors(args.xq), np.load(args.codes), args.k, args.quantizer)
    np.save(args.out, I)
    print(f"{I.shape[0]} queries x {args.k} results -> {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "reproduce":
        from annrepro.cli import reproduce_paper

        return reproduce_paper("catalyzer", rest)
    if command not in ("train", "encode", "search"):
        print(f"catalyzer: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        return {"train": _train, "encode": _encode, "search": _search}[command](args)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"catalyzer {command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
