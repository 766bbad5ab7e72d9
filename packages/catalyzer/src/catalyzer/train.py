"""Training loop of the catalyzer (Sablayrolles et al., Sec. 3.2, 5.1, 5.2).

`train_catalyzer` is a loop over epochs of three steps: `mine_negatives`, `train_epoch` and,
every val_every epochs, `validate`; around it, the checkpoint of every epoch. The search of the
validation is `search.quantized_search`. The table producers' model cache is `cache.py`.

- Positives (Sec. 3.2): the k_pos = 10 exact nearest neighbours of each training vector in the
  input space (faiss, computed once; the point itself excluded). Each epoch draws one of them per
  anchor.
- Negatives (Sec. 3.2): the k_neg = 50-th nearest neighbour of f(x) among f(x_1..x_n), recomputed
  at the start of every epoch with one batched faiss search over the whole training set. As in the
  authors' train.py, the search includes the point itself (rank 1), and with end-to-end training
  the neighbours are searched among the quantized outputs.
- Loss: L_rank + lambda L_KoLeo (Eq. 4), see `losses.py`.
- Optimiser (Sec. 5.2): SGD, momentum 0.9, lr 0.1 decayed to 0.05 and 0.01 at epochs 80 and 120
  of 300 (preset "paper"); the released code trains 160 epochs in four equal stages 0.1, 0.1,
  0.05, 0.01 with batches of 64 (preset "released"). Stages are stored as fractions of the
  epochs, so a shortened run keeps the shape of the schedule.
- Validation (Sec. 5.1: hyper-parameters are cross-validated on held-out vectors): the last n_val
  vectors of the learn set are held out; their first n_val_queries are queries, the rest a base;
  the score is 1-recall@10 of the quantized search in the output space (lattice or sign) against
  the exact neighbours in the input space. The best state is kept (authors: `--save_best_criterion
  zn_79,rank=10`).
- End-to-end (Sec. 4, "End-to-end training"): with `end2end_r2`, the lattice S_{d_out}^r is a
  layer applied to the positives and negatives (as the authors' `--quantizer_train zn_<r2>`), with
  the straight-through estimator.

Batch norm (paper silent; `bn_passes`): "separate" (default, the authors' train.py) sends
anchors, positives and negatives through the network in three forward passes of batch_size rows,
each with its own batch-norm statistics (and three running-statistics updates per step); "joint"
sends them as one batch of 3 x batch_size rows, whose statistics the three share. Paper silent on
the batch size: 64 (released code).

Protocol switches of the released code (for `catalyzer reference-run`): `neg_search = "hnsw32"`
mines negatives with faiss HNSW32 (efSearch 64), as train.py does on a CPU (on a GPU it searches
exactly, our default "exact"); `pos_include_self = True` takes the positives from the exact
k_pos-NN of x among the training vectors including x itself, as train.py's
get_nearestneighbors(xt, xt, 10) does (default: x excluded, the paper's "nearest neighbors of
each point"). `validation=(xq, xb)` validates on given arrays instead of held-out rows.

Speed (`fast_step`, default True): `train_epoch` gathers the rows of many batches at once and
reads the losses back once per epoch. Every float operation of a step is that of the plain step
(`fast_step = False`, kept as the reference), so the weights are the same bit for bit; the
switch is not part of the checkpoint fingerprint or the model-cache key. It saves little. On
the released protocol (sift-10K, hidden 1024, batch 64, 1-2 threads), the steps' GEMMs and the
summing of the three passes' weight gradients take about 85 % of an SGD step, and the per-step
bookkeeping about 2-4 %. torch.compile is not offered: compiling the forward passes and the loss
changed the losses by 3e-7 and the weights by 2.5e-4 within 60 steps (inductor fuses batch norm,
normalisation and the loss differently), so it cannot give the same numbers.

Device (`device`, default "cpu"; `check_device`): the network, the training vectors and the
steps run on the torch device; the negatives mining, the positives and the validation searches
stay in numpy / faiss on the host (f(x) is computed on the device and copied back once per
epoch), and so do the RNGs: the initialisation draws from torch's CPU generator before the
network is moved, the positives and the batch order from the numpy Generator, so a CUDA run
starts from the same weights and sees the same batches as a CPU run (its float sums differ in
the last bits, as with another thread count). The kept states (TrainResult.state_dict, the
checkpoint's best state) are CPU tensors whatever the device. The device is not a
hyper-parameter: not in the TrainConfig, the checkpoint fingerprint or the model-cache key
(a resume on another device is warned about, as one with another thread count).

Checkpoints (`checkpoint_dir`, as ccst.train): after every epoch `<checkpoint_dir>/last.pt` is
written atomically (annrepro.atomic) with the network and optimizer (momentum) states, the number
of finished epochs, the kept best state with its score and epoch, the history, the RNG states the
next epochs draw from (the numpy Generator of positives and batch order; torch's CPU generator,
which only the initialisation uses today) and a fingerprint of the configuration, the input
dimension, the training (and validation) data and CODE_VERSION. A later run on the same directory
resumes from it and ends with the same weights, bit for bit, as an uninterrupted run (same torch
thread count: it can change float summation order; negatives mined with "hnsw32" and more than
one thread are not deterministic anyway). Checkpointing draws no random numbers and changes no
state: with or without a directory the weights are the same. A checkpoint of another
configuration or data, or an unreadable one, is refused with one line naming the file.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from annrepro.checkpoint import (
    CheckpointMismatch,
    check_resumable,
    checkpoint_path,
    first_line,
    read_checkpoint,
    save_checkpoint,
)
from annrepro.devices import check_device  # re-exported: catalyzer.api, benchmarks/gpu_check.py
from annrepro.errors import InputError  # a ValueError: bad input, one CLI line
from annrepro.validate import as_f32

from .search import quantized_search

__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointMismatch",
    "PRESETS",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "check_device",
    "lr_at",
    "mine_negatives",
    "positives_knn",
    "train_catalyzer",
    "train_epoch",
    "validate",
]

log = logging.getLogger(__name__)

CODE_VERSION = 2  # bump when a change of this file changes trained models (cache key)
CHECKPOINT_NAME = "last.pt"  # in checkpoint_dir (the name ccst uses)
CHECKPOINT_FORMAT = 1
_CHECKPOINT_KEYS = (
    "format",
    "fingerprint",
    "epoch",
    "model",
    "optimizer",
    "best",
    "history",
    "rng",
)
_CHECKPOINT_HOW = "delete it or use another checkpoint directory"

# TrainConfig fields that change how fast, not what, is computed (tested bit for bit)
_SAME_NUMBERS_FIELDS = ("fast_step",)

# Named presets (Sec. 5.2 and the authors' train.py defaults).
PRESETS = {
    # Sec. 5.2: 300 epochs, lr 0.1, decayed to 0.05 at epoch 80 and 0.01 at epoch 120
    "paper": {"epochs": 300, "lr_stages": ((0.0, 0.1), (80 / 300, 0.05), (120 / 300, 0.01))},
    # train.py: --epochs 160 --lr_schedule 0.1,0.1,0.05,0.01 (four equal stages), batch 64
    "released": {
        "epochs": 160,
        "lr_stages": ((0.0, 0.1), (0.25, 0.1), (0.5, 0.05), (0.75, 0.01)),
    },
}


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one catalyzer training (defaults: the paper's, Sec. 5.2, 5.3)."""

    d_out: int = 24  # 24 dims for 64-bit lattice codes (Appendix B)
    hidden: int = 1024  # Sec. 5.2
    lam: float = 0.02  # KoLeo weight (Eq. 4); 0.02 is the README's example for d_out = 24
    k_pos: int = 10  # Sec. 5.3
    k_neg: int = 50  # Sec. 5.3
    epochs: int = 300  # Sec. 5.2
    batch_size: int = 64  # released code (paper silent)
    momentum: float = 0.9  # Sec. 5.2
    lr_stages: tuple = PRESETS["paper"]["lr_stages"]  # (start fraction of epochs, lr)
    seed: int = 0
    n_val: int = 10000  # held-out learn vectors for validation (0: none, keep the last epoch)
    n_val_queries: int = 1000  # of which queries (the rest is the validation base)
    val_quantizer: str = "zn_79"  # "zn_<r2>" | "sign" | "none": search of the validation score
    val_every: int = 10  # validate every val_every epochs and after the last (train.py: 10)
    end2end_r2: int | None = None  # lattice layer in training (Sec. 4 end-to-end), None: off
    bn_passes: str = "separate"  # "separate" (authors' train.py: 3 passes) | "joint" (1 pass)
    neg_search: str = "exact"  # negative mining: "exact" | "hnsw32" (train.py on a CPU)
    pos_include_self: bool = False  # positives: k_pos-NN with x itself (train.py) or without
    arch: str = "mlp"  # "mlp" (Sec. 5.2) | "identity" (normalisation only: degenerate check)
    fast_step: bool = True  # train_epoch's fast bookkeeping (False: the plain step; same weights)

    @classmethod
    def preset(cls, name: str, **overrides) -> TrainConfig:
        if name not in PRESETS:
            raise InputError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
        kw = dict(PRESETS[name])
        if name == "released":
            kw["batch_size"] = 64
        kw.update(overrides)
        return cls(**kw)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lr_stages"] = [list(s) for s in self.lr_stages]
        return d

    def numbers_dict(self) -> dict:
        """`to_dict` without the fields that cannot change the trained weights (fast_step):
        what checkpoints and the model cache are keyed on."""
        return {k: v for k, v in self.to_dict().items() if k not in _SAME_NUMBERS_FIELDS}

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["lr_stages"] = tuple(tuple(float(v) for v in s) for s in d["lr_stages"])
        return cls(**d)


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite. `.epoch` names it, `.state_dict` is the last good state."""

    def __init__(self, msg: str, epoch: int, state_dict: dict):
        super().__init__(msg)
        self.epoch = epoch
        self.state_dict = state_dict


@dataclass
class TrainResult:
    """A trained catalyzer: the kept (best) weights and what happened."""

    state_dict: dict
    config: TrainConfig
    d_in: int
    best_epoch: int
    best_score: float | None
    history: list = field(default_factory=list)
    train_s: float = 0.0
    vectors_per_s: float = 0.0
    mining_share: float = 0.0


def _cpu_state(net) -> dict:
    """A copy of net's state dict on the CPU (the values of `copy.deepcopy(net.state_dict())`
    on a CPU network): what results and checkpoints keep, readable without a GPU."""
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


def lr_at(epoch: int, epochs: int, stages) -> float:
    """Learning rate of `epoch` (0-based) for stages ((start fraction, lr), ...)."""
    lr = float(stages[0][1])
    for frac, value in stages:
        if epoch >= round(float(frac) * epochs):
            lr = float(value)
    return lr


def positives_knn(xt: np.ndarray, k_pos: int, include_self: bool = False) -> np.ndarray:
    """The k_pos nearest neighbours of each row of xt among the others (Sec. 3.2).

    Args:
        xt: float32 (n, d), n > k_pos.
        include_self: return the plain exact k_pos-NN of xt in xt, the point itself (usually
            rank 1) included, as the authors' train.py does.
    Returns:
        int64 (n, k_pos), the point itself excluded (if a duplicate ranks before it, the
        furthest of the k_pos + 1 results is dropped instead) unless include_self.
    """
    import faiss

    n = xt.shape[0]
    if include_self:
        return faiss.knn(xt, xt, k_pos)[1]
    _, I = faiss.knn(xt, xt, k_pos + 1)
    drop = I == np.arange(n)[:, None]
    drop[~drop.any(axis=1), -1] = True
    return I[~drop].reshape(n, k_pos)


def mine_negatives(y: np.ndarray, yb: np.ndarray, k_neg: int, method: str = "exact") -> np.ndarray:
    """The k_neg-th nearest neighbour of each row of y among the rows of yb (Sec. 3.2).

    Args:
        y: float32 (n, d) outputs f(x); yb: float32 (n, d) the searched outputs (f(x), or their
            quantized versions in end-to-end training). The point itself counts (rank 1).
        method: "exact" (faiss flat search) or "hnsw32" (faiss HNSW32, efConstruction 40,
            efSearch 64: the authors' get_nearestneighbors(..., needs_exact=False) on a CPU;
            approximate, and not deterministic with more than one thread).
    Returns:
        int64 (n,) ids into yb.
    """
    import faiss

    y, yb = as_f32(y), as_f32(yb)
    if method == "exact":
        return faiss.knn(y, yb, k_neg)[1][:, k_neg - 1]
    if method == "hnsw32":
        index = faiss.IndexHNSWFlat(yb.shape[1], 32)
        index.hnsw.efSearch = 64
        index.add(yb)
        return index.search(y, k_neg)[1][:, k_neg - 1]
    raise InputError(f"unknown neg_search {method!r} ('exact' or 'hnsw32')")


def _forward(net, x: np.ndarray, bs: int = 4096, device: str = "cpu") -> np.ndarray:
    """f(x) float32 (n, d_out) in eval mode, in batches of bs rows, computed on `device` (where
    net is) and copied back to the host.

    bs stays 4096: the batch size can change the GEMM kernel, hence the last bits of f(x) and
    the mined negatives. Written into one preallocated array, without autograd bookkeeping.
    """
    import torch

    net.eval()
    out = np.empty((x.shape[0], net.d_out), dtype=np.float32)
    with torch.inference_mode():
        for i in range(0, x.shape[0], bs):
            out[i : i + bs] = net(torch.from_numpy(x[i : i + bs]).to(device)).cpu().numpy()
    return out


def _check_config(cfg: TrainConfig, nt: int, d: int) -> int:
    """Validate; return the number of training vectors after the validation split."""
    from .lattice import ZnSphereLattice

    if cfg.n_val < 0 or (cfg.n_val and not 0 < cfg.n_val_queries < cfg.n_val):
        raise InputError(f"need 0 < n_val_queries < n_val, got {cfg.n_val_queries}, {cfg.n_val}")
    n = nt - cfg.n_val
    need = max(cfg.k_neg, cfg.k_pos + 1, cfg.batch_size, 2)
    if cfg.n_val and n < need:
        raise InputError(
            f"n_val={cfg.n_val} held-out validation vectors (--n-val on the command line) leave "
            f"{max(n, 0)} of the {nt} learn vectors for training, fewer than {need}; lower n_val "
            f"(e.g. {max(nt // 5, 0)}, a fifth) or set it to 0 to keep the last epoch"
        )
    if n < need:
        raise InputError(
            f"{n} training vectors ({nt} minus {cfg.n_val} held out for validation) is fewer "
            f"than max(k_neg={cfg.k_neg}, k_pos+1={cfg.k_pos + 1}, batch_size={cfg.batch_size})"
        )
    if cfg.n_val and cfg.n_val - cfg.n_val_queries < 10:
        raise InputError(
            f"the validation base needs >= 10 vectors (1-recall@10), n_val={cfg.n_val}"
        )
    if cfg.epochs < 1 or cfg.batch_size < 2 or cfg.lam < 0:
        raise InputError(f"need epochs >= 1, batch_size >= 2, lam >= 0: {cfg}")
    for r2 in ([cfg.end2end_r2] if cfg.end2end_r2 is not None else []) + (
        [int(cfg.val_quantizer[3:])] if cfg.val_quantizer.startswith("zn_") else []
    ):
        ZnSphereLattice(cfg.d_out, r2)  # raises if S_d^r is empty
    if cfg.val_quantizer not in ("sign", "none") and not cfg.val_quantizer.startswith("zn_"):
        raise InputError(f"unknown val_quantizer {cfg.val_quantizer!r}")
    if cfg.bn_passes not in ("separate", "joint"):
        raise InputError(f"bn_passes must be 'separate' or 'joint', got {cfg.bn_passes!r}")
    if cfg.neg_search not in ("exact", "hnsw32"):
        raise InputError(f"neg_search must be 'exact' or 'hnsw32', got {cfg.neg_search!r}")
    if cfg.arch == "identity" and cfg.d_out != d:
        raise InputError(f"the identity catalyzer needs d_out == d_in, got {cfg.d_out} != {d}")
    return n


# ------------------------------------------------------------------------- checkpoints
def _fingerprint(cfg: TrainConfig, xt: np.ndarray, validation) -> dict:
    """What a resumed run must share with its checkpoint: config, data (d_in is in its shape),
    validation arrays and code version."""
    from annrepro.groundtruth import array_fingerprint

    return {
        "config": cfg.numbers_dict(),
        "data": {
            "training data": array_fingerprint(xt),
            "validation arrays": None if validation is None else array_fingerprint(*validation),
        },
        "code_version": CODE_VERSION,
    }


def _load_checkpoint(path: Path) -> dict:
    """A checkpoint written by `train_catalyzer`, or InputError naming the file in one line."""
    return read_checkpoint(path, "catalyzer", CHECKPOINT_FORMAT, _CHECKPOINT_KEYS, _CHECKPOINT_HOW)


@dataclass
class _Progress:
    """What a run has done so far: the part of a checkpoint besides the network, the optimizer
    and the RNG states."""

    history: list = field(default_factory=list)  # one record per finished epoch
    best_state: dict | None = None
    best_score: float = -1.0
    best_epoch: int = -1
    prior_s: float = 0.0  # wall time of the processes this run resumed from
    mine_s: float = 0.0
    train_s: float = 0.0
    n_seen: int = 0  # training vectors stepped on

    @property
    def epoch(self) -> int:
        """Finished epochs."""
        return len(self.history)

    def keep_if_best(self, score: float, epoch: int, net) -> None:
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self.best_state = _cpu_state(net)


def _resume(
    path: Path, fingerprint: dict, net, opt, rng, cfg: TrainConfig, device: str = "cpu"
) -> _Progress:
    """Load the checkpoint at `path` into net, opt, rng and torch's generator; its progress."""
    import torch

    ckpt = _load_checkpoint(path)
    check_resumable(ckpt["fingerprint"], fingerprint, path, "catalyzer", _CHECKPOINT_HOW)
    try:
        net.load_state_dict(ckpt["model"])
        if opt is not None:
            opt.load_state_dict(ckpt["optimizer"])
        rng.bit_generator.state = ckpt["rng"]["numpy"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        best, timing = ckpt["best"], ckpt.get("timing") or {}
        prog = _Progress(
            history=list(ckpt["history"]),
            best_state=best["state"],
            best_score=float(best["score"]),
            best_epoch=int(best["epoch"]),
            prior_s=float(timing.get("total_s", 0.0)),
            mine_s=float(timing.get("mine_s", 0.0)),
            train_s=float(timing.get("train_s", 0)),
            n_seen=int(timing.get("n_seen", 0)),
        )
        start = int(ckpt["epoch"])
        if not 0 <= start <= cfg.epochs or prog.epoch != start:
            raise ValueError(f"epoch {start} with {prog.epoch} history records")
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(
            f"{path}: checkpoint does not fit its own configuration ({first_line(e)}); "
            f"{_CHECKPOINT_HOW}"
        ) from None
    if ckpt.get("threads") != torch.get_num_threads():
        log.warning(
            "%s was written with %s torch threads, resumed with %d: the weights may differ "
            "in the last bits from an uninterrupted run (float summation order)",
            path,
            ckpt.get("threads"),
            torch.get_num_threads(),
        )
    if ckpt.get("device", "cpu") != device:
        log.warning(
            "%s was written on device %s, resumed on %s: the weights may differ in the last "
            "bits from an uninterrupted run",
            path,
            ckpt.get("device", "cpu"),
            device,
        )
    log.info("resuming from %s at epoch %d / %d", path, start, cfg.epochs)
    return prog


def _save(
    path: Path,
    fingerprint: dict,
    net,
    opt,
    rng,
    prog: _Progress,
    total_s: float,
    device: str = "cpu",
) -> None:
    """Write the checkpoint of the finished epochs (atomic; draws no random numbers)."""
    import torch

    blob = {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": fingerprint,
        "epoch": prog.epoch,  # finished epochs
        "model": net.state_dict(),
        "optimizer": None if opt is None else opt.state_dict(),
        "best": {"state": prog.best_state, "score": prog.best_score, "epoch": prog.best_epoch},
        "history": prog.history,
        "rng": {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()},
        "timing": {
            "total_s": total_s,
            "mine_s": prog.mine_s,
            "train_s": prog.train_s,
            "n_seen": prog.n_seen,
        },
        "threads": torch.get_num_threads(),
        "device": device,
    }
    save_checkpoint(blob, path)  # annrepro.checkpoint: atomic, one line on failure


# ------------------------------------------------------------------------- the three steps
class _NonFinite(FloatingPointError):
    """The loss of batch `batch` (0-based) of an epoch is `value` (NaN or inf)."""

    def __init__(self, batch: int, value: float, last_good: dict):
        super().__init__(f"loss {value} at batch {batch}")
        self.batch, self.value, self.last_good = batch, value, last_good


_GATHER_ROWS = 8192  # rows per batch gather of the fast step: 4 MB of 128-d inputs, x 3


def _searched(y: np.ndarray, st) -> np.ndarray:
    """The outputs negatives are searched among: y, or q(y) / r in end-to-end training."""
    return y if st is None else st.lattice.quantize(y) * np.float32(1 / st.lattice.r)


def train_epoch(net, opt, xtr_t, pos_nn: np.ndarray, neg_nn: np.ndarray, rng, cfg, st=None):
    """One pass of SGD over the training vectors in random order (Sec. 3.2, Eq. 4).

    Args:
        net: the CatalyzerNet; opt: its optimizer (None: nothing to train, the identity).
        xtr_t: torch float32 (n, d_in) training vectors.
        pos_nn: int64 (n, k_pos) positive candidates; one per anchor is drawn from rng.
        neg_nn: int64 (n,) this epoch's negatives (`mine_negatives`).
        rng: numpy Generator of the positives and the batch order.
        cfg: the TrainConfig (batch_size, bn_passes, lam, k_pos, fast_step).
        st: the StraightThroughLattice of end-to-end training, or None.
    Returns:
        ({"loss", "rank", "koleo"}: means over the batches, vectors stepped on).
    Raises:
        _NonFinite: a NaN / infinite loss; net is back at its state at the start of the epoch.

    The batches, their order and every float operation of a step are those of
    `_train_epoch_plain`, so the weights are the same bit for bit; what differs is the
    bookkeeping around the steps. The rows of _GATHER_ROWS / batch_size batches are gathered at
    once into one tensor whose slices are the batches (no per-step numpy indexing or tensor
    allocation for the inputs). The losses stay tensors until the end of the epoch, read back
    once; a NaN / inf is then found at the end of the epoch instead of at its batch (the steps
    after it are wasted, the reset is the same).
    """
    if not cfg.fast_step:
        return _train_epoch_plain(net, opt, xtr_t, pos_nn, neg_nn, rng, cfg, st)
    import torch

    from .losses import catalyzer_loss  # looked up per call: tests patch catalyzer.losses

    last_good = copy.deepcopy(net.state_dict())
    n, bs = xtr_t.shape[0], cfg.batch_size
    pos = pos_nn[np.arange(n), rng.integers(cfg.k_pos, size=n)]
    perm = rng.permutation(n)
    joint = cfg.bn_passes == "joint"

    def step(rows, b: int):  # rows: (3b, d_in) anchors, positives, negatives
        if joint:  # one batch-norm batch of 3b rows
            out = net(rows)
            a, p, ng = out[:b], out[b : 2 * b], out[2 * b :]
        else:  # three passes, as the authors' train.py: net(ins), net(pos), net(neg)
            a, p, ng = net(rows[:b]), net(rows[b : 2 * b]), net(rows[2 * b :])
        if st is not None:
            p, ng = st(p), st(ng)
        loss, l_rank, l_koleo = catalyzer_loss(a, p, ng, cfg.lam)
        if opt is not None:
            opt.zero_grad()
            loss.backward()
            opt.step()
        return loss.detach(), l_rank.detach(), l_koleo.detach()

    def gathered(ids: np.ndarray):  # ids int64 (m, b) -> float32 (m, 3b, d_in), on xtr_t's device
        rows = np.concatenate([ids, pos[ids], neg_nn[ids]], axis=1).ravel()
        rows_t = torch.from_numpy(rows).to(xtr_t.device)
        return xtr_t[rows_t].view(ids.shape[0], 3 * ids.shape[1], -1)

    net.train()
    vals = []
    n_full = n // bs
    per_gather = max(1, _GATHER_ROWS // bs)
    for j0 in range(0, n_full, per_gather):
        chunk = gathered(perm[j0 * bs : min(j0 + per_gather, n_full) * bs].reshape(-1, bs))
        vals.extend(step(rows, bs) for rows in chunk)
    tail = perm[n_full * bs :]
    if len(tail) >= 2:  # batch norm and KoLeo need two points
        vals.append(step(gathered(tail[None])[0], len(tail)))
    n_seen = n_full * bs + (len(tail) if len(tail) >= 2 else 0)
    # read back once: float64 sums in batch order, as the plain step's running sums
    v = torch.stack([torch.stack(t) for t in vals]).cpu().numpy().astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(v[:, 0]))
    if bad.size:
        net.load_state_dict(last_good)
        raise _NonFinite(int(bad[0]), float(v[bad[0], 0]), last_good)
    means = np.cumsum(v, axis=0)[-1] / max(len(vals), 1)
    return {"loss": float(means[0]), "rank": float(means[1]), "koleo": float(means[2])}, n_seen


def _train_epoch_plain(net, opt, xtr_t, pos_nn, neg_nn, rng, cfg, st=None):
    """`train_epoch` as it was written first (cfg.fast_step = False): one batch at a time,
    gathered from numpy ids, the loss read back after every step. The reference the fast step
    is tested against (same weights bit for bit) and benchmarked against.
    """
    import torch

    from .losses import catalyzer_loss  # looked up per call: tests patch catalyzer.losses

    last_good = copy.deepcopy(net.state_dict())
    n = xtr_t.shape[0]
    pos = pos_nn[np.arange(n), rng.integers(cfg.k_pos, size=n)]
    perm = rng.permutation(n)

    def ids(a: np.ndarray):  # int64 row ids on xtr_t's device
        return torch.from_numpy(a).to(xtr_t.device)

    net.train()
    sums = np.zeros(3)
    nb = n_seen = 0
    for i0 in range(0, n, cfg.batch_size):
        idx = perm[i0 : i0 + cfg.batch_size]
        b = len(idx)
        if b < 2:  # batch norm and KoLeo need two points
            continue
        if cfg.bn_passes == "joint":  # one batch-norm batch of 3b rows
            out = net(xtr_t[ids(np.concatenate([idx, pos[idx], neg_nn[idx]]))])
            a, p, ng = out[:b], out[b : 2 * b], out[2 * b :]
        else:  # three passes, as the authors' train.py: net(ins), net(pos), net(neg)
            a = net(xtr_t[ids(idx)])
            p = net(xtr_t[ids(pos[idx])])
            ng = net(xtr_t[ids(neg_nn[idx])])
        if st is not None:
            p, ng = st(p), st(ng)
        loss, l_rank, l_koleo = catalyzer_loss(a, p, ng, cfg.lam)
        if not torch.isfinite(loss):
            net.load_state_dict(last_good)
            raise _NonFinite(nb, loss.item(), last_good)
        if opt is not None:
            opt.zero_grad()
            loss.backward()
            opt.step()
        sums += (loss.item(), l_rank.item(), l_koleo.item())
        nb += 1
        n_seen += b
    means = sums / max(nb, 1)
    return {"loss": float(means[0]), "rank": float(means[1]), "koleo": float(means[2])}, n_seen


def validate(
    net, xvq: np.ndarray, xvb: np.ndarray, gt: np.ndarray, quantizer: str, device: str = "cpu"
) -> float:
    """1-recall@10 of the quantized search of f(xvq) in f(xvb) (Sec. 5.1).

    Args:
        xvq: float32 (nq, d_in) queries; xvb: float32 (nb, d_in) base.
        gt: int64 (nq, >= 1) exact nearest neighbours of xvq in xvb, in the input space.
        quantizer: "zn_<r2>", "sign" or "none" (`search.quantized_search`).
        device: where net is; f is computed there, the search runs on the host (faiss).
    """
    from annrepro.metrics import one_recall_at

    fq, fb = _forward(net, xvq, device=device), _forward(net, xvb, device=device)
    I = quantized_search(fq, fb, 10, quantizer)
    return one_recall_at(I, gt, 10)


# ------------------------------------------------------------------------- the loop
def _inputs(xt, cfg: TrainConfig, validation):
    """Checked inputs: (xt, training rows, validation queries, validation base or Nones)."""
    xt = as_f32(xt)
    if not xt.flags.writeable:  # memory-mapped / read-only input: torch needs writable memory
        xt = xt.copy()
    if xt.ndim != 2:
        raise InputError(f"xt must be 2-D (n, d), got shape {xt.shape}")
    if not np.isfinite(xt).all():
        raise InputError("xt contains NaN or infinite values")
    nt, d_in = xt.shape
    n = _check_config(cfg, nt, d_in)
    xvq = xvb = None
    if cfg.n_val:
        xvq, xvb = xt[n : n + cfg.n_val_queries], xt[n + cfg.n_val_queries :]
    if validation is not None:
        if cfg.n_val:
            raise InputError("give either validation arrays or n_val > 0, not both")
        xvq, xvb = (as_f32(v) for v in validation)
        shapes_ok = xvq.ndim == 2 and xvb.ndim == 2 and xvq.shape[1] == xvb.shape[1] == d_in
        if not shapes_ok or xvb.shape[0] < 10:
            raise InputError(
                f"validation arrays must be (nq, {d_in}) and (nb >= 10, {d_in}), got "
                f"{xvq.shape} and {xvb.shape}"
            )
    return xt, xt[:n], xvq, xvb


def _diverged(e: _NonFinite, epoch: int, lr: float, ckpt_path: Path | None) -> TrainingDiverged:
    kept = ""
    if ckpt_path is not None and epoch > 0 and ckpt_path.exists():
        kept = f"; the checkpoint {ckpt_path} (epochs done: {epoch}) is kept"
    return TrainingDiverged(
        f"catalyzer loss is {e.value} at epoch {epoch} (batch {e.batch}); the model is "
        f"reset to its state at the start of epoch {epoch} (lr {lr}){kept}",
        epoch,
        e.last_good,
    )


def train_catalyzer(
    xt: np.ndarray,
    cfg: TrainConfig,
    progress: bool = False,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    device: str = "cpu",
) -> TrainResult:
    """Train a catalyzer on xt (Sec. 3, 5.2).

    Args:
        xt: float32 (nt, d_in) learn set; its last cfg.n_val rows are held out for validation.
        cfg: hyper-parameters.
        progress: show a tqdm bar over epochs.
        validation: (xq float32 (nq, d_in), xb float32 (nb, d_in)): validate on these queries
            against this base (exact input-space ground truth) instead of held-out rows; needs
            cfg.n_val = 0 (e.g. the released protocol on sift-10K: learn[20000:25000] against
            the training vectors learn[:20000]).
        checkpoint_dir: where `last.pt` is written after every epoch (module docstring); None:
            no checkpoints.
        resume: continue from `checkpoint_dir/last.pt` when it is there (False: start afresh and
            overwrite it).
        device: torch device of the network and the steps ("cpu", "cuda"; module docstring);
            mining and validation searches run on the host.
    Returns:
        TrainResult with the best validation state (the last state when n_val = 0).
    Raises:
        ValueError: bad inputs (non-finite data, too few vectors, empty lattice).
        SettingError: a device torch does not have (`check_device`).
        CheckpointMismatch: the checkpoint to resume from has another configuration or data.
        InputError: a checkpoint that cannot be read or written, naming the file.
        TrainingDiverged: the loss became NaN/inf; names the epoch, carries the last good state.
    """
    import faiss
    import torch
    from tqdm.auto import tqdm

    from .lattice import ZnSphereLattice
    from .model import CatalyzerNet, StraightThroughLattice

    device = check_device(device)
    xt, xtr, xvq, xvb = _inputs(xt, cfg, validation)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    # initialised on the CPU (its generator), then moved: the same initial weights on any device
    net = CatalyzerNet(xt.shape[1], cfg.d_out, cfg.hidden, cfg.arch).to(device)
    params = list(net.parameters())
    opt = None
    if params:  # the identity catalyzer has nothing to train
        opt = torch.optim.SGD(params, lr=lr_at(0, cfg.epochs, cfg.lr_stages), momentum=cfg.momentum)
    prog, ckpt_path, fingerprint = _Progress(), None, None
    if checkpoint_dir is not None:
        ckpt_path = checkpoint_path(checkpoint_dir, CHECKPOINT_NAME)
        fingerprint = _fingerprint(cfg, xt, None if validation is None else (xvq, xvb))
        if resume and ckpt_path.exists():
            prog = _resume(ckpt_path, fingerprint, net, opt, rng, cfg, device)
    st = None
    if cfg.end2end_r2 is not None:
        st = StraightThroughLattice(ZnSphereLattice(cfg.d_out, cfg.end2end_r2))

    t_start = time.perf_counter()
    pos_nn = positives_knn(xtr, cfg.k_pos, include_self=cfg.pos_include_self)
    gt_val = None if xvq is None else faiss.knn(xvq, xvb, 1)[1]
    xtr_t = torch.from_numpy(xtr).to(device)  # the training vectors stay on the device
    epochs = tqdm(
        range(prog.epoch, cfg.epochs),
        desc=f"catalyzer d_out={cfg.d_out}",
        initial=prog.epoch,
        total=cfg.epochs,
        disable=not progress,
        leave=False,
    )
    for epoch in epochs:
        lr = lr_at(epoch, cfg.epochs, cfg.lr_stages)
        for g in opt.param_groups if opt is not None else ():
            g["lr"] = lr
        t0 = time.perf_counter()
        # negatives: in the output space, once per epoch (Sec. 3.2)
        y = _forward(net, xtr, device=device)
        neg_nn = mine_negatives(y, _searched(y, st), cfg.k_neg, cfg.neg_search)
        t1 = time.perf_counter()
        try:
            losses, n_seen = train_epoch(net, opt, xtr_t, pos_nn, neg_nn, rng, cfg, st)
        except _NonFinite as e:
            raise _diverged(e, epoch, lr, ckpt_path) from None
        t2 = time.perf_counter()
        prog.mine_s, prog.train_s, prog.n_seen = (
            prog.mine_s + t1 - t0,
            prog.train_s + t2 - t1,
            prog.n_seen + n_seen,
        )
        rec = {"epoch": epoch, "lr": lr, **losses, "mine_s": t1 - t0, "train_s": t2 - t1}
        if gt_val is not None and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs):
            t3 = time.perf_counter()
            rec["val_1-recall@10"] = validate(net, xvq, xvb, gt_val, cfg.val_quantizer, device)
            rec["val_s"] = time.perf_counter() - t3
            prog.keep_if_best(rec["val_1-recall@10"], epoch, net)
            _log_epoch(rec, cfg, prog)
        prog.history.append(rec)
        if ckpt_path is not None:  # draws no random numbers, changes no state
            total_s = prog.prior_s + time.perf_counter() - t_start
            _save(ckpt_path, fingerprint, net, opt, rng, prog, total_s, device)
    return _result(net, cfg, xt.shape[1], prog, prog.prior_s + time.perf_counter() - t_start)


def _log_epoch(rec: dict, cfg: TrainConfig, prog: _Progress) -> None:
    log.info(
        "epoch %d/%d lr %g loss %.4f = rank %.4f + %g * koleo %.4f; val 1-recall@10 (%s) "
        "%.4f (best %.4f at epoch %d)",
        rec["epoch"] + 1,
        cfg.epochs,
        rec["lr"],
        rec["loss"],
        rec["rank"],
        cfg.lam,
        rec["koleo"],
        cfg.val_quantizer,
        rec["val_1-recall@10"],
        prog.best_score,
        prog.best_epoch + 1,
    )


def _result(net, cfg: TrainConfig, d_in: int, prog: _Progress, total: float) -> TrainResult:
    """The TrainResult of a finished run: the kept state (the last one without validation)."""
    best_state, best_epoch = prog.best_state, prog.best_epoch
    if best_state is None:
        best_state, best_epoch = _cpu_state(net), cfg.epochs - 1
    vps = prog.n_seen / prog.train_s if prog.train_s > 0 else 0.0
    busy = prog.mine_s + prog.train_s
    share = prog.mine_s / busy if busy > 0 else 0.0
    log.info(
        "catalyzer d_in=%d d_out=%d hidden=%d lam=%g: %d epochs in %.1f s, %.0f training "
        "vectors/s, mining negatives %.0f%% of epoch time, best epoch %d",
        d_in,
        cfg.d_out,
        cfg.hidden,
        cfg.lam,
        cfg.epochs,
        total,
        vps,
        100 * share,
        best_epoch + 1,
    )
    return TrainResult(
        state_dict=best_state,
        config=cfg,
        d_in=d_in,
        best_epoch=best_epoch,
        best_score=None if prog.best_score < 0 else prog.best_score,
        history=prog.history,
        train_s=total,
        vectors_per_s=vps,
        mining_share=share,
    )
