"""Benchmark of annrepro.distributed (prints figures; not a test).

Exact ground truth of nq queries over an nb-vector synthetic base written to disk (the workers
memory-map it), measured side by side in one run:
- one bare `faiss.knn` on the in-memory arrays (threads = workers, the reference);
- `knn_sharded` in this process (shards, no engine);
- `knn_sharded` on a LocalCluster of 1 worker and of 2 workers (1 thread each).
Figures: seconds, queries/s, and the engine's overhead against faiss.knn at the same threads
(target: <= 15 % at one worker). Defaults are the issue's (10k queries, 2M x 128 base, k 100);
run with nothing else on the machine.

    python benchmarks/bench_distributed.py [--nb 2000000] [--nq 10000] [--shard-rows 250000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _time(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--nb", type=int, default=2_000_000)
    p.add_argument("--nq", type=int, default=10_000)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--shard-rows", type=int, default=250_000)
    p.add_argument("--workers", default="1,2", help="LocalCluster sizes to measure")
    args = p.parse_args(argv)

    import faiss
    from annrepro.distributed import knn_sharded
    from annrepro.vecio import write_vectors
    from distributed import Client, LocalCluster

    rng = np.random.default_rng(0)
    xb = rng.standard_normal((args.nb, args.d), dtype=np.float32)
    xq = rng.standard_normal((args.nq, args.d), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        path = Path(tmp) / "base.fbin"
        write_vectors(path, xb)
        print(f"base {args.nb} x {args.d} ({path.stat().st_size / 1e9:.2f} GB), {args.nq} queries")
        I_1 = None  # ids of the single-threaded faiss.knn: what every sharded run must equal
        for n in [int(w) for w in args.workers.split(",")]:
            faiss.omp_set_num_threads(n)
            t_ref, (_, I_ref) = _time(lambda: faiss.knn(xq, xb, args.k))
            if n == 1:
                I_1 = I_ref
            print(f"[gt] faiss.knn, {n} thread(s): {t_ref:.1f} s ({args.nq / t_ref:.0f} q/s)")
            if n == 1:
                t_loc, (_, I) = _time(
                    lambda: knn_sharded(xq, path, args.k, shard_rows=args.shard_rows)
                )
                same = np.array_equal(I, I_1)
                print(
                    f"[gt] knn_sharded in process, 1 thread: {t_loc:.1f} s "
                    f"({t_loc / t_ref:.2f}x faiss.knn; ids equal: {same})"
                )
            faiss.omp_set_num_threads(1)
            with (
                LocalCluster(n_workers=n, threads_per_worker=1, dashboard_address=":0") as cl,
                Client(cl) as client,
            ):
                client.run(faiss.omp_set_num_threads, 1)
                t_dask, (_, I) = _time(
                    lambda c=client: knn_sharded(
                        xq, path, args.k, client=c, shard_rows=args.shard_rows
                    )
                )
            same = "n/a" if I_1 is None else np.array_equal(I, I_1)
            print(
                f"[gt] knn_sharded on Dask, {n} worker(s) x 1 thread: {t_dask:.1f} s "
                f"({args.nq / t_dask:.0f} q/s; overhead {100 * (t_dask / t_ref - 1):+.0f} % "
                f"against faiss.knn at {n} thread(s); ids equal to 1-thread faiss.knn: {same})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
