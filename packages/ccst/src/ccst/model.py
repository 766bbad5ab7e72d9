"""The CCST network (Sec. 3.1, Fig. 1): projection, global optimisation and compression parts.

    x: (B, d_in) --projection (Sec. 3.1.1)--> n tokens p_1(x) .. p_n(x), each (B, d_out)
      compression module (Linear-ABN, Sec. 3.1.3) --> initial compression token cp(x): (B, d_out)
    [cp(x), p_1(x), .., p_n(x)] --s stages of N_i transformer encoders (Sec. 3.1.2)-->
      at the end of stages 1 .. s-1: cp(x) += A(x)           (linear projection A, Sec. 3.1.2-3)
    f(x) = B(cp(x) of the last stage): (B, d_out)             (linear projection B, Sec. 3.1.3)

The n projections are realised, as in the authors' released configuration, by one linear map
d_in -> n * d_out (no bias: p_i(x) = W_i x) whose output is split into n tokens; each W_i is
initialised with its own sparse random projection (Eq. 2, `ccst.srp.srp_matrix`) and then
trained.

Choices where the paper is silent (each a `CCSTConfig` field):
- activation of Linear-ABN: ReLU (Sec. 3.1.2 motivates the linear -> activation -> BN order with
  the non-negative responses of ReLU, Chen et al. 2019);
- encoders are ViT blocks with a residual around attention and around the MLP; the MLP is
  Linear-ABN(d, 2d) -> Linear(2d, d) (expansion ratio 2, Sec. 3.1.2);
- normalisation, `norm` (Sec. 3.1.2 lists four changes to ViT and none about normalisation, and
  Fig. 2 is not in the text we have, so the paper is silent; the default follows the authors'
  released code, hkzhang-git/CCST, model/CCST.py and model/modules.py):
  * "released" (default): batch norm where the released code has it, no LayerNorm.
    (1) after the projection: the released `MRP_tokens` is Linear(d_in, n * d_out) followed by
        BatchNorm1d(n * d_out), applied to the (B, n * d_out) output before it is split into
        tokens, i.e. every coordinate of every token is normalised over the batch;
    (2) in attention: the released q/k/v map is one Linear_BN (Linear without bias, then
        BatchNorm1d over the channels, statistics over batch and tokens: it flattens (B, T, C)
        to (B * T, C)); we keep three maps, each Linear (no bias) -> that batch norm, the same
        per-channel normalisation;
    (3) the attention output map is also Linear_BN there, its BN weight initialised to 0 (each
        attention branch starts as zero: the encoder starts as the identity plus its MLP);
    (4) the released MLP ends in Linear_ABN (Linear -> activation -> BN), so its output is
        batch-normalised; ours ends Linear -> BatchNorm1d (over batch and tokens).
    All are affine BatchNorm1d with torch's defaults (eps 1e-5, momentum 0.1, running
    statistics): batch statistics in train mode, running statistics in eval mode; the released
    code trains in train mode and compresses after `model.eval()`, as `ccst.train` and
    `ccst.api.CCST.transform` do. Not taken over (not normalisation): the released
    activations (Hardswish, and a Hardtanh before the attention output map), its learned
    attention bias `pos_bias` (Sec. 3.1.2 says no position embedding), its MLP order
    Linear_BN -> Linear_ABN (we keep the text's Linear-ABN first), the projection's bias (a
    bias before a batch norm cancels), and its input standardisation (data/datasets.py subtracts
    a data-set mean and divides by a standard deviation: `ccst.api`'s input_scaling is ours);
  * "layernorm": ViT's pre-norm LayerNorm before attention and before the MLP, no other batch
    norm: our network before the switch. Model files of format <= 2, and of format 3 with
    pre_norm true, were trained so and load so (`ccst.api.CCST.load`);
  * "none": neither (format 3 files with pre_norm false); the batch norms of the Linear-ABN
    units (compression module, MLP) remain in all three;
- attention: `heads` heads of value dimension d_out / heads and query/key dimension
  qk_ratio * d_out / heads (Eq. 3 and Fig. 2: the Q/K width e*d is below the V width hn*d);
- default stages and depths: 2 stages of 2 encoders, 4 heads, qk_ratio 0.5.

Ablation switches (defaults: the paper's network), used to check the degenerate case "no
transformer stages and the projections frozen at their SRP initialisation == SRP" (Table 5's
SRP row): `depths=()` (no stage), `freeze_projection=True` (the projection weight is not trained)
and `readout="token_mean"` (f(x) = the mean of the n projection tokens after the last stage,
instead of B(cp(x)), Sec. 3.1.3). With n_tokens = 1, seed 0 and norm="none" the network is then
x @ W, W the SRP draw of `ccst.srp.srp_matrix(d_in, d_out, seed=0)`. norm="none" is needed: the
released batch norm after the projection rescales each output coordinate on its own (by its
running standard deviation), which is no longer a multiple of the SRP.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ccst.srp import srp_matrix

__all__ = ["CCSTConfig", "CCSTNet", "NORMS", "READOUTS", "default_tokens", "LinearABN"]

# Released GIST1M configuration (issue #4): factor 2 -> 8 tokens (expand 4), factor 4 -> 12
# tokens (expand 3); n_tokens = expand * factor, so that n_tokens * d_out = expand * d_in.
_DEFAULT_EXPAND = {2: 4, 4: 3}
READOUTS = ("compression", "token_mean")  # Sec. 3.1.3 first; the other an ablation
# the released code's batch norms first (the paper is silent); see the module docstring
NORMS = ("released", "layernorm", "none")


def default_tokens(compression_factor: int) -> int:
    """Number of projection tokens n for a compression factor (released GIST1M configuration:
    8 tokens for factor 2, 12 for factor 4; expand 3 for other factors, our choice)."""
    return _DEFAULT_EXPAND.get(compression_factor, 3) * compression_factor


@dataclass(frozen=True)
class CCSTConfig:
    """Architecture of CCST. Only plain python types, so it round-trips through save/load.

    Attributes:
        d_in: input dimension.
        compression_factor: d_in / d_out; must divide d_in (Sec. 4.2: factors 2, 4).
        d_out: output dimension; default d_in // compression_factor.
        n_tokens: number of projections n (Sec. 3.1.1); default `default_tokens(factor)`.
        depths: N_i, encoders per stage (Sec. 3.1.2); len(depths) = s stages.
        heads: attention heads per encoder; must divide d_out.
        qk_ratio: query/key width relative to the value width (Eq. 3, lightweight design 2).
        mlp_ratio: MLP expansion ratio (Sec. 3.1.2, lightweight design 1: 2 instead of 4).
        seed: seed of the SRP draws and of every other initial weight.
        norm: "released" (default: the released code's batch norms after the projection and
            in attention and MLP), "layernorm" (ViT's pre-norm LayerNorm in each encoder) or
            "none"; the paper is silent (see the module docstring).
        readout: "compression" (Sec. 3.1.3: f(x) = B(cp(x)), default) or "token_mean" (the
            mean of the projection tokens after the last stage; ablation).
        freeze_projection: keep the projection weights at their SRP initialisation (ablation).
    """

    d_in: int
    compression_factor: int = 2
    d_out: int | None = None
    n_tokens: int | None = None
    depths: tuple[int, ...] = (2, 2)
    heads: int = 4
    qk_ratio: float = 0.5
    mlp_ratio: int = 2
    seed: int = 0
    norm: str = "released"
    readout: str = "compression"
    freeze_projection: bool = False

    def __post_init__(self):
        if self.d_in < 1:
            raise ValueError(f"d_in must be positive, got {self.d_in}")
        cf = self.compression_factor
        if cf < 1 or self.d_in % cf != 0:
            raise ValueError(
                f"compression factor {cf} does not divide the input dimension {self.d_in}"
            )
        object.__setattr__(self, "depths", tuple(int(n) for n in self.depths))
        if self.d_out is None:
            object.__setattr__(self, "d_out", self.d_in // cf)
        if self.n_tokens is None:
            object.__setattr__(self, "n_tokens", default_tokens(cf))
        if self.d_out < 1 or self.n_tokens < 1:
            raise ValueError(f"d_out and n_tokens must be positive ({self.d_out}, {self.n_tokens})")
        if self.depths and min(self.depths) < 1:
            raise ValueError(
                f"depths must be positive ints (or empty: no stage), got {self.depths}"
            )
        if self.readout not in READOUTS:
            raise ValueError(f"unknown readout {self.readout!r}; expected one of {READOUTS}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; expected one of {NORMS}")
        object.__setattr__(self, "freeze_projection", bool(self.freeze_projection))
        if self.heads < 1 or self.d_out % self.heads != 0:
            raise ValueError(f"heads={self.heads} must divide d_out={self.d_out}")
        if self.qk_dim < 1:
            raise ValueError(f"qk_ratio={self.qk_ratio} leaves no query/key dimension")

    @property
    def head_dim(self) -> int:
        """Value dimension of one head."""
        return self.d_out // self.heads

    @property
    def qk_dim(self) -> int:
        """Query/key dimension of one head (Eq. 3: reduced below the value dimension)."""
        return int(round(self.head_dim * self.qk_ratio))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["depths"] = list(self.depths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CCSTConfig:
        """Inverse of `to_dict`. A dict of file format 3 has `pre_norm` instead of `norm`:
        True was the LayerNorms ("layernorm"), False no normalisation ("none")."""
        d = {**d, "depths": tuple(d["depths"])}
        if "pre_norm" in d:
            pre_norm = bool(d.pop("pre_norm"))
            d.setdefault("norm", "layernorm" if pre_norm else "none")
        return cls(**d)


class FeatureBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over the last dimension of (B, d) or (B, T, d): each feature is normalised
    over all of B (and T), as the released Linear_BN / Linear_ABN units do ((B, T, C) flattened
    to (B * T, C)). Same parameters and buffers as BatchNorm1d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class LinearBN(nn.Module):
    """Linear (no bias: the batch norm's shift replaces it) -> FeatureBatchNorm: the released
    code's Linear_BN (model/modules.py), with its BN weight initialised to `bn_weight`."""

    def __init__(self, d_in: int, d_out: int, bn_weight: float = 1.0):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out, bias=False)
        self.bn = FeatureBatchNorm(d_out)
        nn.init.constant_(self.bn.weight, bn_weight)

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.linear(x))


class LinearABN(nn.Module):
    """Linear -> ReLU -> BatchNorm, in that order (Sec. 3.1.2, lightweight design 1).

    Accepts (B, d) or (B, T, d); the batch norm normalises each feature over all of B (and T).
    """

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.act = nn.ReLU()
        self.bn = nn.BatchNorm1d(d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.linear(x))
        shape = y.shape
        return self.bn(y.reshape(-1, shape[-1])).reshape(shape)


class Attention(nn.Module):
    """Multi-head self-attention with query/key narrower than value (Eq. 3). With
    cfg.norm == "released" the q / k / v and output maps are Linear-BN as in the released code
    (the output BN weight starts at 0), else plain Linear maps."""

    def __init__(self, cfg: CCSTConfig):
        super().__init__()
        d, h = cfg.d_out, cfg.heads
        self.heads, self.qk_dim, self.head_dim = h, cfg.qk_dim, cfg.head_dim
        if cfg.norm == "released":
            self.q = LinearBN(d, h * self.qk_dim)
            self.k = LinearBN(d, h * self.qk_dim)
            self.v = LinearBN(d, h * self.head_dim)
            self.proj = nn.Linear(h * self.head_dim, d, bias=False)
            self.proj_bn = FeatureBatchNorm(d)
            nn.init.zeros_(self.proj_bn.weight)  # released: Linear_BN(..., bn_weight_init=0)
        else:  # (the module names of format <= 3 files)
            self.q = nn.Linear(d, h * self.qk_dim)
            self.k = nn.Linear(d, h * self.qk_dim)
            self.v = nn.Linear(d, h * self.head_dim)
            self.proj = nn.Linear(h * self.head_dim, d)
            self.proj_bn = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).reshape(b, t, self.heads, self.qk_dim).transpose(1, 2)
        k = self.k(x).reshape(b, t, self.heads, self.qk_dim).transpose(1, 2)
        v = self.v(x).reshape(b, t, self.heads, self.head_dim).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.qk_dim)
        y = att.softmax(dim=-1) @ v  # (b, heads, t, head_dim)
        return self.proj_bn(self.proj(y.transpose(1, 2).reshape(b, t, self.heads * self.head_dim)))


class Encoder(nn.Module):
    """Transformer encoder (ViT, Dosovitskiy et al. 2020) with the two lightweight designs of
    Sec. 3.1.2: Linear-ABN MLP of expansion ratio 2 and narrow query/key. Residual attention,
    then residual MLP; cfg.norm "layernorm": a LayerNorm before each (ViT's pre-norm);
    "released": no LayerNorm, batch norms inside attention and at the end of the MLP (the
    released code); "none": neither."""

    def __init__(self, cfg: CCSTConfig):
        super().__init__()
        d, hidden = cfg.d_out, cfg.mlp_ratio * cfg.d_out
        pre_norm = cfg.norm == "layernorm"
        self.norm1 = nn.LayerNorm(d) if pre_norm else nn.Identity()
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(d) if pre_norm else nn.Identity()
        if cfg.norm == "released":  # the released MLP ends in Linear_ABN: its output is BN'd
            self.mlp = nn.Sequential(
                LinearABN(d, hidden), nn.Linear(hidden, d, bias=False), FeatureBatchNorm(d)
            )
        else:
            self.mlp = nn.Sequential(LinearABN(d, hidden), nn.Linear(hidden, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CCSTNet(nn.Module):
    """CCST (Fig. 1). forward: float32 (B, d_in) -> float32 (B, d_out)."""

    def __init__(self, cfg: CCSTConfig):
        super().__init__()
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            # Sec. 3.1.1: n projections as one map to n * d_out, no bias (p_i(x) = W_i x)
            self.projection = nn.Linear(cfg.d_in, cfg.n_tokens * cfg.d_out, bias=False)
            # released: BatchNorm1d(n * d_out) on the projection's output, before the split
            self.projection_bn = (
                nn.BatchNorm1d(cfg.n_tokens * cfg.d_out)
                if cfg.norm == "released"
                else nn.Identity()
            )
            self.compression = LinearABN(cfg.d_in, cfg.d_out)  # Sec. 3.1.3: initial cp(x)
            self.proj_a = nn.Linear(cfg.d_in, cfg.d_out)  # linear projection A
            self.stages = nn.ModuleList(
                nn.Sequential(*(Encoder(cfg) for _ in range(n))) for n in cfg.depths
            )
            self.proj_b = nn.Linear(cfg.d_out, cfg.d_out)  # linear projection B
        with torch.no_grad():
            self.projection.weight.copy_(torch.from_numpy(self.srp_init(cfg)))
        self.projection.weight.requires_grad_(not cfg.freeze_projection)

    @staticmethod
    def srp_init(cfg: CCSTConfig) -> np.ndarray:
        """The initial projection weight: float32 (n * d_out, d_in), rows [i*d_out, (i+1)*d_out)
        are W_i^T with W_i an SRP draw (Eq. 2, s = sqrt(d_in)) of seed (cfg.seed, i)."""
        ws = [
            srp_matrix(cfg.d_in, cfg.d_out, seed=cfg.seed * 1_000_003 + i)
            for i in range(cfg.n_tokens)
        ]
        return np.ascontiguousarray(np.concatenate(ws, axis=1).T)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The projection part: float32 (B, d_in) -> (B, n, d_out), token i = p_i(x) (batch
        normalised per coordinate with cfg.norm == "released")."""
        p = self.projection_bn(self.projection(x))
        return p.reshape(x.shape[0], self.cfg.n_tokens, self.cfg.d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.tokens(x)
        a = self.proj_a(x)
        # no position embedding (Sec. 3.1.2, structural modification 1)
        z = torch.cat([self.compression(x).unsqueeze(1), p], dim=1)  # (B, 1 + n, d_out)
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            z = stage(z)
            if i < last:  # Sec. 3.1.2: 'From stage 1 to s - 1, ... added to compression token'
                z = torch.cat([z[:, :1] + a.unsqueeze(1), z[:, 1:]], dim=1)
        if self.cfg.readout == "token_mean":  # ablation: the projection tokens, no B
            return z[:, 1:].mean(dim=1)
        return self.proj_b(z[:, 0])
