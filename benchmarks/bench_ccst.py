"""Benchmarks of CCST (prints figures; not a test), with `ccst.api.CCST` on synthetic data.

1. CSST training throughput: training vectors per second over the epochs of `CCST.fit` (the INRP
   boundary and the validation passes included, as a user sees them);
2. compression throughput of a base: vectors per second of `CCST.transform`;
3. peak memory of each phase, measured in its own subprocess so that its peak is its own:
   peak resident set (resource.getrusage ru_maxrss) and how far it rose above the resident set
   after the imports. Not tracemalloc: it does not see torch's buffers, and tracing made the first
   fit of a process 7x slower here (torch's lazy imports under tracing).

    python benchmarks/bench_ccst.py --quick            # seconds: d=128, 4k train, 20k base
    python benchmarks/bench_ccst.py [--d 960 --nt 20000 --nb 200000 --epochs 3 --threads 1]
    python benchmarks/bench_ccst.py --quick --baselines  # also the MLP and VAE of Table 5

Run with nothing else on the machine; thread counts are printed with every timing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mb() -> float:
    """Current resident set of this process (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _data(n: int, d: int, seed: int):
    """float32 (n, d): a Gaussian mixture of 64 clusters (seeded)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((64, d)).astype(np.float32) * 2
    x = centers[rng.integers(0, 64, n)] + rng.standard_normal((n, d)).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def _phase(args) -> dict:
    """One measured phase, run inside a subprocess: 'fit' (trains, saves) or 'transform'."""
    import torch

    torch.set_num_threads(args.threads)
    from ccst import CCST
    from ccst.baselines import MLPCompressor, VAECompressor

    rss0 = _rss_mb()
    out = {}
    if args.phase == "fit":
        xt = _data(args.nt, args.d, seed=0)
        kw = dict(compression_factor=4, batch_size=args.batch_size, lr=1e-4)
        make = {
            "CSST": lambda epochs: CCST(**kw, epochs=epochs, progress=False),
            "MLP": lambda epochs: MLPCompressor(**kw, epochs=epochs),
            "VAE": lambda epochs: VAECompressor(**kw, epochs=epochs),
        }[args.model]
        # warm-up, not timed: the first AdamW / autograd calls of a process pay ~1-2 s of
        # one-time lazy initialisation inside torch
        t0 = time.perf_counter()
        make(1).fit(xt[: 2 * args.batch_size])
        out["warmup_s"] = time.perf_counter() - t0
        model = make(args.epochs)
        t0 = time.perf_counter()
        model.fit(xt)
        dt = time.perf_counter() - t0
        out["vectors_per_s"] = args.epochs * args.nt / dt
        out["seconds"] = dt
        if args.model == "CSST":
            model.save(args.path)
    else:
        xb = _data(args.nb, args.d, seed=1)
        model = CCST.load(args.path)
        model.transform(xb[:1024])  # warm-up (first-call allocations)
        t0 = time.perf_counter()
        model.transform(xb)
        dt = time.perf_counter() - t0
        out["vectors_per_s"] = args.nb / dt
        out["seconds"] = dt
    out["rss_after_imports_mb"] = rss0
    out["peak_rss_mb"] = _maxrss_mb()
    return out


def _run_phase(args, phase: str, model: str, path: Path) -> dict:
    cmd = [sys.executable, __file__, "--_phase", phase, "--_model", model, "--_path", str(path)]
    for key in ("d", "nt", "nb", "epochs", "batch_size", "threads"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise SystemExit(f"phase {phase} {model} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _report(label: str, r: dict, threads: int) -> None:
    above = r["peak_rss_mb"] - r["rss_after_imports_mb"]
    warm = f", after a {r['warmup_s']:.1f} s untimed warm-up fit" if "warmup_s" in r else ""
    print(
        f"[{label}] {r['vectors_per_s']:,.0f} vectors/s ({r['seconds']:.2f} s, {threads} "
        f"thread(s){warm}); peak RSS {r['peak_rss_mb']:.0f} MiB ({above:.0f} MiB above the "
        f"{r['rss_after_imports_mb']:.0f} MiB after imports)"
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: d=128, nt=4096, nb=20000")
    ap.add_argument("--d", type=int, default=960, help="input dimension (GIST1M: 960)")
    ap.add_argument("--nt", type=int, default=20000, help="training vectors")
    ap.add_argument("--nb", type=int, default=200000, help="base vectors to compress")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=1024, help="Sec. 4.1: 1024")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--baselines", action="store_true", help="also MLP and VAE training")
    ap.add_argument("--_phase", choices=("fit", "transform"), help=argparse.SUPPRESS)
    ap.add_argument("--_model", default="CSST", help=argparse.SUPPRESS)
    ap.add_argument("--_path", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.d, args.nt, args.nb, args.epochs = 128, 4096, 20000, 2
    if args._phase:
        args.phase, args.model, args.path = args._phase, args._model, args._path
        print(json.dumps(_phase(args)))
        return

    import torch

    print(
        f"CCST factor 4, d={args.d} -> {args.d // 4}, nt={args.nt}, nb={args.nb}, "
        f"epochs={args.epochs}, batch {args.batch_size}, torch {torch.__version__}, "
        f"{args.threads} thread(s), {os.cpu_count()} CPU(s)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ccst.pt"
        _report("CSST training", _run_phase(args, "fit", "CSST", path), args.threads)
        _report("CSST compression", _run_phase(args, "transform", "CSST", path), args.threads)
        if args.baselines:
            for name in ("MLP", "VAE"):
                _report(f"{name} training", _run_phase(args, "fit", name, path), args.threads)


if __name__ == "__main__":
    main()
