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
    python benchmarks/bench_ccst.py --quick --variants   # fp32 eager vs bf16 autocast vs compile

4. `--variants`: the CPU execution variants of the network, for a short training run and for the
   compression of a base: "fp32" (eager, the baseline), "bf16" (forward under
   torch.autocast("cpu", dtype=torch.bfloat16), outputs cast back to float32, the loss in
   float32) and "compile" (torch.compile, default mode, dynamic=True: batch sizes vary (the
   last batch of an epoch, validation, queries), and one dynamic graph compiled 1.5x faster here
   than the default's static graph plus its dynamic recompile, at the same speed). Each is
   applied by wrapping the model's network (`model.net`; for training, the network that
   `CCST.fit` hands to `ccst.train.train`); the package is not changed. Printed per variant:
   throughput and its ratio to fp32; for compile, the compile time (warm-up minus a steady pass,
   with an empty inductor cache), excluded from the throughput; the max / mean relative
   deviation ||y - y_fp32|| / ||y_fp32|| of the compressed base against fp32 eager, and the
   fraction of queries whose compressed-space nearest neighbour is fp32's; 1-recall@1/@10/@100
   of brute-force search in the compressed space against the exact original-space neighbours,
   with queries, base and training data from one mixture of low intrinsic dimension. Training
   variants are compared after compressing with fp32 eager, so only the training differs.

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


def _data(n: int, d: int, seed: int, mix_seed: int | None = None, intrinsic: int = 0):
    """float32 (n, d): a Gaussian mixture of 64 clusters (seeded). `mix_seed` (default `seed`)
    seeds the mixture, so that several draws can share one. `intrinsic` > 0: the within-cluster
    noise spans a random `intrinsic`-dimensional subspace (std ~4 along each random direction,
    plus 0.05 isotropic noise), so that nearest neighbours survive a 4x compression; 0:
    isotropic unit noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    mix = rng if mix_seed is None else np.random.default_rng(mix_seed)
    centers = mix.standard_normal((64, d)).astype(np.float32) * 2
    labels = rng.integers(0, 64, n)
    if intrinsic > 0:
        basis = mix.standard_normal((intrinsic, d)).astype(np.float32) * (4 / np.sqrt(d))
        noise = rng.standard_normal((n, intrinsic)).astype(np.float32) @ basis
        noise += 0.05 * rng.standard_normal((n, d)).astype(np.float32)
    else:
        noise = rng.standard_normal((n, d)).astype(np.float32)
    x = centers[labels] + noise
    return np.ascontiguousarray(x, dtype=np.float32)


VARIANTS = ("fp32", "bf16", "compile")
N_QUERIES = 500  # --variants: queries of the recall check (our choice)


def _wrap(net, variant: str):
    """`net` run as `variant` (see the module docstring), as a module that shares net's
    parameters (training through it trains `net`) and exposes its `cfg`."""
    import torch

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")

    class VariantNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = net
            # not registered as a submodule: its parameters are net's
            fn = torch.compile(net, dynamic=True) if variant == "compile" else net
            object.__setattr__(self, "_fn", fn)

        @property
        def cfg(self):
            return self.inner.cfg

        def forward(self, x):
            if variant == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return self._fn(x).float()
            return self._fn(x)

    return VariantNet()


def _error(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]


def _phase(args) -> dict:
    """One measured phase, run inside a subprocess: 'fit' (trains, saves), 'transform', or
    'variants' (compression variants and the quality of the models trained by `fit` variants)."""
    import torch

    torch.set_num_threads(args.threads)
    from ccst import CCST
    from ccst.baselines import MLPCompressor, VAECompressor

    if args.phase == "variants":
        return _variants_phase(args)
    rss0 = _rss_mb()
    out = {}
    if args.phase == "fit" and args.variant:
        try:
            out.update(_variant_fit(args))
        except Exception as e:  # torch.compile without a working compiler, ...
            out["error"] = _error(e)
    elif args.phase == "fit":
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


def _variant_fit(args) -> dict:
    """`CCST.fit` with the network that it trains wrapped as `args.variant`, saved to
    args.path. The untimed warm-up is a 1-epoch fit on the same data (so that compile sees
    every batch shape and mode of the timed fit); compile time ~ warm-up minus one steady epoch."""
    import ccst.api
    from ccst import CCST

    xt = _data(args.nt, args.d, seed=0, mix_seed=0, intrinsic=args.intrinsic)
    orig_train = ccst.api.train

    def train(net, *a, **kw):
        return orig_train(_wrap(net, args.variant), *a, **kw)

    ccst.api.train = train
    try:
        kw = dict(compression_factor=4, batch_size=args.batch_size, lr=1e-4, progress=False)
        t0 = time.perf_counter()
        CCST(**kw, epochs=1).fit(xt)
        warm = time.perf_counter() - t0
        model = CCST(**kw, epochs=args.epochs)
        t0 = time.perf_counter()
        model.fit(xt)
        dt = time.perf_counter() - t0
    finally:
        ccst.api.train = orig_train
    model.save(args.path)  # model.net: the trained network itself, not the wrapper
    return {
        "vectors_per_s": args.epochs * args.nt / dt,
        "seconds": dt,
        "warmup_s": warm,
        "compile_s": warm - dt / args.epochs if args.variant == "compile" else None,
    }


def _quality(y_q, y_b, gt, ref=None) -> dict:
    """1-recall@1/@10/@100 of brute force over the compressed base `y_b` against the
    original-space exact neighbours `gt`; against `ref` = (compressed base, compressed-space
    neighbours I) of fp32: relative deviation of the compressed base and the fraction of queries
    whose compressed-space nearest neighbour is fp32's."""
    import numpy as np
    from annrepro.groundtruth import knn_exact
    from annrepro.metrics import one_recall_at

    _, I = knn_exact(y_q, y_b, 100)
    out = {k: one_recall_at(I, gt, n) for k, n in (("r1", 1), ("r10", 10), ("r100", 100))}
    out["I"] = I
    if ref is not None:
        yr, Ir = ref
        dev = np.linalg.norm(y_b - yr, axis=1) / np.maximum(np.linalg.norm(yr, axis=1), 1e-30)
        out["dev_max"], out["dev_mean"] = float(dev.max()), float(dev.mean())
        out["same_nn"] = float((I[:, 0] == Ir[:, 0]).mean())
    return out


def _variants_phase(args) -> dict:
    """Compression of the base by each variant of the fp32-trained model, and fp32 compression
    by each trained variant (models `<variant>.pt` in the directory args.path)."""
    from annrepro.groundtruth import knn_exact
    from ccst import CCST

    x = _data(args.nb + N_QUERIES, args.d, seed=1, mix_seed=0, intrinsic=args.intrinsic)
    xb, xq = x[: args.nb], x[args.nb :]
    gt = knn_exact(xq, xb, 1)[1]
    out = {"compression": {}, "training": {}}
    model = CCST.load(Path(args.path) / "fp32.pt")
    net = model.net
    ref = None
    for v in VARIANTS:
        try:
            model.net = _wrap(net, v)
            # warm-up on the whole base (compile sees every batch shape), then a steady pass
            t0 = time.perf_counter()
            model.transform(xb)
            warm = time.perf_counter() - t0
            t0 = time.perf_counter()
            y_b = model.transform(xb)
            dt = time.perf_counter() - t0
            y_q = model.transform(xq)
        except Exception as e:
            out["compression"][v] = {"error": _error(e)}
            continue
        r = {"vectors_per_s": args.nb / dt, "seconds": dt, "warmup_s": warm}
        r["compile_s"] = warm - dt if v == "compile" else None
        r.update(_quality(y_q, y_b, gt, ref))
        if v == "fp32":
            ref = (y_b, r["I"])
        out["compression"][v] = r
    ref = None
    for v in VARIANTS:
        path = Path(args.path) / f"{v}.pt"
        if not path.exists():
            continue
        m = CCST.load(path)
        y_b = m.transform(xb)
        q = _quality(m.transform(xq), y_b, gt, ref)
        q["val_loss"] = m.history[-1]["val_loss"]
        if v == "fp32":
            ref = (y_b, q["I"])
        out["training"][v] = q
    for part in out.values():  # neighbour lists are not reported
        for r in part.values():
            r.pop("I", None)
    return out


def _run_phase(args, phase: str, model: str, path: Path, variant: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--_phase", phase, "--_model", model, "--_path", str(path)]
    if variant:
        cmd += ["--_variant", variant]
    for key in ("d", "nt", "nb", "epochs", "batch_size", "threads", "intrinsic"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if getattr(args, "inductor_cache", None):  # --variants: a cold torch.compile cache
        env["TORCHINDUCTOR_CACHE_DIR"] = args.inductor_cache
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


def _fmt_quality(q: dict) -> str:
    dev = ""
    if "dev_max" in q:
        dev = (
            f"; vs fp32: rel. deviation max {q['dev_max']:.2e} mean {q['dev_mean']:.2e}, "
            f"same compressed-space NN {q['same_nn']:.3f}"
        )
    return f"1-recall@1/@10/@100 {q['r1']:.3f}/{q['r10']:.3f}/{q['r100']:.3f}{dev}"


def _report_variants(args, path: Path) -> None:
    args.inductor_cache = str(path / "inductor")  # compile times without a warm disk cache
    fits = {v: _run_phase(args, "fit", "CSST", path / f"{v}.pt", variant=v) for v in VARIANTS}
    if "error" in fits["fp32"]:
        raise SystemExit(f"fp32 training failed: {fits['fp32']['error']}")
    ev = _run_phase(args, "variants", "CSST", path)
    print(
        f"recall: {N_QUERIES} queries; queries, base and training data from one 64-cluster "
        f"mixture of intrinsic dimension {args.intrinsic}; brute force in the compressed space "
        "vs exact original-space neighbours"
    )
    for what, runs in (("training", fits), ("compression", ev["compression"])):
        base = runs["fp32"]["vectors_per_s"]
        for v in VARIANTS:
            r = runs[v]
            label = f"[{what} {v}]"
            if "error" in r:
                print(f"{label} FAILED ({r['error']})")
                continue
            comp = ""
            if r["compile_s"] is not None:
                comp = f", compile ~{r['compile_s']:.1f} s excluded"
            q = ev["training"].get(v) if what == "training" else r
            qual = _fmt_quality(q) if q else "no model"
            if what == "training" and q:
                qual = f"val loss {q['val_loss']:.4g}, fp32 compression: {qual}"
            print(
                f"{label} {r['vectors_per_s']:,.0f} vectors/s (x{r['vectors_per_s'] / base:.2f} "
                f"fp32; {r['seconds']:.2f} s after a {r['warmup_s']:.1f} s warm-up{comp}); {qual}"
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
    ap.add_argument(
        "--variants",
        action="store_true",
        help="instead: fp32 eager vs bf16 autocast vs torch.compile, training and compression",
    )
    ap.add_argument(
        "--intrinsic",
        type=int,
        default=8,
        help="--variants: intrinsic dimension of the synthetic clusters (our choice: 8, so that "
        "nearest neighbours survive the 4x compression and recall can show a loss)",
    )
    ap.add_argument("--_phase", choices=("fit", "transform", "variants"), help=argparse.SUPPRESS)
    ap.add_argument("--_variant", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--_model", default="CSST", help=argparse.SUPPRESS)
    ap.add_argument("--_path", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.d, args.nt, args.nb, args.epochs = 128, 4096, 20000, 2
    if args._phase:
        args.phase, args.model, args.path = args._phase, args._model, args._path
        args.variant = args._variant
        print(json.dumps(_phase(args)))
        return

    import torch

    print(
        f"CCST factor 4, d={args.d} -> {args.d // 4}, nt={args.nt}, nb={args.nb}, "
        f"epochs={args.epochs}, batch {args.batch_size}, torch {torch.__version__}, "
        f"{args.threads} thread(s), {os.cpu_count()} CPU(s)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        if args.variants:
            _report_variants(args, Path(tmp))
            return
        path = Path(tmp) / "ccst.pt"
        _report("CSST training", _run_phase(args, "fit", "CSST", path), args.threads)
        _report("CSST compression", _run_phase(args, "transform", "CSST", path), args.threads)
        if args.baselines:
            for name in ("MLP", "VAE"):
                _report(f"{name} training", _run_phase(args, "fit", name, path), args.threads)


if __name__ == "__main__":
    main()
