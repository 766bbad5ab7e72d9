"""Trained catalyzers memoised across tables and runs (the table producers' model cache).

`fit_cached` trains a catalyzer once per (data, configuration, train.CODE_VERSION, torch
threads). It keeps the result in process and in `annrepro.groundtruth.cache_dir()/models`.
`result_to_blob` / `result_from_blob` are the file format of a cached `TrainResult`: plain
tensors, numbers and lists, so `torch.load(weights_only=True)` reads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from .train import CODE_VERSION, TrainConfig, TrainResult, train_catalyzer

__all__ = ["cache_key", "fit_cached", "result_from_blob", "result_to_blob"]

CACHE_FORMAT = 1  # the files' format_version (result_from_blob reads older files alike)

log = logging.getLogger(__name__)


def cache_key(data_key: str, cfg: TrainConfig) -> str:
    """32 hex digits naming one trained model: data, configuration, code version, threads."""
    import torch

    # torch's thread count can change float summation order, hence the weights: part of the key
    th = torch.get_num_threads()
    blob = json.dumps(
        {"data": data_key, "cfg": cfg.numbers_dict(), "v": CODE_VERSION, "th": th}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def result_to_blob(res: TrainResult) -> dict:
    """The cached file's content for a TrainResult."""
    return {
        "state_dict": res.state_dict,
        "config": res.config.to_dict(),
        "d_in": res.d_in,
        "best_epoch": res.best_epoch,
        "best_score": res.best_score,
        "history": res.history,
        "train_s": res.train_s,
        "vectors_per_s": res.vectors_per_s,
        "mining_share": res.mining_share,
    }


def result_from_blob(blob: dict) -> TrainResult:
    """The TrainResult of `result_to_blob`'s dict (KeyError / TypeError if it is not one)."""
    return TrainResult(
        state_dict=blob["state_dict"],
        config=TrainConfig.from_dict(blob["config"]),
        d_in=int(blob["d_in"]),
        best_epoch=int(blob["best_epoch"]),
        best_score=blob["best_score"],
        history=blob["history"],
        train_s=float(blob["train_s"]),
        vectors_per_s=float(blob["vectors_per_s"]),
        mining_share=float(blob["mining_share"]),
    )


def fit_cached(
    xt: np.ndarray,
    cfg: TrainConfig,
    data_key: str | None = None,
    cache: bool = True,
    progress: bool = False,
    memo=None,
) -> tuple[TrainResult, bool]:
    """`train_catalyzer` kept on disk (annrepro cache_dir()/models) and, with `memo`, in the run.

    Args:
        xt: float32 (nt, d_in) learn set, as `train_catalyzer` takes it.
        data_key: names xt in the key (default: a hash of xt).
        cache: read and write the disk cache.
        memo: a producer's `ctx.memo` (run-scoped, with its memory budget), or None.
    Returns:
        (result, hit): one model per data set and configuration (d_out, lambda, seed, ...),
        reused across tables and runs; hit is False only when this call trained it.
    """
    import torch
    from annrepro.atomic import atomic_save
    from annrepro.groundtruth import array_fingerprint, cache_dir

    xt = np.ascontiguousarray(xt, dtype=np.float32)
    key = cache_key(data_key or array_fingerprint(xt), cfg)
    path = Path(cache_dir()) / "models" / f"catalyzer-{key}.pt"

    def load_or_train() -> tuple[TrainResult, bool]:
        if cache and path.exists():
            try:
                return result_from_blob(torch.load(path, weights_only=True)), True
            except Exception as e:  # a corrupt or stale file: retrain
                log.warning("ignoring unreadable cached model %s: %s", path, e)
        res = train_catalyzer(xt, cfg, progress=progress)
        if cache:  # a unique temporary: two runs sharing the cache never break each other
            atomic_save(path, result_to_blob(res), CACHE_FORMAT, "catalyzer.cache.TrainResult")
        return res, False

    if memo is None:
        return load_or_train()
    called = []

    def first():
        called.append(True)
        return load_or_train()

    res, hit = memo(f"catalyzer.model:{key}", first)
    return res, hit if called else True
