"""Compressor baselines of Table 5 (Sec. 4.5): MLP, VAE and Catalyst, each to d_in / factor.

Sec. 4.5 names the methods and nothing else: no architecture, loss or training settings are
given for MLP and VAE, and Catalyst (Sablayrolles et al. 2019) is cited only. Our choices, each a
parameter (spec params ``mlp_*``, ``vae_*``, ``catalyst_*`` of paper_tables/ccst/table5.toml):

- `MLPCompressor`: a perceptron d_in -> hidden ... -> d_out whose hidden layers are the Linear-ABN
  block of CSST (Linear -> ReLU -> BatchNorm, Sec. 3.1.2; `ccst.model.LinearABN`) and whose last
  layer is linear. It is trained exactly as CSST is (`ccst.train.train`: the INRP loss of
  Eq. 4-5, AdamW, poly schedule, validation split, stop on a non-finite loss) and with the same
  scale normalisation as `ccst.CCST` (f(x) = s_out * net(x / s_in), `ccst.api.ScaledNet`, with
  CCST's default `input_scaling` unless told otherwise), so the comparison with CSST isolates
  the architecture. Default: one hidden layer of width d_in.
- `VAECompressor`: a Gaussian VAE (Kingma & Welling 2014; the paper cites Pu et al. 2016) whose
  encoder is the same Linear-ABN stack with two linear heads (mean and log-variance of q(z|x),
  z in R^{d_out}) and whose decoder mirrors it; the compressed vector is the encoder mean. Loss
  per vector: 0.5 ||x' - x'_hat||^2 (unit-variance Gaussian likelihood) + kl_weight * KL(q || N(0,
  I)), where x' is x centred and divided by one global scale (the root mean per-dimension
  variance of the training vectors) so that the likelihood's unit variance fits every data set;
  one scalar keeps the geometry of x. Trained by the same loop (AdamW, poly schedule, validation
  split, NaN stop) with this loss.
- `catalyst_compress`: the catalyzer of the `catalyzer` package (an optional dependency,
  ``annrepro-ccst[catalyst]``) trained on the same vectors to the same d_out; its continuous
  output (unit norm) is the compressed vector.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ccst.losses import ALPHA, BETA, estimate_boundary
from ccst.model import LinearABN
from ccst.train import TrainConfig, as_tensor_ready, check_device, split_train_val, train

__all__ = [
    "CompressorConfig",
    "MLPCompressor",
    "MLPNet",
    "VAECompressor",
    "VAENet",
    "catalyst_compress",
    "vae_kl",
    "vae_loss",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompressorConfig:
    """Architecture of an MLP or VAE baseline (plain python types: it goes into checkpoints).

    Attributes:
        d_in: input dimension.
        compression_factor: d_in / d_out; must divide d_in (Table 5: 4).
        hidden_ratios: widths of the hidden Linear-ABN layers as multiples of d_in (paper
            silent; default one hidden layer of width d_in). The VAE decoder uses them reversed.
        seed: seed of the initial weights (and of the VAE's sampling noise).
    """

    d_in: int
    compression_factor: int = 4
    hidden_ratios: tuple[float, ...] = (1.0,)
    seed: int = 0

    def __post_init__(self):
        cf = self.compression_factor
        if self.d_in < 1:
            raise ValueError(f"d_in must be positive, got {self.d_in}")
        if cf < 1 or self.d_in % cf != 0:
            raise ValueError(
                f"compression factor {cf} does not divide the input dimension {self.d_in}"
            )
        object.__setattr__(self, "hidden_ratios", tuple(float(r) for r in self.hidden_ratios))
        if any(w < 1 for w in self.hidden):
            raise ValueError(f"hidden_ratios {self.hidden_ratios} give an empty hidden layer")

    @property
    def d_out(self) -> int:
        return self.d_in // self.compression_factor

    @property
    def hidden(self) -> tuple[int, ...]:
        """Hidden widths: round(ratio * d_in)."""
        return tuple(int(round(r * self.d_in)) for r in self.hidden_ratios)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden_ratios"] = list(self.hidden_ratios)
        return d


def _abn_stack(widths: list[int]) -> nn.Sequential:
    """Linear-ABN layers widths[0] -> widths[1] -> ... (Sec. 3.1.2 block); empty if one width."""
    return nn.Sequential(*(LinearABN(a, b) for a, b in zip(widths[:-1], widths[1:])))


class MLPNet(nn.Module):
    """MLP compressor: float32 (B, d_in) -> (B, d_out); Linear-ABN hidden layers, linear output."""

    def __init__(self, cfg: CompressorConfig):
        super().__init__()
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            widths = [cfg.d_in, *cfg.hidden]
            self.body = _abn_stack(widths)
            self.out = nn.Linear(widths[-1], cfg.d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


class VAENet(nn.Module):
    """Gaussian VAE; forward: float32 (B, d_in) -> the encoder mean mu(x), (B, d_out).

    Inputs are standardised inside the network by the buffers `center` (d_in,) and `scale`
    (a scalar), set by `set_standardisation` before training.
    """

    def __init__(self, cfg: CompressorConfig):
        super().__init__()
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            widths = [cfg.d_in, *cfg.hidden]
            self.encoder = _abn_stack(widths)
            self.mu = nn.Linear(widths[-1], cfg.d_out)
            self.logvar = nn.Linear(widths[-1], cfg.d_out)
            back = [cfg.d_out, *reversed(cfg.hidden)]
            self.decoder = nn.Sequential(_abn_stack(back), nn.Linear(back[-1], cfg.d_in))
        self.register_buffer("center", torch.zeros(cfg.d_in))
        self.register_buffer("scale", torch.ones(()))
        # sampling noise of the reparameterisation, from the model's own seed (deterministic)
        self.noise = torch.Generator().manual_seed(cfg.seed + 1)

    def set_standardisation(self, xt: np.ndarray, sample: int = 65536) -> None:
        """center = mean of xt, scale = 1 / sqrt(mean per-dimension variance) (a sample of
        `sample` rows of xt: float32 (nt, d_in))."""
        if xt.shape[0] > sample:
            rows = np.sort(np.random.default_rng(self.cfg.seed).choice(xt.shape[0], sample, False))
            xt = xt[rows]
        x = np.asarray(xt, dtype=np.float64)
        mean = x.mean(0)
        var = float(((x - mean) ** 2).mean())
        if not var > 0.0:
            raise ValueError("the VAE's training vectors are all identical (zero variance)")
        self.center.copy_(torch.from_numpy(mean).float())
        self.scale.fill_(1.0 / math.sqrt(var))

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.center) * self.scale

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z | x), each (B, d_out)."""
        h = self.encoder(self.standardise(x))
        return self.mu(h), self.logvar(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[0]


def vae_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per row: 0.5 sum(mu^2 + exp(lv) - 1 - lv), (B,)."""
    return 0.5 * (mu * mu + logvar.exp() - 1.0 - logvar).sum(1)


def vae_loss(net: VAENet, x: torch.Tensor, kl_weight: float = 1.0) -> torch.Tensor:
    """Negative ELBO per vector, averaged over the batch (Kingma & Welling 2014):
    0.5 ||x' - dec(z)||^2 + kl_weight * KL, x' = standardised x, z = mu + sigma * eps.

    In training mode z is sampled (eps ~ N(0, I) from `net.noise`); in eval mode z = mu, so the
    validation loss is deterministic.
    """
    mu, logvar = net.encode(x)
    if net.training:
        eps = torch.randn(mu.shape, generator=net.noise).to(mu.device)
        z = mu + (0.5 * logvar).exp() * eps
    else:
        z = mu
    err = net.decoder(z) - net.standardise(x)
    return (0.5 * (err * err).sum(1) + kl_weight * vae_kl(mu, logvar)).mean()


class _Compressor:
    """fit / transform shared by the baselines (training: `ccst.train.train`, Sec. 4.1)."""

    name = "compressor"

    def __init__(
        self,
        compression_factor: int = 4,
        hidden_ratios: tuple[float, ...] = (1.0,),
        epochs: int = 2400,
        batch_size: int = 1024,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        poly_power: float = 0.9,
        val_fraction: float = 0.05,
        seed: int = 0,
        device: str = "cpu",
        progress: bool = False,
        **loss_settings,
    ):
        self.compression_factor = int(compression_factor)
        self.hidden_ratios = tuple(hidden_ratios)
        self.train_config = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            poly_power=poly_power,
            val_fraction=val_fraction,
            seed=seed,
            **loss_settings,
        )
        self.seed, self.device, self.progress = seed, check_device(device), progress
        self.net: nn.Module | None = None
        self.history: list[dict] = []

    @property
    def d_in(self) -> int:
        self._check_fitted()
        return self.net.cfg.d_in

    @property
    def d_out(self) -> int:
        self._check_fitted()
        return self.net.cfg.d_out

    def _check_fitted(self) -> None:
        if self.net is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(xt) first")

    def _config(self, xt: np.ndarray) -> CompressorConfig:
        """The network's configuration for xt, after the checks of `ccst.CCST.fit` (DataError:
        not a 2-D real array, too few vectors for the split, NaN / inf after the float32 cast)."""
        from ccst.api import check_finite_float32, check_vectors

        check_vectors(xt, "training vectors")
        split_train_val(xt.shape[0], self.train_config.val_fraction, self.train_config.seed)
        check_finite_float32(xt, "training vectors")
        return CompressorConfig(
            d_in=int(xt.shape[1]),
            compression_factor=self.compression_factor,
            hidden_ratios=self.hidden_ratios,
            seed=self.seed,
        )

    def transform(self, x: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """Compress x: float32 (n, d_in) (may be memory-mapped) -> float32 (n, d_out), in
        batches of `batch_size` rows, the network in eval mode (deterministic)."""
        self._check_fitted()
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ValueError(
                f"{type(self).__name__} was trained on vectors of dimension {self.d_in}, got "
                f"shape {x.shape}"
            )
        out = np.empty((x.shape[0], self.d_out), dtype=np.float32)
        net = self.net.to(self.device).eval()
        with torch.inference_mode():
            for i0 in range(0, x.shape[0], batch_size):
                xb = torch.from_numpy(as_tensor_ready(x[i0 : i0 + batch_size])).to(self.device)
                out[i0 : i0 + batch_size] = net(xb).cpu().numpy()
        return out


class MLPCompressor(_Compressor):
    """MLP compressor trained with the INRP loss (Table 5 'MLP'; architecture: our choice).

    Args:
        compression_factor: d_in / d_out (Table 5: 4).
        hidden_ratios: hidden Linear-ABN widths as multiples of d_in (paper silent: (1.0,)).
        epochs, batch_size, lr, weight_decay, poly_power, val_fraction: `ccst.train.TrainConfig`
            (defaults: CSST's, Sec. 4.1; the paper gives none for the baselines).
        loss, alpha, beta: INRP variant and weight clamp (Sec. 3.2), as for CSST.
        input_scaling, scale_sample: as `ccst.CCST` (see ccst.api); input_scaling None (default):
            ccst.CCST's default, so that the MLP and CSST rows share the normalisation.
        seed, device, progress: as `ccst.CCST`.
    """

    name = "MLP"

    def __init__(
        self,
        *args,
        loss: str = "abs",
        alpha: float = ALPHA,
        beta: float = BETA,
        input_scaling: str | None = None,
        scale_sample: int = 1024,
        **kw,
    ):
        from ccst.api import CCST, INPUT_SCALINGS

        super().__init__(*args, loss=loss, alpha=alpha, beta=beta, **kw)
        if input_scaling is None:
            input_scaling = inspect.signature(CCST).parameters["input_scaling"].default
        if input_scaling not in INPUT_SCALINGS:
            raise ValueError(
                f"unknown input_scaling {input_scaling!r}; expected one of {INPUT_SCALINGS}"
            )
        if scale_sample < 2:
            raise ValueError(f"scale_sample must be >= 2, got {scale_sample}")
        self.input_scaling, self.scale_sample = input_scaling, int(scale_sample)
        self.boundary: float | None = None

    def fit(self, xt: np.ndarray) -> MLPCompressor:
        """Estimate the INRP boundary (Eq. 5) on xt: float32 (nt, d_in), fit the scales as
        `ccst.CCST.fit` does (`ccst.api.scaled_net`), then train."""
        from ccst.api import scaled_net

        cfg = self._config(xt)
        self.boundary = estimate_boundary(xt, seed=self.seed)
        self.net = scaled_net(
            MLPNet(cfg), xt, self.boundary, self.input_scaling, self.scale_sample, self.seed
        )
        self.history = train(
            self.net,
            xt,
            self.boundary,
            self.train_config,
            device=self.device,
            progress=self.progress,
        )
        return self


class VAECompressor(_Compressor):
    """Gaussian VAE compressor; the compressed vector is the encoder mean (Table 5 'VAE').

    Args:
        kl_weight: weight of the KL term (1.0: the standard ELBO; paper silent).
        other arguments: as `MLPCompressor` (no INRP settings: the VAE has its own loss).
    """

    name = "VAE"

    def __init__(self, *args, kl_weight: float = 1.0, **kw):
        super().__init__(*args, **kw)
        if not kl_weight >= 0.0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
        self.kl_weight = float(kl_weight)

    def fit(self, xt: np.ndarray) -> VAECompressor:
        """Standardise on xt: float32 (nt, d_in), then train with the negative ELBO."""
        cfg = self._config(xt)
        net = VAENet(cfg)
        net.set_standardisation(xt)
        self.net = net
        self.history = train(
            net,
            xt,
            float("nan"),  # the INRP boundary: unused by the VAE loss
            self.train_config,
            device=self.device,
            progress=self.progress,
            loss_fn=lambda n, xb: vae_loss(n, xb, self.kl_weight),
        )
        return self


def catalyst_compress(
    xb: np.ndarray, xq: np.ndarray, d_out: int, seed: int, p: dict
) -> tuple[np.ndarray, np.ndarray]:
    """Table 5 'Catalyst': train the catalyzer (Sablayrolles et al. 2019, package `catalyzer`)
    on xb to d_out dimensions and return the catalyzed xb and xq (unit-norm, continuous).

    Args:
        xb: float32 (nb, d) database, also the training set (as CSST's, Sec. 4.1); the catalyzer
            holds out its last p["n_val"] rows to pick the best epoch.
        xq: float32 (nq, d) queries.
        d_out: output dimension (d / compression factor).
        seed: seed of the catalyzer's training.
        p: `catalyzer.Catalyzer` arguments: hidden, lam, preset and any `catalyzer.TrainConfig`
            field (epochs, batch_size, n_val, n_val_queries, val_quantizer, ...).

    Returns:
        (xb_c float32 (nb, d_out), xq_c float32 (nq, d_out)).

    Raises:
        ModuleNotFoundError (name "catalyzer"): the optional dependency is not installed.
    """
    from catalyzer import Catalyzer  # optional dependency: annrepro-ccst[catalyst]

    p = dict(p)
    cat = Catalyzer(d_out=int(d_out), preset=p.pop("preset", "paper"), seed=seed, **p)
    cat.fit(xb)
    log.info("catalyzer %s: best epoch %s", cat, cat.result.best_epoch + 1)
    return cat.transform(xb), cat.transform(xq)
