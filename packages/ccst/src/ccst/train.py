"""Training loop of CCST (Sec. 4.1): AdamW, poly learning rate per epoch, INRP loss (Sec. 3.2).

Sec. 4.1: 2400 epochs, AdamW (Loshchilov & Hutter 2017), initial learning rate 1e-4, batch 1024,
poly policy of power 0.9 applied every epoch: lr_e = lr * (1 - e / epochs) ** 0.9. Where the paper
is silent (weight decay, validation split) the values are `TrainConfig` fields, documented there.

Checkpoints (`<checkpoint_dir>/last.pt`) hold the network, the optimizer, the shuffling
generator and the history, written atomically after every `checkpoint_every` epochs and at the
end; a later `train` on the same directory resumes from it, and an uninterrupted run and an
interrupted-then-resumed run give the same weights. A checkpoint of another configuration is
refused. A non-finite loss stops training with `TrainingDiverged`, naming the epoch; the last
checkpoint (written before that epoch) is left untouched.

`train` is a short loop over named steps: the run's optimizer and generator (`_new_run`), the
checkpoint (`_Checkpoints`: resume, due, save), one epoch (`train_epoch`) and the validation loss
(`validate`).

The same loop trains the compressor baselines of Table 5 (`ccst.baselines`): any module with a
`cfg` holding `d_in` and `to_dict()`, with the INRP loss (the default) or another `loss_fn`.

Device (`device`, `check_device`): the network, the batches and AdamW run there; the split, the
batch order (a CPU torch.Generator) and the initial weights (drawn before the network is moved)
are the CPU's, so a CUDA run sees the same batches from the same start as a CPU run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from annrepro.atomic import atomic_torch_save
from annrepro.devices import check_device  # re-exported: ccst.api, ccst.baselines
from tqdm.auto import tqdm

from ccst.errors import DataError, ModelFileError, first_line
from ccst.losses import ALPHA, BETA, LOSS_VARIANTS, inrp_loss
from ccst.model import CCSTNet

__all__ = [
    "CheckpointMismatch",
    "LossFn",
    "TrainConfig",
    "TrainingDiverged",
    "check_device",
    "min_train_vectors",
    "split_train_val",
    "train",
    "train_epoch",
    "validate",
]

# loss_fn(net, xb) -> scalar tensor: the training objective of one mini-batch xb (B, d_in)
LossFn = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"


class TrainingDiverged(RuntimeError):
    """The training loss (INRP by default) became NaN or infinite."""


class CheckpointMismatch(ValueError):
    """A checkpoint to resume from was written by another configuration."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Attributes:
        epochs: passes over the training split (Sec. 4.1: 2400 at full scale).
        batch_size: mini-batch size m of Eq. 4 (Sec. 4.1: 1024).
        lr: initial learning rate of AdamW (Sec. 4.1: 1e-4).
        weight_decay: AdamW weight decay; the paper is silent, 0.01 is AdamW's default.
        poly_power: exponent of the poly schedule, stepped per epoch (Sec. 4.1: 0.9).
        val_fraction: share of the training vectors held out to report a validation loss; the
            paper is silent (it trains on the database, Sec. 4.1); ours: 5 %.
        loss: "abs" (Eq. 4 and the released code: |d_out - d_in|) or "squared" (an option).
        alpha, beta: clamp of the INRP weights (Sec. 3.2: 2.0 and 0.01).
        seed: seed of the validation split and of the batch order.
        checkpoint_every: epochs between checkpoints (when a directory is given).
    """

    epochs: int = 2400
    batch_size: int = 1024
    lr: float = 1e-4
    weight_decay: float = 0.01
    poly_power: float = 0.9
    val_fraction: float = 0.05
    loss: str = "abs"
    alpha: float = ALPHA
    beta: float = BETA
    seed: int = 0
    checkpoint_every: int = 10

    def __post_init__(self):
        if self.loss not in LOSS_VARIANTS:
            raise ValueError(f"unknown INRP variant {self.loss!r}; expected one of {LOSS_VARIANTS}")
        if self.epochs < 1 or self.batch_size < 2 or self.checkpoint_every < 1:
            raise ValueError("epochs >= 1, batch_size >= 2 and checkpoint_every >= 1 are required")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    def identity(self) -> dict:
        """The fields a resumed run must share with the checkpoint (all but checkpoint_every)."""
        d = dataclasses.asdict(self)
        d.pop("checkpoint_every")
        return d

    def lr_at(self, epoch: int) -> float:
        """Poly schedule (Sec. 4.1): learning rate of 0-based `epoch`."""
        return self.lr * (1.0 - epoch / self.epochs) ** self.poly_power


def _n_val(nt: int, val_fraction: float) -> int:
    n_val = int(round(nt * val_fraction))
    return 2 if n_val == 1 else n_val  # a validation batch needs a pair


def min_train_vectors(val_fraction: float) -> int:
    """The fewest training vectors that give a validation pair (when val_fraction > 0) and
    leave at least 2 for training."""
    if val_fraction <= 0.0:
        return 2
    nt = max(4, int(0.5 / val_fraction))
    while _n_val(nt, val_fraction) < 2 or nt - _n_val(nt, val_fraction) < 2:
        nt += 1
    return nt


def split_train_val(nt: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ids of the training and validation splits (int64, each sorted).

    Raises:
        DataError: too few vectors for a validation pair (val_fraction > 0) plus a training pair;
            without this check a tiny set trained with no validation and reported 'val loss nan'.
    """
    n_val = _n_val(nt, val_fraction)
    if (val_fraction > 0.0 and n_val < 2) or nt - n_val < 2:
        need = min_train_vectors(val_fraction)
        raise DataError(
            "training vectors",
            f"{nt} training vectors are too few: a validation split of {val_fraction:g} and "
            f"training need at least {need} (or train without validation: val_fraction 0, "
            "--val-fraction 0)"
            if val_fraction > 0.0
            else f"{nt} training vectors are too few: training needs at least 2",
        )
    perm = np.random.default_rng(seed).permutation(nt)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _batch(x: np.ndarray, rows: np.ndarray, device) -> torch.Tensor:
    # sorted rows: sequential reads when x is memory-mapped; the loss and BN ignore row order
    return torch.from_numpy(as_tensor_ready(x[np.sort(rows)])).to(device)


def as_tensor_ready(x: np.ndarray) -> np.ndarray:
    """float32, C-contiguous and writable (torch refuses read-only memory maps), copying only
    when needed."""
    return np.require(x, dtype=np.float32, requirements=["C", "W"])


def _save_atomic(obj: dict, path: Path) -> None:
    """Through a unique temporary and an atomic rename: two runs sharing a checkpoint directory
    never remove each other's temporary (annrepro.atomic)."""
    try:
        atomic_torch_save(obj, path)
    except (OSError, RuntimeError) as e:  # torch's 'enforce fail' does not name the file
        raise ModelFileError(path, f"cannot write the checkpoint: {first_line(e)}") from None


def _load_checkpoint(path: Path) -> dict:
    """A checkpoint written by `train`, or ModelFileError naming the file in one line."""
    how = "delete it, use another checkpoint directory or resume=False"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip / pickle / EOF errors of a truncated or foreign file
        raise ModelFileError(
            path,
            f"unreadable checkpoint (truncated or corrupt? {type(e).__name__}: "
            f"{first_line(e)}); {how}",
        ) from None
    keys = ("model_config", "train_config", "nt", "epoch", "model", "optimizer", "generator")
    missing = [k for k in keys if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ModelFileError(path, f"not a CCST checkpoint (no {', '.join(missing)}); {how}")
    return ckpt


def _check_resumable(ckpt: dict, net: CCSTNet, cfg: TrainConfig, nt: int, path: Path) -> None:
    ours = {"model": net.cfg.to_dict(), "train": cfg.identity(), "nt": nt}
    theirs = {"model": ckpt["model_config"], "train": ckpt["train_config"], "nt": ckpt["nt"]}
    if ours != theirs:
        diff = [
            f"{part}.{key}: checkpoint {theirs[part].get(key)!r} != now {ours[part].get(key)!r}"
            for part in ("model", "train")
            for key in sorted(set(ours[part]) | set(theirs[part]))
            if ours[part].get(key) != theirs[part].get(key)
        ]
        if ours["nt"] != theirs["nt"]:
            diff.append(f"nt: checkpoint {theirs['nt']} != now {ours['nt']}")
        raise CheckpointMismatch(
            f"cannot resume from {path}: it was written by another configuration ("
            + "; ".join(diff)
            + "); use another checkpoint directory or resume=False"
        )


def _inrp_loss_fn(boundary: float, cfg: TrainConfig) -> LossFn:
    """The default objective: INRP (Eq. 4-5) between f(xb) and xb."""

    def loss_fn(net: torch.nn.Module, xb: torch.Tensor) -> torch.Tensor:
        return inrp_loss(net(xb), xb, boundary, cfg.loss, cfg.alpha, cfg.beta)

    return loss_fn


@torch.no_grad()
def validate(net, x: np.ndarray, rows: np.ndarray, loss_fn: LossFn, cfg: TrainConfig, device):
    """Mean mini-batch loss over the validation rows of x (NaN without a validation pair), in
    eval mode; `net` is left in train mode."""
    net.eval()
    total, n = 0.0, 0
    for i0 in range(0, len(rows), cfg.batch_size):
        r = rows[i0 : i0 + cfg.batch_size]
        if len(r) < 2:
            continue
        xb = _batch(x, r, device)
        loss = loss_fn(net, xb)
        total += float(loss) * len(r)
        n += len(r)
    net.train()
    return total / n if n else float("nan")


@dataclass
class _Run:
    """What a training carries from epoch to epoch and what its checkpoint holds."""

    net: torch.nn.Module
    opt: torch.optim.Optimizer
    gen: torch.Generator
    history: list[dict]
    start: int = 0  # epochs already done (a resumed run)


def _new_run(net: torch.nn.Module, cfg: TrainConfig, device) -> _Run:
    """The network in train mode on `device`, AdamW over its trainable parameters (frozen ones,
    CCSTConfig.freeze_projection, stay out: no weight decay either) and the batch-order
    generator seeded with cfg.seed."""
    net.to(device).train()
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return _Run(net, opt, torch.Generator().manual_seed(cfg.seed), [])


class _Checkpoints:
    """`<checkpoint_dir>/last.pt` of one training (None: no checkpoints): resume from it, write
    it atomically, and say which one is kept when training stops."""

    def __init__(self, checkpoint_dir, cfg: TrainConfig, nt: int, boundary: float):
        self.cfg, self.nt, self.boundary = cfg, nt, boundary
        self.path = None
        if checkpoint_dir is not None:
            self.path = Path(checkpoint_dir) / CHECKPOINT_NAME
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ModelFileError(
                    self.path.parent,
                    f"cannot create the checkpoint directory: {e.strerror or e}",
                ) from None
        self.saved: int | None = None  # epoch of the checkpoint on disk

    def resume(self, run: _Run, resume: bool) -> None:
        """Load the checkpoint into `run` when there is one and `resume`; refuse one of another
        configuration (CheckpointMismatch) or one that does not fit its own (ModelFileError)."""
        path = self.path
        if path is not None and resume and path.exists():
            ckpt = _load_checkpoint(path)
            _check_resumable(ckpt, run.net, self.cfg, self.nt, path)
            try:
                run.net.load_state_dict(ckpt["model"])
                run.opt.load_state_dict(ckpt["optimizer"])
                run.gen.set_state(ckpt["generator"])
            except (RuntimeError, ValueError, KeyError, TypeError) as e:
                raise ModelFileError(
                    path, f"checkpoint does not fit its own configuration: {first_line(e)}"
                ) from None
            run.history = list(ckpt["history"])
            run.start = int(ckpt["epoch"])
            log.info("resuming from %s at epoch %d / %d", path, run.start, self.cfg.epochs)
        self.saved = run.start if path is not None and path.exists() else None

    def due(self, epoch: int) -> bool:
        """Whether a checkpoint is written after 1-based `epoch` (every checkpoint_every, and the
        last)."""
        return epoch % self.cfg.checkpoint_every == 0 or epoch == self.cfg.epochs

    def save(self, run: _Run, epoch: int) -> None:
        if self.path is None:
            return
        state = {
            "model_config": run.net.cfg.to_dict(),
            "train_config": self.cfg.identity(),
            "nt": self.nt,
            "boundary": self.boundary,
            "epoch": epoch,
            "model": run.net.state_dict(),
            "optimizer": run.opt.state_dict(),
            "generator": run.gen.get_state(),
            "history": run.history,
        }
        _save_atomic(state, self.path)
        self.saved = epoch

    def last_good(self) -> str:
        """The checkpoint a training stopped by a non-finite training loss leaves."""
        if self.saved is None:
            return "no checkpoint was written"
        return f"the last good checkpoint {self.path} (epoch {self.saved})"


def train_epoch(
    run: _Run,
    xt: np.ndarray,
    train_rows: np.ndarray,
    loss_fn: LossFn,
    cfg: TrainConfig,
    epoch: int,
    device,
    checkpoints: _Checkpoints,
) -> dict:
    """One pass over the training rows in the generator's order, at the poly learning rate of
    0-based `epoch` (Sec. 4.1): {"epoch" (1-based), "lr", "train_loss"} (the mean over the
    vectors of the batches trained on).

    Raises TrainingDiverged on a non-finite loss, naming the epoch, the batch and the checkpoint
    kept."""
    lr = cfg.lr_at(epoch)
    for group in run.opt.param_groups:
        group["lr"] = lr
    order = train_rows[torch.randperm(len(train_rows), generator=run.gen).numpy()]
    total, n = 0.0, 0
    for i0 in range(0, len(order), cfg.batch_size):
        rows = order[i0 : i0 + cfg.batch_size]
        if len(rows) < 2:  # a single vector has no pair (and breaks batch norm)
            continue
        xb = _batch(xt, rows, device)
        loss = loss_fn(run.net, xb)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"training loss is {loss.item()} at epoch {epoch + 1} (batch starting at "
                f"{i0}); training stopped, {checkpoints.last_good()} is kept"
            )
        if loss.requires_grad:  # else nothing trainable reaches the output (an ablation)
            run.opt.zero_grad(set_to_none=True)
            loss.backward()
            run.opt.step()
        total += loss.item() * len(rows)
        n += len(rows)
    return {"epoch": epoch + 1, "lr": lr, "train_loss": total / n}


def train(
    net: CCSTNet,
    xt: np.ndarray,
    boundary: float,
    cfg: TrainConfig,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = True,
    device: str = "cpu",
    progress: bool = True,
    on_epoch_end: Callable[[dict], None] | None = None,
    loss_fn: LossFn | None = None,
) -> list[dict]:
    """Train `net` in place with the INRP loss (or `loss_fn`).

    Args:
        net: the network (its config's d_in must equal xt's dimension); a CCSTNet or any module
            whose `cfg` has `d_in` and `to_dict()` (the baselines of `ccst.baselines`).
        xt: float32 (nt, d_in) training vectors (may be memory-mapped).
        boundary: the INRP boundary (`ccst.losses.estimate_boundary` of xt).
        cfg: optimisation settings.
        checkpoint_dir: where `last.pt` is written; None: no checkpoints.
        resume: continue from `checkpoint_dir/last.pt` when present.
        device: torch device ("cpu", "cuda"; `check_device`).
        progress: show a tqdm bar over epochs.
        on_epoch_end: called with each epoch's history record (e.g. to log, or to stop).
        loss_fn: objective of a mini-batch, `loss_fn(net, xb) -> scalar`; None: the INRP loss
            of `cfg` with `boundary` (Eq. 4-5).

    Returns:
        history: one dict per completed epoch (epoch (1-based), lr, train_loss, val_loss).

    Raises:
        TrainingDiverged: a non-finite loss; the message names the epoch and the checkpoint.
        CheckpointMismatch: resuming from a checkpoint of another configuration.
        DataError: xt of another dimension, or too few vectors (`split_train_val`).
        ModelFileError: a checkpoint that cannot be read or written, naming the file.
        SettingError: a device torch does not have (`check_device`).
    """
    device = check_device(device)
    nt, d = xt.shape
    if d != net.cfg.d_in:
        raise DataError(
            "training vectors", f"dimension {d}, the network expects d_in={net.cfg.d_in}"
        )
    if loss_fn is None:
        loss_fn = _inrp_loss_fn(boundary, cfg)
    train_rows, val_rows = split_train_val(nt, cfg.val_fraction, cfg.seed)
    run = _new_run(net, cfg, device)
    checkpoints = _Checkpoints(checkpoint_dir, cfg, nt, boundary)
    checkpoints.resume(run, resume)
    bar = tqdm(
        range(run.start, cfg.epochs),
        desc="ccst train",
        initial=run.start,
        total=cfg.epochs,
        disable=not progress,
    )
    for epoch in bar:
        record = train_epoch(run, xt, train_rows, loss_fn, cfg, epoch, device, checkpoints)
        record["val_loss"] = validate(net, xt, val_rows, loss_fn, cfg, device)
        if len(val_rows) and not math.isfinite(record["val_loss"]):
            raise TrainingDiverged(
                f"validation loss is {record['val_loss']} at epoch {epoch + 1}; training "
                f"stopped, the last checkpoint ({checkpoints.path}, epoch {checkpoints.saved}) "
                "is kept"
            )
        run.history.append(record)
        bar.set_postfix(loss=f"{record['train_loss']:.4g}", val=f"{record['val_loss']:.4g}")
        if checkpoints.due(epoch + 1):
            checkpoints.save(run, epoch + 1)
        if on_epoch_end is not None:
            on_epoch_end(record)
    net.eval()
    return run.history
