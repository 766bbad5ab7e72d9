"""Benchmark of catalyzer training epochs, plain step vs fast step side by side (not a test).

Default: the released protocol (`catalyzer.reference.reference_config`) on the 20000 training
vectors of sift-10K (learn[:20000]):
- d_out 24, hidden 1024, batch 64, SGD momentum 0.9;
- negatives re-mined every epoch with faiss HNSW32, positives from the exact 10-NN.
It trains a few epochs once with each step (`TrainConfig.fast_step` False, then True), same seed
and threads. Per epoch it prints:
- seconds per epoch (negative mining + SGD steps);
- training vectors per second (n / epoch seconds, and of the SGD steps alone);
- the share of the epoch spent mining negatives (forward pass over the training set + the
  HNSW32 build and k_neg-NN search in the output space).
It then prints the fast / plain ratios and whether the loss curves are identical. Both steps are
warmed up first (untimed), and `--repeat` alternates the runs (plain, fast, plain, fast, ...).

`--grid` runs the former size grid instead (seeded Gaussian vectors or `--dataset`'s learn set,
exact negatives, hidden x n); the spec tomls' small-scale training budget was sized from it.

    python benchmarks/bench_catalyzer.py [--threads 1] [--epochs 2] [--dataset sift-10K]
        [--steps plain fast] [--repeat 2] [--grid [--quick] [--hidden 512 --n 10000]]

Run with nothing else on the machine; the thread counts are printed with every timing.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

TIMINGS = ("mine_s", "train_s", "val_s")


def _data(dataset: str | None, n: int, d: int, seed: int = 0) -> np.ndarray:
    if dataset:
        from annrepro.datasets import get_dataset

        xt = get_dataset(dataset).xt
        if xt.shape[0] < n:
            raise SystemExit(f"{dataset} has {xt.shape[0]} learn vectors, fewer than {n}")
        return np.ascontiguousarray(xt[:n], dtype=np.float32)
    return np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)


def _threads() -> str:
    import faiss
    import torch

    return f"torch {torch.get_num_threads()} / faiss {faiss.omp_get_max_threads()} thread(s)"


def _run(xt: np.ndarray, cfg, label: str) -> dict:
    """Train; print one line per epoch; return the mean epoch figures and the loss curve."""
    from catalyzer.train import train_catalyzer

    t0 = time.perf_counter()
    res = train_catalyzer(xt, cfg)
    total = time.perf_counter() - t0
    n = xt.shape[0]
    for h in res.history:
        epoch_s = h["mine_s"] + h["train_s"]
        print(
            f"[{label}] n={n} d_in={xt.shape[1]} hidden={cfg.hidden} d_out={cfg.d_out} batch "
            f"{cfg.batch_size} neg {cfg.neg_search}, {_threads()}, epoch "
            f"{h['epoch'] + 1}/{cfg.epochs}: {epoch_s:.2f} s/epoch, {n / epoch_s:.0f} vectors/s "
            f"({n / h['train_s']:.0f} vectors/s SGD only), mining negatives "
            f"{100 * h['mine_s'] / epoch_s:.0f}% of the epoch ({h['mine_s']:.2f} s), loss "
            f"{h['loss']:.6f}"
        )
    mine = float(np.mean([h["mine_s"] for h in res.history]))
    train = float(np.mean([h["train_s"] for h in res.history]))
    print(
        f"[{label}] {cfg.epochs} epochs in {total:.1f} s (positives k-NN and setup included): "
        f"{mine + train:.2f} s/epoch, {n / (mine + train):.0f} vectors/s, mining "
        f"{100 * mine / (mine + train):.0f}%"
    )
    curve = [{k: v for k, v in h.items() if k not in TIMINGS} for h in res.history]
    return {"epoch_s": mine + train, "mine_s": mine, "train_s": train, "curve": curve}


def bench_steps(xt: np.ndarray, cfg, steps, repeat: int = 1) -> None:
    """The same training once per step kind and repeat, alternating (plain, fast, plain, ...)
    so that a change of the machine's load hits both; ratios of the means against "plain"."""
    from catalyzer.train import train_catalyzer

    for step in steps:  # warm-up: torch's lazy imports and first-call costs (~2 s), untimed
        warm = replace(cfg, epochs=1, fast_step=step == "fast", hidden=min(cfg.hidden, 64))
        train_catalyzer(xt[:2000], warm)
    runs = {step: [] for step in steps}
    for _ in range(repeat):
        for step in steps:
            runs[step].append(_run(xt, replace(cfg, fast_step=step == "fast"), step))
    out = {
        step: {
            key: float(np.mean([r[key] for r in rs])) for key in ("epoch_s", "mine_s", "train_s")
        }
        | {"curves": [r["curve"] for r in rs]}
        for step, rs in runs.items()
    }
    if "plain" not in out:
        return
    ref = out["plain"]
    for step, r in out.items():
        if step == "plain":
            continue
        same = all(c == ref["curves"][0] for c in r["curves"] + ref["curves"])
        print(
            f"[{step} vs plain] {_threads()}, {repeat} run(s) each: epoch "
            f"{ref['epoch_s'] / r['epoch_s']:.2f}x faster ({ref['epoch_s']:.2f} -> "
            f"{r['epoch_s']:.2f} s), SGD steps {ref['train_s'] / r['train_s']:.2f}x "
            f"({ref['train_s']:.2f} -> {r['train_s']:.2f} s), mining {ref['mine_s']:.2f} -> "
            f"{r['mine_s']:.2f} s; loss curves identical: {'yes' if same else 'NO'}"
        )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=None, help="default 2")
    ap.add_argument("--repeat", type=int, default=1, help="runs per step, alternating")
    ap.add_argument("--steps", nargs="+", default=["plain", "fast"], choices=["plain", "fast"])
    ap.add_argument("--dataset", default=None, help="registry data set (learn set)")
    ap.add_argument("--n-train", type=int, default=20000, help="released protocol: learn[:n]")
    ap.add_argument("--grid", action="store_true", help="the former hidden x n grid")
    ap.add_argument("--quick", action="store_true", help="--grid: small widths and sizes")
    ap.add_argument("--d-in", type=int, default=96, help="--grid: random data dimension")
    ap.add_argument("--d-out", type=int, default=24)
    ap.add_argument("--hidden", type=int, default=None, help="one width instead of the grid")
    ap.add_argument("--n", type=int, default=None, help="--grid: one training size")
    a = ap.parse_args(argv)

    import faiss
    import torch

    faiss.omp_set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    epochs = a.epochs or 2
    if not a.grid:
        from catalyzer.reference import reference_config

        cfg = replace(reference_config(0, epochs=epochs, hidden=a.hidden or 1024), d_out=a.d_out)
        xt = _data(a.dataset or "sift-10K", a.n_train, 0)
        print(f"released protocol on {a.dataset or 'sift-10K'} learn[:{a.n_train}], {_threads()}")
        bench_steps(xt, cfg, a.steps, a.repeat)
        return

    from catalyzer.train import TrainConfig

    if a.quick:
        grid = [(64, 2000), (256, 2000)]
    else:
        # the small scale's former (256, 5k) and current (512, 10k) training, and wider / larger
        grid = [(256, 5000), (512, 10000), (1024, 10000), (512, 20000), (1024, 20000)]
    if a.hidden or a.n:
        grid = sorted({(a.hidden or h, a.n or n) for h, n in grid})
    for hidden, n in grid:
        cfg = TrainConfig.preset(
            "released",
            d_out=a.d_out,
            hidden=hidden,
            epochs=epochs,
            n_val=0,
            val_quantizer="none",
        )
        bench_steps(_data(a.dataset, n, a.d_in), cfg, a.steps, a.repeat)


if __name__ == "__main__":
    main()
