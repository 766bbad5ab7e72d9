"""Training of the KDindex student (Sec. 3.2, 3.5, 4.3; Algorithm 2).

1. Warm start (Sec. 4.3): codebooks from faiss PQ / OPQ / AQ (`Student.from_quantizer`).
2. Iterative initialisation (Sec. 3.2, 4.3, Table 5 "Initialization"): in turns, (a) assign the
   teacher's documents to codewords with the balanced posting lists of Algorithm 1, (b) update
   the codebooks for one epoch of mini-batches with those codes fixed (distillation + recon-
   struction loss), until the lists are balanced (`max |P_i| - min |P_j| < N / W`, Sec. 4.3) or
   `init_max_rounds` rounds.
3. Differentiable training (Algorithm 2): per mini-batch of training queries, the teacher's K
   neighbours of each query get balanced codes (Algorithm 1 on the batch's documents, line 5),
   the straight-through one-hot `(e - p).detach() + p` (lines 9-11) gives `Q(d)`, and Adam
   updates the codebooks on the distillation loss plus the reconstruction loss of queries and
   documents (line 14). Early stopping on the recall of the teacher's top-K of held-out training
   queries (Sec. 4.3: "We adopt the early stop strategy to get the best model"), measured on the
   codes the index will store (`val_codes="index"`, see `index_codes`).

What the final index stores (`balance_index`). Algorithm 2's output is "Codebooks and Index
assignment", the assignment of Algorithm 1 (line 5), whose output is the posting lists of all M
documents (`{d_i}_{i=1}^M`, Sec. 2.1's M candidates) balanced by Sinkhorn-Knopp (Sec. 3.4, Eq. 3).
So the paper's final index holds the *balanced* codes of the whole base (default True). Against
it: Sec. 3.6 says "the indexing and inference way of KDIndex and Quantization methods are
consistent" with Table 1's indexing cost O(NWD) of plain encoding; `balance_index=False` stores
the nearest codes (AQ: the faiss beam search, `CodebookQuantizer.encode`) of the learned
codebooks instead. Early stopping measures the same codes the index stores (the "best model"
of Sec. 4.3 is the model returned: codebooks and assignment); `val_codes="nearest"` measures
nearest codes whatever the index stores (the earlier behaviour).

Hyper-parameters from the paper: Adam, learning rate 0.01, batch 64 (Sec. 4.1), K = 10
(Sec. 4.1). Choices where it is silent are fields of `TrainConfig`, each commented.

Checkpoints (`checkpoint_dir`, as catalyzer.train and ccst.train): after every iterative-
initialisation round and every differentiable epoch `<checkpoint_dir>/last.pt` is written
atomically (annrepro.atomic) with the student's parameters and buffers, Adam's state, the phase
("init", "diff" or "done") and the rounds / epochs finished, the kept best state with its
validation recall and epoch, the patience counter, the curve, the reconstruction-loss scale, the
RNG states the next rounds and epochs draw from (the numpy Generator of the batch order; torch's
CPU generator, which nothing draws from today) and a fingerprint of the configuration, the
student's settings (kind, B, W, dimensions, AQ beam, metric, and what `KDIndex.fit` adds: the
warm-start sample size and options), the base, the training queries, their labels, the
validation split and CODE_VERSION. A later run on the same directory resumes from it and ends
with the same codebooks, codes and curve, bit for bit, as an uninterrupted run (same torch
thread count: it can change float summation order). Checkpointing draws no random numbers and
changes no state: with or without a directory the student is the same. A checkpoint of another
configuration or data, or an unreadable one, is refused with one line naming the file. The final
encoding of the base (`index_codes`, in `KDIndex.fit`) is one deterministic pass after training,
not checkpointed: a run killed there resumes from the "done" checkpoint and encodes again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from annrepro.checkpoint import (
    CheckpointMismatch,
    check_resumable,
    checkpoint_path,
    first_line,
    read_checkpoint,
    save_checkpoint,
)
from annrepro.errors import InputError  # a ValueError: bad input, one CLI line
from tqdm.auto import tqdm

from .balance import balance_gap, balanced_assign, balanced_round, check_rounding, is_balanced
from .faiss_search import flat_index
from .losses import (
    check_kl_weighting,
    check_loss,
    distribution_loss,
    lambdarank_loss,
    rank_weights,
    reconstruction_loss,
    weighted_kl_loss,
)
from .student import Student

__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointMismatch",
    "TrainConfig",
    "encode",
    "index_codes",
    "sinkhorn_codes",
    "train_student",
]

log = logging.getLogger(__name__)

CODE_VERSION = 1  # bump when a change of this file changes trained students (checkpoints)
CHECKPOINT_NAME = "last.pt"  # in checkpoint_dir (the name catalyzer and ccst use)
CHECKPOINT_FORMAT = 1
_CHECKPOINT_KEYS = (
    "format",
    "fingerprint",
    "phase",
    "round",
    "epoch",
    "student",
    "optimizer",
    "best",
    "stale",
    "result",
    "rec_scale",
    "rng",
)
_CHECKPOINT_HOW = "delete it or use another checkpoint directory"
_NOT_FINGERPRINTED = ("progress",)  # TrainConfig fields that change no number


@dataclass
class TrainConfig:
    """Training hyper-parameters (Sec. 4.1 where given; the rest are choices)."""

    loss: str = "distribution"  # Sec. 3.3: the distribution-based loss is the default
    rank_weighting: str = "eq6"  # see losses.py: Eq. 6 literally
    kl_weighting: str = "prob"  # Eq. 5's rank weight on the probability (losses.py; "score")
    lr: float = 0.01  # Sec. 4.1
    batch_size: int = 64  # Sec. 4.1
    epochs: int = 20  # differentiable epochs at most (silent; early stopping ends sooner)
    patience: int = 3  # epochs without validation gain before stopping (silent)
    val_frac: float = 0.1  # share of training queries held out for early stopping (silent)
    rec_weight: float = 1.0  # weight of Eq. 2 against the distillation loss (silent)
    temperature: float = 0.1  # softmax temperature x score std (silent; student.py)
    sinkhorn_reg: float = 0.05  # entropic regularisation on the mean-1 cost (silent)
    sinkhorn_iter: int = 200  # Sinkhorn iterations at most (silent)
    # Sinkhorn solver: "torch" (`sinkhorn_codes`: plain domain, stops at the marginal tolerance)
    # or POT's "sinkhorn" / "sinkhorn_log" through `balance.balanced_assign`; POT's log domain
    # took 90 of the 105 s of a KDindex fit on sift-10K (profiled, 1 thread)
    sinkhorn_method: str = "torch"
    distill_weight: float = 1.0  # 0 = Table 5 "w/o Distillation loss" (reconstruction only)
    init_balance: bool = True  # iterative initialisation on balanced codes (Table 5 "w/o Balance")
    batch_balance: bool = True  # Algorithm 2 line 5: balanced codes inside each mini-batch
    init_max_rounds: int = 10  # iterative-initialisation rounds at most (silent)
    balance_chunk: int = 8192  # documents per Sinkhorn problem when encoding the base (silent)
    balance_index: bool = True  # the final posting lists come from Algorithm 1 (Sec. 3.4)
    # balanced codes from the Sinkhorn plan: "capacity" (every list floor / ceil of n / W, Eq. 3)
    # or "argmax" (Algorithm 1 line 5 literally; unbalanced on real data, balance.py)
    balance_rounding: str = "capacity"
    # codes that early stopping measures: "index" (what the index stores: balanced iff
    # balance_index, Sec. 4.3 "the best model") or "nearest" (nearest codes in any case)
    val_codes: str = "index"
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        check_loss(self.loss)
        check_kl_weighting(self.kl_weighting)
        check_rounding(self.balance_rounding)
        if self.val_codes not in ("index", "nearest"):
            raise ValueError(f"val_codes must be 'index' or 'nearest'; got {self.val_codes!r}")
        if self.sinkhorn_method not in ("torch", "sinkhorn", "sinkhorn_log", "auto"):
            raise ValueError(f"unknown Sinkhorn method {self.sinkhorn_method!r}")
        if self.distill_weight < 0 or self.rec_weight < 0:
            raise ValueError("distill_weight and rec_weight must be >= 0")
        if self.epochs < 0 or self.init_max_rounds < 0 or self.batch_size < 1:
            raise ValueError("epochs and init_max_rounds must be >= 0, batch_size >= 1")

    def without_balance(self) -> TrainConfig:
        """Table 5 "w/o Balance strategy": nearest codes everywhere (iterative initialisation,
        mini-batches of Algorithm 2 and the final posting lists)."""
        return replace(self, init_balance=False, batch_balance=False, balance_index=False)


@dataclass
class TrainResult:
    """The training curve: one dict per epoch or round (phase, loss, val_recall, balance gap)."""

    curve: list = field(default_factory=list)
    # the differentiable epoch whose student is kept; -1: none improved on the validation recall
    # of the initialised student (or there was no validation split), which is kept instead
    best_epoch: int = -1
    best_val_recall: float = float("nan")
    init_rounds: int = 0
    val_ids: list = field(default_factory=list)  # training queries held out for early stopping

    def as_dict(self) -> dict:
        return asdict(self)


def sinkhorn_codes(
    sq_dist: torch.Tensor,
    reg: float = 0.05,
    num_iter: int = 200,
    tol: float = 1e-3,
    rounding: str = "capacity",
) -> torch.Tensor:
    """Algorithm 1 for one codebook, in torch: balanced codes int64 (M,) from squared distances
    float64 (M, W), from the Sinkhorn plan of `balance.balanced_assign` (same cost
    normalisation, same uniform marginals, same entropic `reg`, same `rounding`: "capacity",
    every list floor / ceil of M / W, or "argmax" of each row).

    Plain-domain Sinkhorn on K = exp(-cost / reg) with matrix-vector products (two per
    iteration), stopped as soon as the column marginals are within `tol` (checked every 10
    iterations) or after `num_iter` iterations. 10-40x faster than POT's log-domain solver on the
    640 x 256 mini-batch and 8192 x 256 encoding problems (measured here, 1 thread); where K
    underflows (a cost / reg beyond float64's range) it falls back to `balance.balanced_assign`,
    the log-domain solver. The rounding reads the plan in the log domain,
    `log u_i - cost_ik / reg + log v_k`, so entries that underflow keep their order.
    """
    check_rounding(rounding)
    c = sq_dist - sq_dist.min(1, keepdim=True).values
    m = c.mean()
    c = c / m if m > 0 else c
    M, W = c.shape
    K = torch.exp(-c / reg)
    a, b = 1.0 / M, 1.0 / W
    v = torch.ones(W, dtype=K.dtype, device=K.device)
    for it in range(int(num_iter)):
        u = a / (K @ v)
        Ktu = K.T @ u
        if it % 10 == 9 and float((v * Ktu / b - 1).abs().max()) < tol:
            break
        v = b / Ktu
    u = a / (K @ v)
    ok = bool(torch.isfinite(v).all()) and bool((v > 0).all())
    ok = ok and bool(torch.isfinite(u).all()) and bool((u > 0).all())
    if not ok:
        return torch.from_numpy(
            balanced_assign(sq_dist.cpu().numpy(), reg=reg, num_iter=num_iter, rounding=rounding)
        ).to(sq_dist.device)
    if rounding == "argmax":
        return (K * v[None, :]).argmax(1)
    score = torch.log(u)[:, None] - c / reg + torch.log(v)[None, :]
    return torch.from_numpy(balanced_round(score.cpu().numpy())).to(sq_dist.device)


def _balanced_codes(student: Student, xt: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Algorithm 1 per codebook on transformed vectors xt (n, d_out): int64 (n, B). AQ assigns
    codebook after codebook on the residual of the balanced codes before it."""
    with torch.no_grad():
        C = student.codebooks
        dsub = C.shape[2]
        codes = torch.empty((xt.shape[0], student.B), dtype=torch.int64, device=xt.device)
        r = xt
        for b in range(student.B):
            x_b = xt[:, b * dsub : (b + 1) * dsub] if student.product else r
            d = (x_b * x_b).sum(1, keepdim=True) - 2 * x_b @ C[b].T + (C[b] * C[b]).sum(1)
            if cfg.sinkhorn_method == "torch":
                t = sinkhorn_codes(
                    d.double(), cfg.sinkhorn_reg, cfg.sinkhorn_iter, rounding=cfg.balance_rounding
                )
            else:
                t = torch.from_numpy(
                    balanced_assign(
                        d.double().cpu().numpy(),
                        reg=cfg.sinkhorn_reg,
                        method=cfg.sinkhorn_method,
                        num_iter=cfg.sinkhorn_iter,
                        rounding=cfg.balance_rounding,
                    )
                ).to(xt.device)
            codes[:, b] = t
            if not student.product:
                r = r - C[b][codes[:, b]]
    return codes


def encode(student: Student, x: np.ndarray, cfg: TrainConfig, balanced: bool) -> np.ndarray:
    """Codes int32 (n, B) of documents x float32 (n, d_in): balanced (Algorithm 1, in seeded
    random chunks of `balance_chunk`, each balanced: with the default rounding every list holds
    n / W documents to within one per chunk) or nearest (PQ / OPQ: nearest codeword per
    subspace; AQ: the residual beam search of `CodebookQuantizer.encode`, as the AQ baseline)."""
    n = len(x)
    if not balanced and not student.product:
        return student.to_quantizer().encode(np.ascontiguousarray(x, np.float32))
    codes = np.empty((n, student.B), dtype=np.int32)
    order = np.random.default_rng(cfg.seed).permutation(n) if balanced else np.arange(n)
    step = cfg.balance_chunk if balanced else 1 << 15
    chunks = tqdm(
        range(0, n, step),
        desc=f"KDindex {'balanced (Sinkhorn)' if balanced else 'nearest'} codes",
        unit="chunk",
        disable=not cfg.progress or n <= step,  # one chunk: a second at most
        leave=False,
    )
    with torch.no_grad():
        for i0 in chunks:
            idx = order[i0 : i0 + step]
            xi = np.ascontiguousarray(x[idx], np.float32)
            xt = student.transform(torch.from_numpy(xi).to(student.codebooks.device))
            c = _balanced_codes(student, xt, cfg) if balanced else student.assign(xt)[0]
            codes[idx] = c.cpu().numpy()
    return codes


def index_codes(student: Student, xb: np.ndarray, cfg: TrainConfig) -> np.ndarray:
    """The codes int32 (nb, B) the index stores for the base xb: balanced (Algorithm 1) when
    `cfg.balance_index`, else nearest (module docstring). Deterministic for a given student and
    seed, so early stopping (`val_codes="index"`) measures exactly the codes `KDIndex.fit` saves."""
    return encode(student, xb, cfg, balanced=cfg.balance_index)


def _pair_scores(qt: torch.Tensor, dt: torch.Tensor, metric: str) -> torch.Tensor:
    """qt (n, d), dt (n, K, d) -> S(q, d_i) (n, K): inner product or minus squared L2."""
    if metric == "ip":
        return (qt[:, None, :] * dt).sum(-1)
    return -((qt[:, None, :] - dt) ** 2).sum(-1)


def _batch_loss(student, xq, xd, metric, cfg, doc_codes, rec_scale, differentiable):
    """Loss of one mini-batch. xq float (n, d_in) queries, xd float (n, K, d_in) their teacher
    neighbours, doc_codes int64 (n * K, B) fixed codes (iterative phase) or None."""
    n, K, d = xd.shape
    qt = student.transform(xq)
    dt = student.transform(xd.reshape(n * K, d))
    if differentiable:
        codes = _balanced_codes(student, dt, cfg) if cfg.batch_balance else None
        _, _, dr = student.assign(dt, codes, straight_through=True)
        _, _, qr = student.assign(qt, None, straight_through=True)
    else:
        dr = student.decode(doc_codes)
        qr = student.decode(student.assign(qt.detach())[0])
    rec = reconstruction_loss(qt, qr, rec_scale) + reconstruction_loss(dt, dr, rec_scale)
    if cfg.distill_weight == 0:  # Table 5 "w/o Distillation loss"
        return cfg.rec_weight * rec
    w = rank_weights(K)
    if cfg.loss == "distribution":
        lq = student.codeword_scores(qt, metric) / student.tau_s[None, :, None]
        ld = student.codeword_scores(dt, metric) / student.tau_s[None, :, None]
        distill = distribution_loss(lq, ld.reshape(n, K, student.B, -1), w, cfg.rank_weighting)
    else:
        s_true = _pair_scores(qt, dt.reshape(n, K, -1), metric).detach()
        s_quant = _pair_scores(qt, dr.reshape(n, K, -1), metric)
        scale = s_true.std().clamp_min(1e-12) * cfg.temperature  # scale-free scores (silent)
        if cfg.loss == "weighted_kl":
            distill = weighted_kl_loss(s_quant / scale, s_true / scale, w, cfg.kl_weighting)
        else:
            distill = lambdarank_loss(s_quant / scale, w)
    return cfg.distill_weight * distill + cfg.rec_weight * rec


def _val_recall(student, xb, xv, labels_v, metric, cfg) -> float:
    """Recall of the teacher's top-K among the student's top-K (exhaustive ADC, through faiss as
    `KDIndex.search`, so that ties order alike) on the codes the index stores (`index_codes`;
    nearest codes with `val_codes="nearest"`)."""
    K = labels_v.shape[1]
    q = student.to_quantizer()
    if cfg.val_codes == "index":
        codes = index_codes(student, xb, cfg)
    else:
        codes = encode(student, xb, cfg, balanced=False)
    _, I = flat_index(q, codes, metric).search(np.ascontiguousarray(xv, dtype=np.float32), K)
    hits = [len(np.intersect1d(I[i], labels_v[i])) for i in range(len(I))]
    return float(np.mean(hits) / K)


# ------------------------------------------------------------------------- checkpoints
def _plain(x):
    """x as JSON types only (a checkpoint is read back with torch.load(weights_only=True))."""
    return json.loads(json.dumps(x, sort_keys=True, default=repr))


def _fingerprint(student, xb, xq, labels, val, metric, cfg, settings) -> dict:
    """What a resumed run must share with its checkpoint: the configuration (TrainConfig but
    `progress`, the student's and the caller's settings), the data and CODE_VERSION; and the
    warm-started student, whose difference is only warned about (float noise of the warm start:
    the checkpoint holds the whole student)."""
    from annrepro.groundtruth import array_fingerprint

    config = {k: v for k, v in asdict(cfg).items() if k not in _NOT_FINGERPRINTED}
    config.update(
        kind=student.kind,
        B=student.B,
        W=student.W,
        d_in=student.d_in,
        d_out=student.d_out,
        aq_beam=student.aq_beam,
        metric=metric,
    )
    config.update(settings or {})
    state = student.state_dict()
    warm = array_fingerprint(*(state[k].detach().cpu().numpy() for k in sorted(state)))
    return {
        "config": _plain(config),
        "data": {
            "base vectors": array_fingerprint(np.ascontiguousarray(xb, np.float32)),
            "training queries": array_fingerprint(np.ascontiguousarray(xq, np.float32)),
            "labels": array_fingerprint(np.ascontiguousarray(labels, np.int64)),
            "validation split": array_fingerprint(np.asarray(val, np.int64)),
        },
        "code_version": CODE_VERSION,
        "warm_start": warm,
    }


def _load_checkpoint(path: Path) -> dict:
    """A checkpoint written by `train_student`, or InputError naming the file in one line."""
    return read_checkpoint(path, "KDindex", CHECKPOINT_FORMAT, _CHECKPOINT_KEYS, _CHECKPOINT_HOW)


def _check_resumable(theirs, ours: dict, path: Path) -> None:
    """CheckpointMismatch, naming every difference in one line, unless the checkpoint's
    fingerprint is `ours` (but the warm start: a warning)."""
    check_resumable(theirs, ours, path, "KDindex", _CHECKPOINT_HOW)
    if theirs.get("warm_start") != ours["warm_start"]:
        log.warning(
            "%s was made from another warm start of the same settings (faiss threads or "
            "kernels?): the resumed student continues the checkpoint's",
            path,
        )


def _save_checkpoint(blob: dict, path: Path) -> None:
    save_checkpoint(blob, path)  # annrepro.checkpoint: atomic, one line on failure


def _clone(state: dict) -> dict:
    return {k: v.clone() for k, v in state.items()}


def train_student(
    student: Student,
    xb: np.ndarray,
    xq: np.ndarray,
    labels: np.ndarray,
    metric: str,
    cfg: TrainConfig,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    settings: dict | None = None,
) -> TrainResult:
    """Algorithm 2. student: warm-started `Student`; xb float32 (nb, d) documents; xq float32
    (nt, d) training queries; labels int64 (nt, K) their teacher top-K (nearest first); metric
    "l2" | "ip". Trains in place (the best validation state is restored) and returns the curve.

    checkpoint_dir: where `last.pt` is written after every round and epoch (module docstring);
    None: no checkpoints. resume: continue from `checkpoint_dir/last.pt` when it is there
    (False: start afresh and overwrite it). settings: JSON-able options of the caller that made
    the warm start (`KDIndex.fit`: n_warm, the warm-start options), part of the fingerprint.
    Raises CheckpointMismatch for a checkpoint of another configuration or data, InputError for
    one that cannot be read or written (both name the file).
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    nt, K = labels.shape
    perm = rng.permutation(nt)
    n_val = int(round(cfg.val_frac * nt)) if nt > 1 else 0
    val, tr = perm[:n_val], perm[n_val:]
    device = student.codebooks.device  # where the student is (`Student` module docstring)
    xqt = torch.from_numpy(np.ascontiguousarray(xq, np.float32)).to(device)
    xbt = torch.from_numpy(np.ascontiguousarray(xb, np.float32)).to(device)
    with torch.no_grad():
        rec_scale = float((student.transform(xbt[: 1 << 14]) ** 2).mean().clamp_min(1e-12))
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    res = TrainResult(val_ids=[int(i) for i in val])
    W = student.W

    # where training stands: phase "init" (rounds finished), "diff" (epochs finished; best None:
    # the validation before epoch 0 is still to come) or "done"
    phase, r0, ep0 = "init", 0, 0
    best, best_val, stale = None, -1.0, 0
    ckpt_path = fingerprint = None
    if checkpoint_dir is not None:
        ckpt_path = checkpoint_path(checkpoint_dir, CHECKPOINT_NAME)
        fingerprint = _fingerprint(student, xb, xq, labels, val, metric, cfg, settings)
        if resume and ckpt_path.exists():
            ckpt = _load_checkpoint(ckpt_path)
            _check_resumable(ckpt["fingerprint"], fingerprint, ckpt_path)
            try:
                phase, r0, ep0 = str(ckpt["phase"]), int(ckpt["round"]), int(ckpt["epoch"])
                if phase not in ("init", "diff", "done"):
                    raise ValueError(f"unknown phase {phase!r}")
                if not 0 <= r0 <= cfg.init_max_rounds or not 0 <= ep0 <= cfg.epochs:
                    raise ValueError(f"round {r0}, epoch {ep0}")
                student.load_state_dict(ckpt["student"])
                opt.load_state_dict(ckpt["optimizer"])
                rng.bit_generator.state = ckpt["rng"]["numpy"]
                torch.set_rng_state(ckpt["rng"]["torch"])
                rec_scale = float(ckpt["rec_scale"])
                b = ckpt["best"]
                best = None if b["state"] is None else dict(b["state"])
                best_val, res.best_epoch = float(b["val_recall"]), int(b["epoch"])
                stale = int(ckpt["stale"])
                res.curve = list(ckpt["result"]["curve"])
                res.init_rounds = int(ckpt["result"]["init_rounds"])
                if res.init_rounds != r0:
                    raise ValueError(f"{res.init_rounds} init rounds recorded, {r0} finished")
            except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise InputError(
                    f"{ckpt_path}: checkpoint does not fit its own configuration "
                    f"({first_line(e)}); {_CHECKPOINT_HOW}"
                ) from None
            if ckpt.get("threads") != torch.get_num_threads():
                log.warning(
                    "%s was written with %s torch threads, resumed with %d: the student may "
                    "differ in the last bits from an uninterrupted run (float summation order)",
                    ckpt_path,
                    ckpt.get("threads"),
                    torch.get_num_threads(),
                )
            log.info(
                "resuming from %s at %s (init rounds done %d, epochs done %d)",
                ckpt_path,
                phase,
                r0,
                ep0,
            )

    def checkpoint(phase: str, rounds: int, epochs: int) -> None:
        """Draws no random numbers and changes no state."""
        if ckpt_path is None:
            return
        blob = {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": fingerprint,
            "phase": phase,
            "round": rounds,  # init rounds finished
            "epoch": epochs,  # differentiable epochs finished
            "student": student.state_dict(),
            "optimizer": opt.state_dict(),
            "best": {"state": best, "val_recall": best_val, "epoch": res.best_epoch},
            "stale": stale,
            "result": {"curve": res.curve, "init_rounds": res.init_rounds},
            "rec_scale": rec_scale,
            "rng": {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()},
            "threads": torch.get_num_threads(),
        }
        _save_checkpoint(blob, ckpt_path)

    def batches(what: str):
        order = tr[rng.permutation(len(tr))]
        steps = range(0, len(order), cfg.batch_size)
        bar = tqdm(steps, desc=what, unit="batch", disable=not cfg.progress, leave=False)
        for i0 in bar:
            yield order[i0 : i0 + cfg.batch_size]

    # iterative initialisation (Sec. 3.2, 4.3): balanced assignment, then codebook update
    docs = np.unique(labels[tr])
    pos = np.full(len(xb), -1, dtype=np.int64)
    pos[docs] = np.arange(len(docs))
    rounds = range(r0, cfg.init_max_rounds if phase == "init" else 0)
    if len(rounds):
        log.info(
            "iterative initialisation: up to %d rounds (from round %d) of %s codes for the %d "
            "teacher documents, then an epoch over %d training queries each",
            cfg.init_max_rounds,
            r0,
            "balanced" if cfg.init_balance else "nearest",
            len(docs),
            len(tr),
        )
    bar = tqdm(
        rounds,
        desc="KDindex init rounds",
        initial=r0,
        total=cfg.init_max_rounds,
        disable=not cfg.progress or not len(rounds),
        leave=False,
    )
    for r in bar:
        codes = encode(student, xb[docs], cfg, balanced=cfg.init_balance)
        balanced = is_balanced(codes, W)
        losses = []
        ct = torch.from_numpy(codes.astype(np.int64)).to(device)
        for bq in batches(f"init round {r}"):
            dc = ct[pos[labels[bq].reshape(-1)]]
            loss = _batch_loss(student, xqt[bq], xbt[labels[bq]], metric, cfg, dc, rec_scale, False)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        gap = int(balance_gap(codes, W).max())
        res.curve.append(
            {"phase": "init", "epoch": r, "loss": float(np.mean(losses)), "balance_gap": gap}
        )
        res.init_rounds = r + 1
        log.info(
            "init round %d: loss %.4f, balanced %s (list sizes within %d)",
            r,
            np.mean(losses),
            balanced,
            gap,
        )
        bar.set_postfix(loss=f"{np.mean(losses):.4f}", gap=gap)
        over = balanced or r + 1 == cfg.init_max_rounds
        checkpoint("diff" if over else "init", r + 1, 0)
        if balanced:
            break
    if phase == "init":
        phase = "diff"

    # differentiable training (Algorithm 2) with early stopping
    if best is None:
        best = _clone(student.state_dict())
        best_val = _val_recall(student, xb, xq[val], labels[val], metric, cfg) if n_val else -1.0
        res.curve.append(
            {"phase": "diff", "epoch": -1, "loss": float("nan"), "val_recall": best_val}
        )
        if n_val:
            log.info(
                "validation recall of the initialised student (epoch -1): %.4f on %d held-out "
                "training queries; differentiable epochs must beat it",
                best_val,
                n_val,
            )
    bar = tqdm(
        range(ep0, cfg.epochs if phase == "diff" else ep0),
        desc="KDindex epochs",
        initial=ep0,
        total=cfg.epochs,
        disable=not cfg.progress,
        leave=False,
    )
    for ep in bar:
        losses = []
        for bq in batches(f"epoch {ep}"):
            loss = _batch_loss(
                student, xqt[bq], xbt[labels[bq]], metric, cfg, None, rec_scale, True
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        v = _val_recall(student, xb, xq[val], labels[val], metric, cfg) if n_val else -1.0
        res.curve.append(
            {"phase": "diff", "epoch": ep, "loss": float(np.mean(losses)), "val_recall": v}
        )
        bar.set_postfix(loss=f"{np.mean(losses):.4f}", val=f"{v:.4f}")
        stop = False
        if v > best_val:
            best_val, stale, res.best_epoch = v, 0, ep
            best = _clone(student.state_dict())
        else:
            stale += 1
            stop = stale >= cfg.patience
        checkpoint("done" if stop or ep + 1 == cfg.epochs else "diff", res.init_rounds, ep + 1)
        if stop:
            break
    student.load_state_dict(best)
    res.best_val_recall = best_val
    if res.best_epoch < 0:
        why = (
            f"no differentiable epoch improved on its validation recall {best_val:.4f}"
            if n_val
            else f"no validation split to stop early on: val_frac {cfg.val_frac} of {nt} "
            "training queries rounds to none"
        )
        log.info("best epoch -1: the initialised student is kept (%s)", why)
    return res
