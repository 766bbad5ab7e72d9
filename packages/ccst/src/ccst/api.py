"""Public API: `CCST`, a feature compressor with fit / transform / save / load.

    model = CCST(compression_factor=4, epochs=50).fit(xt)      # xt: float32 (nt, d_in)
    xb_c = model.transform(xb)                                  # float32 (nb, d_in / 4)
    model.save("ccst4x.pt"); model = CCST.load("ccst4x.pt")

The INRP boundary (Eq. 5) is estimated from the training vectors at `fit` and stored with the
model.

Scale normalisation (our choice; the paper is silent): f(x) = s_out * net(x / s_in), with s_out
fitted once at `fit` so that the mean pairwise distance of the initial outputs, on a sample of
the training vectors, equals the INRP boundary (the mean pairwise distance of the inputs), and
then kept fixed; the INRP loss (Eq. 4) is computed on f(x) and x in the data's own units. Why:
the batch norms of the network set its output scale near 1 per dimension whatever the input
units, while the distances it must reproduce are ~3e3 on fmnist (0-255 pixels) and ~1.4 on
unit-norm Deep features; AdamW at lr 1e-4 closes such a gap only slowly, so a short run stays
below a single SRP. `input_scaling` chooses s_in:
- "output" (default): s_in = 1, only the output is rescaled;
- "boundary": s_in = the boundary as well (the network sees unit-scale inputs);
- "none": s_in = s_out = 1, the network as printed.
Measured on fmnist-1K, factor 4, 30 epochs, seed 0, exhaustive search, 200 queries:
1-recall@1 0.65 ("output"), 0.30 ("boundary"), 0.425 ("none"); a single SRP gives 0.74.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
import torch

from ccst.losses import ALPHA, BETA, estimate_boundary
from ccst.model import CCSTConfig, CCSTNet
from ccst.train import TrainConfig, as_tensor_ready, train

__all__ = ["CCST"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: input/output scales (format 1 files load with scales 1)
INPUT_SCALINGS = ("output", "boundary", "none")
_ARCH_FIELDS = ("compression_factor", "d_out", "n_tokens", "depths", "heads", "qk_ratio")
_ARCH_FIELDS += ("mlp_ratio",)


class ScaledNet(torch.nn.Module):
    """f(x) = out_scale * net(x / in_scale) (see the module docstring); exposes `cfg` so that the
    training loop and its checkpoints treat it as the network."""

    def __init__(self, net: CCSTNet, in_scale: float = 1.0, out_scale: float = 1.0):
        super().__init__()
        self.net = net
        self.register_buffer("in_scale", torch.tensor(float(in_scale)))
        self.register_buffer("out_scale", torch.tensor(float(out_scale)))

    @property
    def cfg(self) -> CCSTConfig:
        return self.net.cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x / self.in_scale) * self.out_scale


def scaled_net(
    net: torch.nn.Module,
    xt: np.ndarray,
    boundary: float,
    input_scaling: str,
    scale_sample: int,
    seed: int,
) -> ScaledNet:
    """Wrap a freshly initialised `net` as f(x) = s_out * net(x / s_in) (see the module doc):
    s_in = boundary for "boundary", 1 otherwise; s_out fitted on a seeded sample of xt so the
    initial outputs' mean pairwise distance equals the boundary; "none" leaves both at 1."""
    in_scale = out_scale = 1.0
    if input_scaling in ("boundary", "output"):
        in_scale = boundary if input_scaling == "boundary" else 1.0
        n = min(int(scale_sample), xt.shape[0])
        rows = np.sort(np.random.default_rng(seed).choice(xt.shape[0], n, replace=False))
        xs = np.asarray(xt[rows], dtype=np.float32) / np.float32(in_scale)
        out_scale = fit_output_scale(net, xs, target=boundary / in_scale) * in_scale
        log.info("scales: input / %.6g, output * %.6g", in_scale, out_scale)
    return ScaledNet(net, in_scale, out_scale)


def fit_output_scale(net: CCSTNet, xs: np.ndarray, target: float) -> float:
    """target / mean pairwise distance of net(xs) at initialisation, measured with batch-norm
    batch statistics (train mode) on a copy so that `net`'s running statistics are untouched.

    xs: float32 (n, d_in), n >= 2, already divided by the input scale.
    """
    probe = copy.deepcopy(net).train()
    with torch.no_grad():
        y = probe(torch.from_numpy(as_tensor_ready(xs))).double()
    n = y.shape[0]
    mean = float(torch.cdist(y, y).sum() / (n * (n - 1)))
    if not mean > 0.0 or not np.isfinite(mean):
        raise ValueError(f"initial CCST outputs have mean pairwise distance {mean}")
    return target / mean


class CCST:
    """CCST feature compression (Sec. 3): d_in -> d_out = d_in / compression_factor.

    Args:
        compression_factor, d_out, n_tokens, depths, heads, qk_ratio, mlp_ratio: the network,
            see `ccst.model.CCSTConfig` (defaults: the released GIST1M configuration for the
            tokens, our choice for stages and heads).
        epochs, batch_size, lr, weight_decay, poly_power, val_fraction, loss, alpha, beta,
        checkpoint_every:
            the optimisation, see `ccst.train.TrainConfig` (defaults: Sec. 4.1).
        seed: seed of the initial weights (SRP draws included), split and batch order.
        input_scaling: "output" (default, our choice), "boundary" or "none" (as printed); see
            the module docstring.
        scale_sample: training rows used to fit the output scale.
        device: torch device for fit and transform.
        progress: tqdm bar over epochs.
    """

    def __init__(
        self,
        compression_factor: int = 2,
        d_out: int | None = None,
        n_tokens: int | None = None,
        depths: tuple[int, ...] = (2, 2),
        heads: int = 4,
        qk_ratio: float = 0.5,
        mlp_ratio: int = 2,
        epochs: int = 2400,
        batch_size: int = 1024,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        poly_power: float = 0.9,
        val_fraction: float = 0.05,
        loss: str = "squared",
        alpha: float = ALPHA,
        beta: float = BETA,
        checkpoint_every: int = 10,
        seed: int = 0,
        input_scaling: str = "output",
        scale_sample: int = 1024,
        device: str = "cpu",
        progress: bool = True,
    ):
        if input_scaling not in INPUT_SCALINGS:
            raise ValueError(
                f"unknown input_scaling {input_scaling!r}; expected one of {INPUT_SCALINGS}"
            )
        if scale_sample < 2:
            raise ValueError(f"scale_sample must be >= 2, got {scale_sample}")
        self.input_scaling = input_scaling
        self.scale_sample = int(scale_sample)
        self.arch = {
            "compression_factor": int(compression_factor),
            "d_out": d_out,
            "n_tokens": n_tokens,
            "depths": tuple(depths),
            "heads": heads,
            "qk_ratio": qk_ratio,
            "mlp_ratio": mlp_ratio,
        }
        self.train_config = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            poly_power=poly_power,
            val_fraction=val_fraction,
            loss=loss,
            alpha=alpha,
            beta=beta,
            seed=seed,
            checkpoint_every=checkpoint_every,
        )
        self.seed = seed
        self.device = device
        self.progress = progress
        self.net: ScaledNet | None = None
        self.boundary: float | None = None
        self.history: list[dict] = []

    # -- properties ------------------------------------------------------------------------
    @property
    def config(self) -> CCSTConfig:
        self._check_fitted()
        return self.net.cfg

    @property
    def d_in(self) -> int:
        return self.config.d_in

    @property
    def d_out(self) -> int:
        return self.config.d_out

    def _check_fitted(self) -> None:
        if self.net is None:
            raise RuntimeError("CCST is not fitted: call fit(xt) or CCST.load(path) first")

    # -- training --------------------------------------------------------------------------
    def fit(
        self,
        xt: np.ndarray,
        checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = True,
        on_epoch_end=None,
    ) -> CCST:
        """Estimate the INRP boundary on xt, build the network and train it (Sec. 3.2, 4.1).

        Args:
            xt: float32 (nt, d_in) training vectors (may be memory-mapped).
            checkpoint_dir: where checkpoints go; training resumes from one found there.
            resume: False ignores (and overwrites) a checkpoint in checkpoint_dir.
            on_epoch_end: callback with each epoch's history record.

        Raises:
            ValueError: compression factor not dividing d_in, or duplicate training vectors
                (boundary 0).
        """
        if xt.ndim != 2:
            raise ValueError(f"xt must be 2-D (nt, d_in), got shape {xt.shape}")
        cfg = CCSTConfig(d_in=int(xt.shape[1]), seed=self.seed, **self.arch)
        self.boundary = estimate_boundary(xt, seed=self.seed)
        log.info("INRP boundary (mean pairwise distance): %.6g", self.boundary)
        self.net = scaled_net(
            CCSTNet(cfg), xt, self.boundary, self.input_scaling, self.scale_sample, self.seed
        )
        self.history = train(
            self.net,
            xt,
            self.boundary,
            self.train_config,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            device=self.device,
            progress=self.progress,
            on_epoch_end=on_epoch_end,
        )
        return self

    # -- inference -------------------------------------------------------------------------
    def bytes_per_vector(self) -> int:
        """Rough peak activation bytes per vector in `transform` (float32): the token sequence
        through attention and the MLP, plus the input and the attention maps."""
        c = self.config
        t = c.n_tokens + 1
        floats = c.d_in * 2 + t * c.d_out * (2 * c.mlp_ratio + 6) + 2 * c.heads * t * t
        return 4 * floats

    def transform(
        self,
        x: np.ndarray,
        batch_size: int = 65536,
        max_memory_mb: float = 256.0,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Compress x with the trained network, in batches whose activations stay below
        `max_memory_mb` (estimated by `bytes_per_vector`).

        Args:
            x: (n, d_in), float32 or any dtype numpy converts (a uint8 memory map of Bigann-1B
                is read and converted one batch at a time).
            batch_size: upper bound on rows per forward pass.
            max_memory_mb: bound on the activation memory of one forward pass.
            out: float32 (n, d_out) array to write into (e.g. a np.memmap for a database
                larger than memory); default a new array.

        Returns:
            float32 (n, d_out), C-contiguous (`out` when given).
        """
        self._check_fitted()
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ValueError(
                f"CCST was trained on vectors of dimension {self.d_in}, got shape {x.shape}"
            )
        rows = max(1, min(batch_size, int(max_memory_mb * 2**20) // self.bytes_per_vector()))
        if out is None:
            out = np.empty((x.shape[0], self.d_out), dtype=np.float32)
        elif out.shape != (x.shape[0], self.d_out) or out.dtype != np.float32:
            raise ValueError(
                f"out must be float32 {(x.shape[0], self.d_out)}, got {out.dtype} {out.shape}"
            )
        net = self.net.to(self.device).eval()
        with torch.inference_mode():
            for i0 in range(0, x.shape[0], rows):
                xb = as_tensor_ready(x[i0 : i0 + rows])
                out[i0 : i0 + rows] = net(torch.from_numpy(xb).to(self.device)).cpu().numpy()
        return out

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the model (config, weights, INRP boundary, training settings and history)."""
        self._check_fitted()
        state = {
            "format_version": FORMAT_VERSION,
            "model_config": self.net.cfg.to_dict(),
            "train_config": dataclasses.asdict(self.train_config),
            "boundary": self.boundary,
            "input_scaling": self.input_scaling,
            "scales": [float(self.net.in_scale), float(self.net.out_scale)],
            "history": self.history,
            "state_dict": {k: v.cpu() for k, v in self.net.net.state_dict().items()},
        }
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> CCST:
        """Read a model written by `save`."""
        state = torch.load(path, map_location=device, weights_only=True)
        if state.get("format_version") not in (1, FORMAT_VERSION):
            raise ValueError(
                f"{path}: unsupported CCST file format {state.get('format_version')!r}"
            )
        cfg = CCSTConfig.from_dict(state["model_config"])
        arch = {k: getattr(cfg, k) for k in _ARCH_FIELDS}
        tc = state["train_config"]
        scaling = state.get("input_scaling", "none")  # format 1: no scales
        model = cls(**arch, **tc, input_scaling=scaling, device=device, progress=False)
        net = CCSTNet(cfg)
        net.load_state_dict(state["state_dict"])
        model.net = ScaledNet(net, *state.get("scales", (1.0, 1.0))).to(device).eval()
        model.boundary = float(state["boundary"])
        model.history = list(state["history"])
        return model
