"""`catalyzer reference-run`: the authors' released training protocol on sift-10K.

What the released code (facebookresearch/spreadingvectors, train.py / eval.py / lib/) does, here
on the registry's `sift-10K` (learn 25k, base 10k, 100 queries):

- preset: d_out 24, lambda 0.02, hidden 1024 (train.py --dint 1024 --dout 24 --lambda_uniform
  0.02, the README's training example), 160 epochs (--epochs), batch 64, SGD momentum 0.9,
  lr stages 0.1 / 0.1 / 0.05 / 0.01 of epochs / 4 each (--lr_schedule: with 160 epochs, 0.05
  from epoch 80 and 0.01 from epoch 120).
- positives: the exact 10-NN of each training vector among the training vectors, the vector
  itself included (train.py: get_nearestneighbors(xt, xt, 10)); one drawn per anchor and epoch.
- negatives: the 50th neighbour of f(x) among f(training vectors), re-mined at the start of every
  epoch with faiss HNSW32 (efSearch 64; the released code's search on a CPU).
- anchors, positives and negatives in three forward passes (own batch-norm statistics each).
- training vectors learn[:n_train] (20000); validation queries learn[n_train:n_train + n_valq]
  (5000) against the training vectors as base (sift-10K's learn set is too small for the
  released split of a separate 1M base); validation every 10 epochs (--val_freq 10: epochs 10,
  20, ..., 160; here also after the last epoch when --epochs is not a multiple of 10); the kept
  checkpoint is the best validation zn_79 1-recall@10 (--save_best_criterion zn_79,rank=10).
- evaluation of the kept checkpoint (eval.py / lib/metrics.evaluate): (A) the 100 official
  queries against the base, ground truth = the shipped file (first column); (B) the
  n_valq vectors learn[n_train:n_train + n_valq] as queries against the base, exact ground
  truth. 1-recall@1/10/100 for the lattices zn_79, zn_10, zn_3 (64, 32, 16 bits in 24-d;
  asymmetric), OPQ8_64,PQ8 (trained on f(learn[:10000]), as eval.py's trainset=xt[:10000]) on
  the catalyzed output, and no quantization ("none").

Everything is measured: seconds per epoch (negative mining + training; validation apart) and the
share of mining, at the given thread count. Results go to `<out>/reference-run.json` and
`<out>/reference-run.txt`, each written atomically.
"""

from __future__ import annotations

import json
import logging
import platform
import time

import numpy as np
from annrepro.errors import InputError  # a ValueError: bad input, one CLI line

from .train import PRESETS, TrainConfig, train_catalyzer

__all__ = ["REFERENCE", "QUANTIZERS", "reference_config", "reference_run", "format_table"]

log = logging.getLogger(__name__)

# The released protocol (train.py defaults and the README's example), see the module docstring.
REFERENCE = {
    "d_out": 24,
    "lam": 0.02,
    "hidden": 1024,
    "epochs": 160,
    "batch_size": 64,
    "momentum": 0.9,
    "k_pos": 10,
    "k_neg": 50,
    "val_every": 10,
    "val_quantizer": "zn_79",
    "n_train": 20000,
    "n_val_queries": 5000,
    "ntrain_opq": 10000,
}
QUANTIZERS = ("zn_79", "zn_10", "zn_3", "OPQ8_64,PQ8", "none")
RECALL_KS = (1, 10, 100)


def reference_config(seed: int, epochs: int = 160, hidden: int = 1024) -> TrainConfig:
    """The released code's training configuration (hidden / epochs shrinkable for tests)."""
    r = REFERENCE
    return TrainConfig(
        d_out=r["d_out"],
        hidden=int(hidden),
        lam=r["lam"],
        k_pos=r["k_pos"],
        k_neg=r["k_neg"],
        epochs=int(epochs),
        batch_size=r["batch_size"],
        momentum=r["momentum"],
        lr_stages=PRESETS["released"]["lr_stages"],
        seed=int(seed),
        n_val=0,  # validation on explicit arrays (train_catalyzer(validation=...))
        val_quantizer=r["val_quantizer"],
        val_every=r["val_every"],
        bn_passes="separate",
        neg_search="hnsw32",
        pos_include_self=True,
    )


def _search(quantizer: str, yq: np.ndarray, yb: np.ndarray, yt: np.ndarray, k: int) -> np.ndarray:
    """I int64 (nq, k): the base yb quantized by `quantizer`, queries yq unquantized."""
    import faiss

    from .baselines import opq_index
    from .lattice import ZnSphereLattice

    if quantizer == "none":
        return faiss.knn(yq, yb, k)[1]
    if quantizer.startswith("zn_"):
        lat = ZnSphereLattice(yb.shape[1], int(quantizer[3:]))
        return lat.search(yq, lat.encode(yb), k)[1]
    if quantizer == "OPQ8_64,PQ8":
        # 'np' skips faiss's polysemous training: it permutes centroid ids, ADC results unchanged
        index = opq_index(yb.shape[1], "OPQ8_64,PQ8np")
        index.train(yt)
        index.add(yb)
        return index.search(yq, k)[1]
    raise InputError(f"unknown quantizer {quantizer!r}")


def _recalls(I: np.ndarray, gt1: np.ndarray) -> dict:
    from annrepro.metrics import one_recall_at

    return {f"1-recall@{k}": float(one_recall_at(I, gt1, k)) for k in RECALL_KS}


def _shipped_gt(ds) -> tuple[np.ndarray, str]:
    """The data set's shipped ground truth (first column), or the exact one if it ships none."""
    from annrepro.registry import locate_file
    from annrepro.vecio import read_vectors

    rel = ds.entry.get("groundtruth")
    path = locate_file(rel) if rel else None
    if path is None:
        return ds.gt(1)[:, :1], "exact (the data set ships no ground truth)"
    gt = np.asarray(read_vectors(path))[:, :1].astype(np.int64)
    if gt.shape[0] != ds.nq:
        raise InputError(f"{path}: {gt.shape[0]} ground-truth rows for {ds.nq} queries")
    return gt, f"shipped ({rel})"


def reference_run(
    dataset: str = "sift-10K",
    seeds=(0,),
    epochs: int = 160,
    hidden: int = 1024,
    n_train: int = REFERENCE["n_train"],
    n_val_queries: int = REFERENCE["n_val_queries"],
    n_threads: int = 1,
    progress: bool = False,
) -> dict:
    """Train and evaluate the released protocol once per seed; returns the JSON-able record."""
    import faiss
    import torch
    from annrepro.datasets import get_dataset
    from annrepro.threads import threads

    ds = get_dataset(dataset)
    ds.check()
    nt = ds.nt
    if not ds.has_learn:
        raise InputError(f"{dataset}: no learn set (the reference protocol trains on learn rows)")
    if n_train + n_val_queries > nt:
        raise InputError(
            f"{dataset}: --n-train {n_train} + --n-val-queries {n_val_queries} exceed its {nt} "
            "learn vectors"
        )
    xt = np.ascontiguousarray(ds.xt, dtype=np.float32)
    xtr = xt[:n_train]
    xvq = xt[n_train : n_train + n_val_queries]
    xb = np.ascontiguousarray(ds.xb, dtype=np.float32)
    xq = np.ascontiguousarray(ds.xq, dtype=np.float32)
    gt_a, gt_a_source = _shipped_gt(ds)
    gt_b = faiss.knn(xvq, xb, 1)[1]
    ntrain_opq = min(REFERENCE["ntrain_opq"], n_train)
    out = {
        "protocol": {
            **{k: v for k, v in REFERENCE.items() if k not in ("epochs", "hidden")},
            "epochs": int(epochs),
            "hidden": int(hidden),
            "n_train": int(n_train),
            "n_val_queries": int(n_val_queries),
            "ntrain_opq": int(ntrain_opq),
            "lr_stages": [list(s) for s in PRESETS["released"]["lr_stages"]],
            "positives": "exact 10-NN in the training set, the vector itself included",
            "negatives": "50th neighbour in the output space, HNSW32 efSearch 64, every epoch",
            "bn_passes": "separate",
            "training": f"learn[0:{n_train}]",
            "validation": f"learn[{n_train}:{n_train + n_val_queries}] against learn[0:{n_train}]",
            "eval_A": f"{ds.nq} official queries against the {ds.nb} base vectors, ground truth "
            + gt_a_source,
            "eval_B": f"learn[{n_train}:{n_train + n_val_queries}] against the {ds.nb} base "
            "vectors, exact ground truth",
        },
        "dataset": dataset,
        "threads": int(n_threads),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "seeds": {},
    }
    with threads(n_threads):
        for seed in seeds:
            cfg = reference_config(seed, epochs=epochs, hidden=hidden)
            t0 = time.perf_counter()
            res = train_catalyzer(xtr, cfg, progress=progress, validation=(xvq, xtr))
            wall = time.perf_counter() - t0
            from .api import Catalyzer

            cat = Catalyzer.from_result(res)
            yt = cat.transform(xtr[:ntrain_opq])
            yb = cat.transform(xb)
            evals = {}
            for name, q, gt in (("A", xq, gt_a), ("B", xvq, gt_b)):
                yq = cat.transform(q)
                evals[name] = {
                    quant: _recalls(_search(quant, yq, yb, yt, 100), gt) for quant in QUANTIZERS
                }
            h = res.history
            mine = sum(r["mine_s"] for r in h)
            train = sum(r["train_s"] for r in h)
            out["seeds"][str(seed)] = {
                "best_epoch": res.best_epoch + 1,
                "best_val_zn_79_1-recall@10": res.best_score,
                "s_per_epoch": (mine + train) / len(h),
                "mining_share": mine / (mine + train) if mine + train > 0 else 0.0,
                "val_s_total": sum(r.get("val_s", 0.0) for r in h),
                "train_wall_s": wall,
                "eval": evals,
                "history": h,
            }
            log.info(
                "seed %d: %.2f s/epoch, best epoch %d",
                seed,
                (mine + train) / len(h),
                res.best_epoch + 1,
            )
    return out


def format_table(rec: dict) -> str:
    """The printed table: one line per seed, evaluation and quantizer."""
    p = rec["protocol"]
    lines = [
        f"catalyzer reference-run on {rec['dataset']}: d_out {p['d_out']}, lambda {p['lam']}, "
        f"hidden {p['hidden']}, {p['epochs']} epochs, batch {p['batch_size']}, "
        f"{rec['threads']} thread(s)",
        f"  training {p['training']}; validation {p['validation']}",
        f"  (A) {p['eval_A']}",
        f"  (B) {p['eval_B']}",
        "",
        f"{'seed':>4} {'eval':>4} {'quantizer':<12} {'1-R@1':>7} {'1-R@10':>7} {'1-R@100':>7}",
    ]
    for seed, r in rec["seeds"].items():
        for ev, by_q in r["eval"].items():
            for quant, v in by_q.items():
                lines.append(
                    f"{seed:>4} {ev:>4} {quant:<12} {100 * v['1-recall@1']:7.2f} "
                    f"{100 * v['1-recall@10']:7.2f} {100 * v['1-recall@100']:7.2f}"
                )
        best = r["best_val_zn_79_1-recall@10"]
        lines.append(
            f"{seed:>4} best epoch {r['best_epoch']} (validation zn_79 1-recall@10 "
            f"{'n/a' if best is None else f'{100 * best:.2f}'}); {r['s_per_epoch']:.2f} s/epoch, "
            f"mining {100 * r['mining_share']:.0f}%, validation {r['val_s_total']:.1f} s in all"
        )
    return "\n".join(lines) + "\n"


def write_results(rec: dict, out_dir) -> tuple:
    """`<out_dir>/reference-run.json` and `.txt`, atomically. Returns both paths."""
    from pathlib import Path

    from annrepro.atomic import atomic_write_text

    out_dir = Path(out_dir)
    js, txt = out_dir / "reference-run.json", out_dir / "reference-run.txt"
    atomic_write_text(js, json.dumps(rec, indent=1, sort_keys=False) + "\n")
    atomic_write_text(txt, format_table(rec))
    return js, txt
