"""Public API: `CCST`, a feature compressor with fit / transform / save / load.

    model = CCST(compression_factor=4, epochs=50).fit(xt)      # xt: float32 (nt, d_in)
    model = CCST(4, config=TrainConfig(epochs=50))             # the same (ccst.train)
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
Measured on fmnist-1K, factor 4, 30 epochs, seed 0, exhaustive search, 200 queries, with the
encoders' LayerNorm (norm="layernorm") and the squared INRP loss (the defaults then):
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
from annrepro.atomic import atomic_save
from annrepro.config import configured
from annrepro.validate import float32_problem, real_dtype_problem

from ccst.errors import DataError, ModelFileError, first_line
from ccst.losses import estimate_boundary
from ccst.model import NORMS, CCSTConfig, CCSTNet
from ccst.train import TrainConfig, as_tensor_ready, check_device, split_train_val, train

__all__ = ["CCST"]

log = logging.getLogger(__name__)

# 2: input/output scales (format 1 files load with scales 1); 3: CCSTConfig.pre_norm, readout,
# freeze_projection (format <= 2 files were trained with the encoders' LayerNorms: pre_norm True);
# 4: CCSTConfig.norm replaces pre_norm (format 3: pre_norm True = "layernorm", False = "none";
# format <= 2: "layernorm"), the default now the released code's batch norms ("released")
FORMAT_VERSION = 4
KIND = "ccst.CCST"  # the file's `kind` (annrepro.atomic.atomic_save); files before it have none
INPUT_SCALINGS = ("output", "boundary", "none")
_ARCH_FIELDS = ("compression_factor", "d_out", "n_tokens", "depths", "heads", "qk_ratio")
_ARCH_FIELDS += ("mlp_ratio", "norm", "readout", "freeze_projection")
# the arguments of `CCST(...)`: architecture (positional), then config, then the keyword-only
# other settings, then any TrainConfig field as an override
_ARCHITECTURE = _ARCH_FIELDS[:8] + ("pre_norm",) + _ARCH_FIELDS[8:]
_OTHER_SETTINGS = ("input_scaling", "scale_sample", "device", "progress")
_TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))

# what `save` writes and `load` needs (a torch file without them is not a CCST model)
_MODEL_KEYS = (
    "format_version",
    "model_config",
    "train_config",
    "boundary",
    "state_dict",
    "history",
)


def _configured(config: TrainConfig | None, overrides: dict) -> TrainConfig:
    """config (default `TrainConfig()`) with `overrides` replacing its fields (annrepro.config)."""
    return configured("CCST", TrainConfig, config, overrides, architecture=_ARCHITECTURE,
                      other=_OTHER_SETTINGS)  # fmt: skip


def check_vectors(x, what: str) -> None:
    """DataError unless x is a 2-D (n, d) real integer / float array with n, d >= 1."""
    problem = real_dtype_problem(getattr(x, "dtype", np.asarray(x).dtype))
    if problem is None and (x.ndim != 2 or 0 in x.shape):
        problem = f"expected a non-empty 2-D array (n, d), got shape {x.shape}"
    if problem:
        raise DataError(what, problem)


def check_finite_float32(x: np.ndarray, what: str, chunk: int = 65536) -> None:
    """DataError naming the first row of x (n, d) that is NaN / inf after the cast to float32
    (annrepro.validate.float32_problem), read in chunks so that a memory map stays unread."""
    for i0 in range(0, x.shape[0], chunk):
        problem = float32_problem(np.asarray(x[i0 : i0 + chunk]), offset=i0)
        if problem:
            raise DataError(what, problem)


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

    `CCST(<architecture>, config=None, *, <other settings>, **overrides)`, the convention of the
    three estimators:

    Architecture (positional or keyword):
        compression_factor, d_out, n_tokens, depths, heads, qk_ratio, mlp_ratio, norm:
            the network, see `ccst.model.CCSTConfig` (defaults: the released GIST1M
            configuration for the tokens, our choice for stages and heads, the released code's
            batch norms: norm="released"; "layernorm" and "none" the options).
        pre_norm: old name of the switch, an alias: True is norm="layernorm", False is
            norm="none" (what pre_norm=False trained); ValueError if it contradicts `norm`.
        readout, freeze_projection: ablation switches of `ccst.model.CCSTConfig` (defaults: the
            paper's network); with depths=(), n_tokens=1 and norm="none" they make CCST a
            single SRP.
    Config:
        config: a `ccst.train.TrainConfig`, the optimisation (epochs, batch_size, lr,
            weight_decay, poly_power, val_fraction, loss, alpha, beta, seed, checkpoint_every;
            defaults: Sec. 4.1); None: `TrainConfig()`. Kept as `self.train_config` (the
            attribute `config` is the trained network's `CCSTConfig`). Its seed also seeds the
            initial weights (SRP draws included) and the INRP boundary's sample.
    Other settings (keyword only; outside the config):
        input_scaling: "output" (default, our choice), "boundary" or "none" (as printed); see
            the module docstring (saved with the model).
        scale_sample: training rows used to fit the output scale.
        device: torch device for fit and transform ("cpu", "cuda"; SettingError in one line
            when torch has no such device, `ccst.train.check_device`).
        progress: tqdm bar over epochs.
    **overrides:
        any `TrainConfig` field (epochs=20, lr=1e-3, seed=1, ...), applied on top of config: an
        override wins over the config's value. An unknown name is a SettingError in one line
        listing the valid ones.
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
        norm: str | None = None,
        pre_norm: bool | None = None,
        readout: str = "compression",
        freeze_projection: bool = False,
        config: TrainConfig | None = None,
        *,
        input_scaling: str = "output",
        scale_sample: int = 1024,
        device: str = "cpu",
        progress: bool = True,
        **overrides,
    ):
        self.train_config = _configured(config, overrides)
        if input_scaling not in INPUT_SCALINGS:
            raise ValueError(
                f"unknown input_scaling {input_scaling!r}; expected one of {INPUT_SCALINGS}"
            )
        if scale_sample < 2:
            raise ValueError(f"scale_sample must be >= 2, got {scale_sample}")
        if pre_norm is not None:  # the old switch: an alias
            alias = "layernorm" if pre_norm else "none"
            if norm is not None and norm != alias:
                raise ValueError(f"pre_norm={pre_norm} means norm={alias!r}, but norm={norm!r}")
            norm = alias
        norm = "released" if norm is None else norm
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
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
            "norm": norm,
            "readout": readout,
            "freeze_projection": bool(freeze_projection),
        }
        self.seed = self.train_config.seed
        self.device = check_device(device)
        self.progress = progress
        self.net: ScaledNet | None = None
        self.boundary: float | None = None
        self.history: list[dict] = []

    @classmethod
    def argument_names(cls) -> set[str]:
        """Every keyword `CCST(...)` takes, config aside: the architecture, the other settings and
        the `TrainConfig` fields (what `ccst.methods` accepts as a spec's settings)."""
        return set(_ARCHITECTURE) | set(_OTHER_SETTINGS) | set(_TRAIN_FIELDS)

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
            ValueError: compression factor not dividing d_in.
            DataError (a ValueError): xt not a 2-D real array, a row with NaN / inf (also after
                the cast to float32: a float64 1e39 becomes inf), too few vectors for the
                validation split, or duplicate training vectors (boundary 0).
            ModelFileError: a checkpoint in checkpoint_dir that cannot be read or written.
        """
        check_vectors(xt, "training vectors")
        # every problem of the data is found before any work: the split first, then the values
        split_train_val(xt.shape[0], self.train_config.val_fraction, self.train_config.seed)
        check_finite_float32(xt, "training vectors")
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

        Raises:
            DataError (a ValueError): x not (n, d_in), or a row that is not finite after the
                cast to float32 (named; checked batch by batch, before it reaches the network),
                or whose compressed vector is not finite.
        """
        self._check_fitted()
        check_vectors(x, "input vectors")
        if x.shape[1] != self.d_in:
            raise DataError(
                "input vectors",
                f"dimension {x.shape[1]}, but CCST was trained on dimension {self.d_in}",
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
                raw = np.asarray(x[i0 : i0 + rows])
                problem = float32_problem(raw, offset=i0)
                if problem:
                    raise DataError("input vectors", problem)
                y = net(torch.from_numpy(as_tensor_ready(raw)).to(self.device)).cpu().numpy()
                if not np.isfinite(y).all():
                    r = i0 + int(np.flatnonzero(~np.isfinite(y).all(axis=1))[0])
                    raise DataError(
                        "input vectors",
                        f"row {r}: its compressed vector is not finite (values far outside the "
                        "training data's range?)",
                    )
                out[i0 : i0 + rows] = y
        return out

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the model (config, weights, INRP boundary, training settings and history)."""
        self._check_fitted()
        state = {
            "model_config": self.net.cfg.to_dict(),
            "train_config": dataclasses.asdict(self.train_config),
            "boundary": self.boundary,
            "input_scaling": self.input_scaling,
            "scales": [float(self.net.in_scale), float(self.net.out_scale)],
            "history": self.history,
            "state_dict": {k: v.cpu() for k, v in self.net.net.state_dict().items()},
        }
        # a unique temporary and an atomic rename (annrepro.atomic): two runs writing the same
        # model (a shared cache) never remove each other's temporary
        try:
            atomic_save(path, state, FORMAT_VERSION, KIND)
        except (OSError, RuntimeError) as e:  # torch's 'enforce fail' does not name the file
            raise ModelFileError(path, f"cannot write: {first_line(e)}") from None

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> CCST:
        """Read a model written by `save`.

        Raises:
            ModelFileError (a ValueError): the file is missing, empty, truncated or corrupt, not
                a CCST model, of an unknown format, or its weights do not fit its configuration;
                one line naming the file.
        """
        device = check_device(device)  # a device problem is not the file's
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(path, "no such file" if not path.exists() else "not a file")
        if path.stat().st_size == 0:
            raise ModelFileError(path, "empty file (0 bytes)")
        try:  # on the CPU: a device problem must not read as a damaged file
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # zip / pickle / EOF / torch errors: all mean a damaged file
            raise ModelFileError(
                path,
                f"not a readable model file (truncated or corrupt? {type(e).__name__}: "
                f"{first_line(e)})",
            ) from None
        if isinstance(state, dict) and state.get("kind", KIND) != KIND:
            raise ModelFileError(path, f"a {state['kind']} file, not a CCST model")
        missing = [k for k in _MODEL_KEYS if not isinstance(state, dict) or k not in state]
        if missing:
            raise ModelFileError(path, f"not a CCST model file (no {', '.join(missing)})")
        if state.get("format_version") not in (1, 2, 3, FORMAT_VERSION):
            raise ModelFileError(
                path, f"unsupported CCST file format {state.get('format_version')!r}"
            )
        try:
            model = cls._from_state(state, device)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ModelFileError(
                path, f"inconsistent CCST model file ({type(e).__name__}: {first_line(e)})"
            ) from None
        model.net.to(device)  # outside the try: a device problem is not the file's
        return model

    @classmethod
    def _from_state(cls, state: dict, device: str) -> CCST:
        model_config = dict(state["model_config"])
        if state["format_version"] < 3:  # trained before the switch: with the LayerNorms
            model_config.setdefault("pre_norm", True)
        if state["format_version"] < 4:  # pre_norm -> norm ("layernorm" / "none"): from_dict
            model_config.setdefault("pre_norm", False)
        cfg = CCSTConfig.from_dict(model_config)
        arch = {k: getattr(cfg, k) for k in _ARCH_FIELDS}
        tc = state["train_config"]
        scaling = state.get("input_scaling", "none")  # format 1: no scales
        model = cls(**arch, **tc, input_scaling=scaling, device=device, progress=False)
        net = CCSTNet(cfg)
        net.load_state_dict(state["state_dict"])
        model.net = ScaledNet(net, *state.get("scales", (1.0, 1.0))).eval()
        model.boundary = float(state["boundary"])
        model.history = list(state["history"])
        return model
