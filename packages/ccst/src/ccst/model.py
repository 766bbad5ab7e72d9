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
  Linear-ABN(d, 2d) -> Linear(2d, d) (expansion ratio 2, Sec. 3.1.2). `pre_norm` (default
  False) puts a LayerNorm before each, as ViT does: Sec. 3.1.2 lists four changes to ViT and
  none about normalisation, and Fig. 2 is not in the text we have, so the paper is silent; the
  authors' released code has no LayerNorm in its encoders (residual attention and residual MLP
  blocks, batch norms inside the Linear-BN / Linear-ABN units), hence the default. Models saved
  before the switch existed (file format <= 2) were trained with the LayerNorms and load so
  (`ccst.api.CCST.load`);
- attention: `heads` heads of value dimension d_out / heads and query/key dimension
  qk_ratio * d_out / heads (Eq. 3 and Fig. 2: the Q/K width e*d is below the V width hn*d);
- default stages and depths: 2 stages of 2 encoders, 4 heads, qk_ratio 0.5.

Ablation switches (defaults: the paper's network), used to check the degenerate case "no
transformer stages and the projections frozen at their SRP initialisation == SRP" (Table 5's
SRP row): `depths=()` (no stage), `freeze_projection=True` (the projection weight is not trained)
and `readout="token_mean"` (f(x) = the mean of the n projection tokens after the last stage,
instead of B(cp(x)), Sec. 3.1.3). With n_tokens = 1 and seed 0 the network is then x @ W, W the
SRP draw of `ccst.srp.srp_matrix(d_in, d_out, seed=0)`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ccst.srp import srp_matrix

__all__ = ["CCSTConfig", "CCSTNet", "READOUTS", "default_tokens", "LinearABN"]

# Released GIST1M configuration (issue #4): factor 2 -> 8 tokens (expand 4), factor 4 -> 12
# tokens (expand 3); n_tokens = expand * factor, so that n_tokens * d_out = expand * d_in.
_DEFAULT_EXPAND = {2: 4, 4: 3}
READOUTS = ("compression", "token_mean")  # Sec. 3.1.3 first; the other an ablation


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
        pre_norm: LayerNorm before attention and MLP in each encoder (ViT); default False, as
            in the released code (the paper is silent; see the module docstring).
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
    pre_norm: bool = False
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
        object.__setattr__(self, "pre_norm", bool(self.pre_norm))
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
        return cls(**{**d, "depths": tuple(d["depths"])})


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
    """Multi-head self-attention with query/key narrower than value (Eq. 3)."""

    def __init__(self, cfg: CCSTConfig):
        super().__init__()
        d, h = cfg.d_out, cfg.heads
        self.heads, self.qk_dim, self.head_dim = h, cfg.qk_dim, cfg.head_dim
        self.q = nn.Linear(d, h * self.qk_dim)
        self.k = nn.Linear(d, h * self.qk_dim)
        self.v = nn.Linear(d, h * self.head_dim)
        self.proj = nn.Linear(h * self.head_dim, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).reshape(b, t, self.heads, self.qk_dim).transpose(1, 2)
        k = self.k(x).reshape(b, t, self.heads, self.qk_dim).transpose(1, 2)
        v = self.v(x).reshape(b, t, self.heads, self.head_dim).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.qk_dim)
        y = att.softmax(dim=-1) @ v  # (b, heads, t, head_dim)
        return self.proj(y.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


class Encoder(nn.Module):
    """Transformer encoder (ViT, Dosovitskiy et al. 2020) with the two lightweight designs of
    Sec. 3.1.2: Linear-ABN MLP of expansion ratio 2 and narrow query/key. Residual attention,
    then residual MLP; with cfg.pre_norm a LayerNorm before each (ViT's pre-norm), else none
    (the released code)."""

    def __init__(self, cfg: CCSTConfig):
        super().__init__()
        d = cfg.d_out
        self.norm1 = nn.LayerNorm(d) if cfg.pre_norm else nn.Identity()
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(d) if cfg.pre_norm else nn.Identity()
        self.mlp = nn.Sequential(LinearABN(d, cfg.mlp_ratio * d), nn.Linear(cfg.mlp_ratio * d, d))

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
        """The projection part: float32 (B, d_in) -> (B, n, d_out), token i = p_i(x)."""
        return self.projection(x).reshape(x.shape[0], self.cfg.n_tokens, self.cfg.d_out)

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
