"""Public API: `CCST`, a feature compressor with fit / transform / save / load.

    model = CCST(compression_factor=4, epochs=50).fit(xt)      # xt: float32 (nt, d_in)
    xb_c = model.transform(xb)                                  # float32 (nb, d_in / 4)
    model.save("ccst4x.pt"); model = CCST.load("ccst4x.pt")

The INRP boundary (Eq. 5) is estimated from the training vectors at `fit` and stored with the
model.
"""

from __future__ import annotations

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

FORMAT_VERSION = 1
_ARCH_FIELDS = ("compression_factor", "d_out", "n_tokens", "depths", "heads", "qk_ratio")
_ARCH_FIELDS += ("mlp_ratio",)


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
        device: str = "cpu",
        progress: bool = True,
    ):
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
        self.net: CCSTNet | None = None
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
        self.net = CCSTNet(cfg)
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
        self, x: np.ndarray, batch_size: int = 65536, max_memory_mb: float = 256.0
    ) -> np.ndarray:
        """Compress x with the trained network, in batches whose activations stay below
        `max_memory_mb` (estimated by `bytes_per_vector`).

        Args:
            x: float32 (n, d_in) (may be memory-mapped).
            batch_size: upper bound on rows per forward pass.
            max_memory_mb: bound on the activation memory of one forward pass.

        Returns:
            float32 (n, d_out), C-contiguous.
        """
        self._check_fitted()
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ValueError(
                f"CCST was trained on vectors of dimension {self.d_in}, got shape {x.shape}"
            )
        rows = max(1, min(batch_size, int(max_memory_mb * 2**20) // self.bytes_per_vector()))
        out = np.empty((x.shape[0], self.d_out), dtype=np.float32)
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
            "history": self.history,
            "state_dict": {k: v.cpu() for k, v in self.net.state_dict().items()},
        }
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> CCST:
        """Read a model written by `save`."""
        state = torch.load(path, map_location=device, weights_only=True)
        if state.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path}: unsupported CCST file format {state.get('format_version')!r}"
            )
        cfg = CCSTConfig.from_dict(state["model_config"])
        arch = {k: getattr(cfg, k) for k in _ARCH_FIELDS}
        tc = state["train_config"]
        model = cls(**arch, **tc, device=device, progress=False)
        model.net = CCSTNet(cfg)
        model.net.load_state_dict(state["state_dict"])
        model.net.to(device).eval()
        model.boundary = float(state["boundary"])
        model.history = list(state["history"])
        return model
