"""PQ-VAE (Wu & Flierl 2019), re-implemented for KDindex's Table 2.

An MLP encoder (the paper: "The CNN blocks are replaced with MLP", App. B.2), a product-codebook
bottleneck with the straight-through estimator, an MLP decoder; reconstruction, codebook and
commitment losses (VQ-VAE), plus the distillation loss on the decoded reconstructions (Eq. 6 on
the latent codeword scores lets the encoder collapse). Both MLPs are residual with a
zero-initialised output layer, so training starts from the warm-start PQ (choice).

The decoder is not linear, so the index is served through an adapter (`DecodedQuantizer`): a
query probes the posting lists by its *latent* codeword scores (encoder output vs codewords),
and candidates are ranked by the asymmetric distance to their *decoded* reconstructions
`dec(Q(enc(d)))` in the input space.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..losses import reconstruction_loss
from ..posting import PostingListIndex
from ..quantizers import CodebookQuantizer
from ._common import _distill, _sq_dist

__all__ = ["PQVAE", "DecodedQuantizer"]


class _ResMLP(nn.Module):
    """`y = pad(x) + s * mlp(x / s)` with the last layer zero-initialised: starts as the identity
    (zero padding / truncation), so training starts from the warm-start PQ (choice)."""

    def __init__(self, d_in: int, d_out: int, hidden: int):
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, x):
        base = F.pad(x, (0, self.d_out - self.d_in)) if self.d_out >= self.d_in else x
        return base[:, : self.d_out] + self.net(x)


class PQVAE(nn.Module):
    """PQ-VAE, re-implemented (Wu & Flierl 2019; KDindex Sec. 4.1, App. B.2 with MLP blocks):
    z = enc(x) (d_lat = d padded to a multiple of B), split into B sub-vectors each replaced by
    its nearest codeword, `z_q = z + (q - z).detach()` (straight-through estimator), x^ = dec(z_q).
    Loss: reconstruction `||x - x^||^2` (Eq. 2 form) + codebook `||sg(z) - q||^2` + commitment
    `beta ||z - sg(q)||^2` + the KDindex distillation loss: Eq. 5 on the decoded neighbours (the
    default, `DEFAULT_LOSS`), Eq. 6 on the latent codeword scores of the query and its teacher
    neighbours if `lb_loss = "distribution"`. Works on inputs divided by `scale`."""

    warm_kind = "PQ"  # the latent product codebooks start as faiss PQ of the documents

    def __init__(self, warm: CodebookQuantizer, xs: np.ndarray, cfg, metric, scale):
        super().__init__()
        self.cfg, self.metric, self.scale = cfg, metric, float(scale)
        d, d_lat = warm.d_in, warm.d_out
        self.enc = _ResMLP(d, d_lat, cfg.pqvae_hidden)
        self.dec = _ResMLP(d_lat, d, cfg.pqvae_hidden)
        self.codebooks = nn.Parameter(torch.from_numpy(warm.codebooks.copy()))
        self.B, self.W = warm.B, warm.W
        with torch.no_grad():
            sc = self.latent_scores(self.enc(torch.from_numpy(xs)))
        self.register_buffer("tau_s", sc.std(dim=(0, 2)).clamp_min(1e-12) * cfg.temperature)

    @classmethod
    def from_warm(cls, warm, xs, cfg, metric, scale):
        return cls(warm, xs, cfg, metric, scale)

    def trainable(self):
        return list(self.parameters())

    def after_step(self):
        pass

    def latent_scores(self, z: torch.Tensor) -> torch.Tensor:
        """S(z_b, c^b_k) float (n, B, W): inner product or minus squared L2 per subspace."""
        C, dsub = self.codebooks, self.codebooks.shape[2]
        out = []
        for b in range(self.B):
            z_b = z[:, b * dsub : (b + 1) * dsub]
            out.append(z_b @ C[b].T if self.metric == "ip" else -_sq_dist(z_b, C[b]))
        return torch.stack(out, 1)

    def quantize(self, z: torch.Tensor):
        """z (n, d_lat) -> (codes int64 (n, B), q (n, d_lat) nearest codewords)."""
        C, dsub = self.codebooks, self.codebooks.shape[2]
        codes = torch.stack(
            [_sq_dist(z[:, b * dsub : (b + 1) * dsub], C[b]).argmin(1) for b in range(self.B)], 1
        )
        return codes, self.decode_latent(codes)

    def decode_latent(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.codebooks[b][codes[:, b]] for b in range(self.B)], 1)

    def forward(self, x: torch.Tensor):
        """x (n, d) -> (x^, z, q): reconstruction, encoder output, quantized latent."""
        z = self.enc(x)
        _, q = self.quantize(z)
        z_q = z + (q - z).detach()
        return self.dec(z_q), z, q

    def batch_loss(self, xq, xd):
        n, K, d = xd.shape
        cfg = self.cfg
        x = torch.cat([xq, xd.reshape(n * K, d)])
        xr, z, q = self(x)
        rec = reconstruction_loss(x, xr)
        vq = ((z.detach() - q) ** 2).mean() + cfg.commit_beta * ((z - q.detach()) ** 2).mean()
        if cfg.loss == "distribution":
            lg = self.latent_scores(z) / self.tau_s[None, :, None]
            distill = _distill(cfg, self.metric, lq=lg[:n], ld=lg[n:].reshape(n, K, self.B, -1))
        else:
            xdr = xr[n:].reshape(n, K, d)
            distill = _distill(cfg, self.metric, qt=xq, dt=xd, dr=xdr)
        return distill + cfg.rec_weight * (rec + vq)

    @torch.no_grad()
    def encode(self, x: np.ndarray, batch: int = 1 << 15) -> np.ndarray:
        """codes int32 (n, B) of x float32 (n, d) in input units."""
        out = np.empty((len(x), self.B), dtype=np.int32)
        for i0 in range(0, len(x), batch):
            xt = torch.from_numpy(np.ascontiguousarray(x[i0 : i0 + batch], np.float32))
            out[i0 : i0 + len(xt)] = self.quantize(self.enc(xt / self.scale))[0].numpy()
        return out

    def index(self, xb: np.ndarray) -> PostingListIndex:
        q = DecodedQuantizer(self)
        return PostingListIndex(q, self.metric, codes=self.encode(xb))


class DecodedQuantizer:
    """Adapter that lets `PostingListIndex` search a PQ-VAE (module docstring): `transform` is
    the identity (queries stay in the input space), `codeword_scores` are the latent scores of
    the encoded query (which posting lists to probe), `decode` is the decoder applied to the
    codewords of a code (the reconstruction the candidates are ranked by, asymmetric distance in
    the input space). Scaled back to input units."""

    kind = "PQVAE"

    def __init__(self, model: PQVAE):
        self.model = model
        self.B, self.W = model.B, model.W
        self.d_in = model.enc.d_in

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=np.float32)

    @torch.no_grad()
    def codeword_scores(self, xq_t: np.ndarray, metric: str) -> np.ndarray:
        z = self.model.enc(torch.from_numpy(self.transform(xq_t)) / self.model.scale)
        return self.model.latent_scores(z).numpy()

    @torch.no_grad()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        c = torch.from_numpy(np.asarray(codes, dtype=np.int64))
        xr = self.model.dec(self.model.decode_latent(c)) * self.model.scale
        return np.ascontiguousarray(xr.numpy(), dtype=np.float32)

    def encode(self, x: np.ndarray) -> np.ndarray:
        return self.model.encode(x)
