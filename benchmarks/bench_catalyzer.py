"""Benchmark of catalyzer training (prints figures; not a test).

For each (hidden width, training size) it trains a catalyzer for a few epochs (Sec. 5.2 network,
rank + KoLeo loss, negatives mined once per epoch with one batched faiss search, Sec. 3.2) and
prints, per epoch:

- training throughput: training vectors per second, negative mining included
  (n / (mining + SGD time)), and of the SGD steps alone;
- the share of the epoch spent mining negatives (forward pass over the training set + faiss
  k_neg-NN search in the output space).

The data are seeded Gaussian vectors (d_in = 96, as Deep1M) unless `--dataset` names a registry
data set (its learn set is used). These numbers are what the spec tomls' small-scale training
budget is sized from: time of one model = epochs x n / throughput (+ validation).

    python benchmarks/bench_catalyzer.py [--quick] [--threads 1] [--dataset glove100-norm-100K]
        [--hidden 512 --n 10000] [--epochs 2]

Run with nothing else on the machine; the thread count is printed with every timing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _data(dataset: str | None, n: int, d: int, seed: int = 0) -> np.ndarray:
    if dataset:
        from annrepro.datasets import get_dataset

        xt = get_dataset(dataset).xt
        if xt.shape[0] < n:
            raise SystemExit(f"{dataset} has {xt.shape[0]} learn vectors, fewer than {n}")
        return np.ascontiguousarray(xt[:n], dtype=np.float32)
    return np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)


def bench_train(xt: np.ndarray, hidden: int, d_out: int, epochs: int, threads: int) -> None:
    from catalyzer.train import TrainConfig, train_catalyzer

    cfg = TrainConfig.preset(
        "released", d_out=d_out, hidden=hidden, epochs=epochs, n_val=0, val_quantizer="none"
    )
    t0 = time.perf_counter()
    res = train_catalyzer(xt, cfg)
    total = time.perf_counter() - t0
    n = xt.shape[0]
    for h in res.history:
        epoch_s = h["mine_s"] + h["train_s"]
        print(
            f"[train] n={n} d_in={xt.shape[1]} hidden={hidden} d_out={d_out} batch "
            f"{cfg.batch_size}, {threads} thread(s), epoch {h['epoch'] + 1}/{epochs}: "
            f"{epoch_s:.2f} s, {n / epoch_s:.0f} vectors/s with mining "
            f"({n / h['train_s']:.0f} vectors/s SGD only), mining negatives "
            f"{100 * h['mine_s'] / epoch_s:.0f}% of the epoch ({h['mine_s']:.2f} s)"
        )
    print(
        f"[train] n={n} hidden={hidden}: {epochs} epochs in {total:.1f} s "
        f"(positives k-NN and setup included), {res.vectors_per_s:.0f} vectors/s SGD only, "
        f"mining {100 * res.mining_share:.0f}% overall"
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="seconds: small widths and sizes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--dataset", default=None, help="registry data set (learn set); default: random"
    )
    ap.add_argument("--d-in", type=int, default=96)
    ap.add_argument("--d-out", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--hidden", type=int, default=None, help="one width instead of the grid")
    ap.add_argument("--n", type=int, default=None, help="one training size instead of the grid")
    a = ap.parse_args(argv)

    import faiss
    import torch

    faiss.omp_set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    if a.quick:
        grid, epochs = [(64, 2000), (256, 2000)], a.epochs or 2
    else:
        # the small scale's former (256, 5k) and current (512, 10k) training, and wider / larger
        grid = [(256, 5000), (512, 10000), (1024, 10000), (512, 20000), (1024, 20000)]
        epochs = a.epochs or 2
    if a.hidden or a.n:
        grid = sorted({(a.hidden or h, a.n or n) for h, n in grid})
    for hidden, n in grid:
        bench_train(_data(a.dataset, n, a.d_in), hidden, a.d_out, epochs, a.threads)


if __name__ == "__main__":
    main()
