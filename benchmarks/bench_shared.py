"""Benchmarks of the common library (prints figures; not a test).

1. vector file read throughput: `read_vectors` vs a raw `np.fromfile` of the same bytes;
2. ground-truth throughput: `knn_exact` vs one bare `faiss.knn` call on the same arrays;
3. peak memory of ground truth over a memory-mapped base larger than a 2 GiB budget
   (run in a subprocess so its peak RSS is its own): bounded by the chunk size, not the base;
4. wall time of `annrepro reproduce` per table, read from results/<scale>/*.json if present.

    python benchmarks/bench_shared.py [--big-gib 2.5] [--threads 2]

Run with nothing else on the machine; thread counts are printed with every timing.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _best(fn, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_io(tmp: Path, n=400_000, d=128):
    from annrepro.vecio import read_vectors, write_vectors

    x = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    p = tmp / "x.fvecs"
    write_vectors(p, x)
    mb = p.stat().st_size / 1e6

    def raw():
        a = np.fromfile(p, dtype=np.float32).reshape(n, d + 1)[:, 1:]
        return np.ascontiguousarray(a)

    t_raw = _best(raw)
    t_ours = _best(lambda: read_vectors(p))
    t_nocheck = _best(lambda: read_vectors(p, check_finite=False))
    print(
        f"[io] {n}x{d} fvecs ({mb:.0f} MB): np.fromfile {mb / t_raw:.0f} MB/s, read_vectors "
        f"{mb / t_ours:.0f} MB/s ({t_ours / t_raw:.2f}x the raw time; validation + NaN check), "
        f"without NaN check {mb / t_nocheck:.0f} MB/s ({t_nocheck / t_raw:.2f}x)"
    )


def bench_gt(threads: int, nq=2000, nb=200_000, d=128, k=100):
    import faiss
    from annrepro.groundtruth import knn_exact

    faiss.omp_set_num_threads(threads)
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((nb, d)).astype(np.float32)
    xq = rng.standard_normal((nq, d)).astype(np.float32)
    t_bare = _best(lambda: faiss.knn(xq, xb, k), repeats=2)
    t_ours = _best(lambda: knn_exact(xq, xb, k), repeats=2)
    t_chunk = _best(lambda: knn_exact(xq, xb, k, base_chunk=50_000), repeats=2)
    print(
        f"[gt] {nq}x{nb}x{d}, k={k}, {threads} threads: faiss.knn {t_bare:.2f} s, knn_exact "
        f"{t_ours:.2f} s ({t_ours / t_bare:.2f}x), knn_exact with 4 base chunks "
        f"{t_chunk:.2f} s ({t_chunk / t_bare:.2f}x)"
    )


_CHILD = """
import resource, sys, threading, time, numpy as np
from annrepro.groundtruth import knn_exact
from annrepro.vecio import mmap_vectors

peak_anon = [0]
def poll():  # anonymous (heap) memory, which excludes the file pages of the memory map
    while True:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                peak_anon[0] = max(peak_anon[0], int(line.split()[1]))
        time.sleep(0.02)
threading.Thread(target=poll, daemon=True).start()
xb = mmap_vectors(sys.argv[1])
xq = np.random.default_rng(1).integers(0, 255, (100, xb.shape[1])).astype(np.float32)
t0 = time.perf_counter()
D, I = knn_exact(xq, xb, 10, base_chunk=int(sys.argv[2]))
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
      peak_anon[0] / 2**20)
"""


def bench_gt_memory(tmp: Path, gib: float, chunk=1 << 18, d=128):
    """uint8 base of `gib` GiB on disk (as float32 it would be 4x): peak RSS of knn_exact."""
    n = int(gib * 2**30 / d)
    p = tmp / "big.u8bin"
    with open(p, "wb") as f:
        f.write(np.array([n, d], dtype="<u4").tobytes())
        rng = np.random.default_rng(0)
        for i in range(0, n, 1 << 21):
            f.write(rng.integers(0, 255, (min(1 << 21, n - i), d), dtype=np.uint8).tobytes())
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(p), str(chunk)],
        capture_output=True,
        text=True,
        check=True,
    )
    secs, peak, anon = (float(v) for v in out.stdout.split()[-3:])
    print(
        f"[gt-mem] memory-mapped uint8 base {n:,}x{d} ({gib:.2f} GiB on disk, "
        f"{4 * gib:.1f} GiB as float32), 100 queries, base_chunk={chunk:,} "
        f"(float32 buffer {chunk * d * 4 / 2**30:.3f} GiB): peak heap (RssAnon) {anon:.2f} GiB, "
        f"peak RSS {peak:.2f} GiB (RSS counts the mapped file pages the kernel may drop), "
        f"{secs:.1f} s"
    )


def report_wall_times():
    from annrepro.paths import results_root

    for scale_dir in sorted(results_root().glob("*")):
        recs = [json.loads(p.read_text()) for p in sorted(scale_dir.glob("*.json"))]
        if recs:
            total = sum(r.get("wall_s", 0) for r in recs)
            print(f"[reproduce] scale {scale_dir.name}: {len(recs)} tables, {total:.0f} s total")
            for r in recs:
                print(
                    f"    {r['table']:22s} {r.get('wall_s', 0):8.1f} s  {r.get('threads')} thr"
                    + ("  ERROR" if r.get("error") else "")
                )


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--big-gib",
        type=float,
        default=0.75,
        help="size on disk of the memory-mapped uint8 base (x4 as float32)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-memory", action="store_true")
    a = ap.parse_args()
    print(
        f"python {sys.version.split()[0]}, max RSS so far "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB"
    )
    with tempfile.TemporaryDirectory() as tmp:
        bench_io(Path(tmp))
        bench_gt(a.threads)
        if not a.skip_memory:
            bench_gt_memory(Path(tmp), a.big_gib)
    report_wall_times()


if __name__ == "__main__":
    main()
