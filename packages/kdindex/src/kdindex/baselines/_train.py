"""Build, train and score one learned baseline of Table 2 (`evaluate_learned_baseline`)."""

from __future__ import annotations

import logging

import numpy as np
import torch
from annrepro.timing import Timer
from tqdm.auto import tqdm

from ..posting import search_scores
from ._common import LBConfig, _sample_docs, _warm_quantizer
from .deeppq import DeepPQ
from .diffpq import DiffPQ
from .gcd import GCD
from .pqvae import PQVAE
from .repconc import RepCONC

log = logging.getLogger(__name__)

# Table 2's rows, in the paper's order
METHODS = {"DiffPQ": DiffPQ, "DeepPQ": DeepPQ, "GCD": GCD, "RepCONC": RepCONC, "PQVAE": PQVAE}
LEARNED_BASELINES = tuple(METHODS)


def build_model(name: str, xs: np.ndarray, metric: str, B: int, W: int, cfg: LBConfig):
    """A warm-started baseline. xs: float32 (n, d) documents in input units (warm-start sample;
    also sets the input scale). Returns the model (its `scale` divides inputs)."""
    if name not in LEARNED_BASELINES:
        raise ValueError(f"unknown learned baseline {name!r}; expected one of {LEARNED_BASELINES}")
    torch.manual_seed(cfg.seed)
    scale = float(np.sqrt(np.mean(np.square(xs, dtype=np.float64)))) or 1.0
    xs = np.ascontiguousarray(xs / scale, dtype=np.float32)
    cls = METHODS[name]
    return cls.from_warm(_warm_quantizer(cls.warm_kind, xs, B, W, cfg), xs, cfg, metric, scale)


def fit_model(model, xb: np.ndarray, xt: np.ndarray, labels: np.ndarray) -> list[dict]:
    """Train in place on training queries xt float32 (nt, d) and their teacher top-K labels
    int64 (nt, K) into xb float32 (nb, d) (input units). Adam (lr, batch: Sec. 4.1) for
    cfg.epochs passes. Returns the curve: one {"epoch", "loss"} per epoch (mean batch loss)."""
    cfg = model.cfg
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    nt = len(xt)
    use = np.arange(nt)
    if cfg.n_queries and nt > cfg.n_queries:
        use = np.sort(rng.permutation(nt)[: cfg.n_queries])
    xqt = torch.from_numpy(np.ascontiguousarray(xt[use], np.float32) / model.scale)
    lab = labels[use]
    opt = torch.optim.Adam(model.trainable(), lr=cfg.lr)
    curve = []
    bar = tqdm(range(cfg.epochs), desc=type(model).__name__, disable=not cfg.progress, leave=False)
    for ep in bar:
        order = rng.permutation(len(use))
        losses = []
        for i0 in range(0, len(order), cfg.batch):
            bq = order[i0 : i0 + cfg.batch]
            ids = lab[bq]
            xd = torch.from_numpy(np.ascontiguousarray(xb[ids], np.float32) / model.scale)
            if isinstance(model, RepCONC):
                loss = model.batch_loss(xqt[bq], xd, torch.from_numpy(ids.reshape(-1)))
            else:
                loss = model.batch_loss(xqt[bq], xd)
            opt.zero_grad()
            loss.backward()
            opt.step()
            model.after_step()
            losses.append(loss.item())
        curve.append({"epoch": ep, "loss": float(np.mean(losses))})
        bar.set_postfix(loss=f"{np.mean(losses):.4f}")
    if isinstance(model, RepCONC) and model.sinkhorn_misses:
        log.warning(
            "RepCONC: %d Sinkhorn solves stopped before their marginals matched (their plans "
            "were rounded all the same)",
            model.sinkhorn_misses,
        )
    return curve


def _check_inputs(name, ds, xt, labels, p) -> tuple[np.ndarray, np.ndarray]:
    if name not in LEARNED_BASELINES:
        raise ValueError(f"unknown learned baseline {name!r}; expected one of {LEARNED_BASELINES}")
    if ds.metric not in ("l2", "ip"):
        raise ValueError(f"unknown metric {ds.metric!r}; expected 'l2' or 'ip'")
    xt = np.asarray(xt)
    labels = np.asarray(labels)
    if xt.ndim != 2 or xt.shape[1] != ds.d:
        raise ValueError(f"training queries must be (nt, d={ds.d}); got {xt.shape}")
    if labels.ndim != 2 or labels.shape[0] != len(xt) or labels.shape[1] < 1:
        raise ValueError(
            f"labels must be (nt={len(xt)}, K >= 1) teacher top-K ids; got {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer ids; got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= ds.nb:
        raise ValueError(
            f"labels hold ids in [{labels.min()}, {labels.max()}], outside the base [0, {ds.nb})"
        )
    B, W = int(p["B"]), int(p["W"])
    if B < 1 or W < 2 or W & (W - 1):
        raise ValueError(f"B={B} must be >= 1 and W={W} a power of two >= 2")
    if not 1 <= int(p["nprobe"]) <= W:
        raise ValueError(f"nprobe={p['nprobe']} must be in [1, W={W}]")
    return np.ascontiguousarray(xt, dtype=np.float32), labels.astype(np.int64)


def evaluate_learned_baseline(
    name: str, ds, xt: np.ndarray, labels: np.ndarray, seed: int, p: dict
) -> dict:
    """Train one learned baseline of Table 2 and score it with the protocol of the faiss rows.

    name: one of `LEARNED_BASELINES`; ds: annrepro Dataset (xb, xq, gt(k), metric, nb, d);
    xt: float32 (nt, d) training queries; labels: int64 (nt, K) their teacher top-K ids (nearest
    first); seed: warm-start sample, k-means and torch seed; p: table params (B, W, k, nprobe,
    n_train: the warm-start sample is min(lb_n_warm, n_train) documents; `lb_*`: `LBConfig`).
    Returns {"recall@k", "ndcg@k", "mrr@k"} (fractions), "scanned" (mean share of the base
    scored per query, posting lists of `nprobe` codewords per codebook) and "train_s" (warm start
    + training, seconds), as `experiments.evaluate_baseline`.
    """
    xt, labels = _check_inputs(name, ds, xt, labels, p)
    cfg = LBConfig.from_params(p, seed)
    k = int(p.get("k", 10))
    n_warm = min(cfg.n_warm, int(p.get("n_train", cfg.n_warm)))
    xb = ds.xb
    with Timer() as t:
        model = build_model(
            name, _sample_docs(xb, n_warm, seed), ds.metric, int(p["B"]), int(p["W"]), cfg
        )
        curve = fit_model(model, xb, xt, labels)
    losses = [round(c["loss"], 4) for c in curve]
    log.info("%s on %s: epoch losses %s, %.1f s", name, getattr(ds, "name", "?"), losses, t.s)
    index = model.index(np.ascontiguousarray(xb, dtype=np.float32))
    return {**search_scores(index, ds, k, p["nprobe"]), "train_s": t.s}
