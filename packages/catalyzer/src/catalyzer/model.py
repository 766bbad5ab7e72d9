"""The catalyzer network and the straight-through lattice layer (Sablayrolles et al., Sec. 4, 5.2).

`CatalyzerNet` is the 3-layer perceptron of Sec. 5.2: d_in -> hidden -> hidden -> d_out, each
hidden layer Linear + BatchNorm + ReLU, a final Linear, then L2 normalisation onto the unit sphere
S^{d_out - 1} (the lattice quantizer's domain, Sec. 4.2). `StraightThroughLattice` puts the
spherical lattice quantizer inside the network for end-to-end training (Sec. 4 (d), "End-to-end
training"): the forward pass returns the quantized vector q(y) / r, the backward pass lets the
gradient through unchanged (the straight-through estimator, van den Oord et al. 2017).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .lattice import ZnSphereLattice

__all__ = ["CatalyzerNet", "StraightThroughLattice", "straight_through"]


class CatalyzerNet(nn.Module):
    """f: R^{d_in} -> S^{d_out - 1} (Sec. 5.2).

    Args:
        d_in: input dimension.
        d_out: output dimension (24 for 64-bit lattice codes, Table 1; = bits for sign codes).
        hidden: hidden dimension (1024 in the paper, Sec. 5.2; smaller at the tiny/small scales).
        arch: "mlp" (Sec. 5.2) or "identity" (only the L2 normalisation, d_out == d_in: the
            degenerate case in which the catalyzer is the plain lattice baseline).
    Input float32 (n, d_in); output float32 (n, d_out) with unit L2 norm.
    """

    def __init__(self, d_in: int, d_out: int, hidden: int = 1024, arch: str = "mlp"):
        super().__init__()
        if min(d_in, d_out, hidden) < 1:
            raise ValueError(f"dimensions must be positive: {d_in=}, {d_out=}, {hidden=}")
        self.d_in, self.d_out, self.hidden = int(d_in), int(d_out), int(hidden)
        self.arch = arch
        if arch == "identity":  # degenerate check only: f(x) = x / ||x||, no parameters
            if d_in != d_out:
                raise ValueError(f"the identity catalyzer needs d_out == d_in: {d_out} != {d_in}")
            self.layers = nn.Identity()
            return
        if arch != "mlp":
            raise ValueError(f"unknown catalyzer arch {arch!r} ('mlp' or 'identity')")
        self.layers = nn.Sequential(
            nn.Linear(d_in, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, d_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ValueError(f"the catalyzer expects (n, {self.d_in}) inputs, got {tuple(x.shape)}")
        return F.normalize(self.layers(x), p=2, dim=1)


def straight_through(y: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Value q, gradient of y: q + y - y.detach() (the straight-through estimator)."""
    return q + y - y.detach()


class StraightThroughLattice(nn.Module):
    """Spherical lattice quantization as a layer (Sec. 4, end-to-end training).

    Forward: y float32 (n, d) -> q(y) / r, the nearest point of S_d^r (Eq. 5) rescaled to the
    unit sphere. Backward: identity (straight-through). Quantization runs in faiss on CPU.
    """

    def __init__(self, lattice: ZnSphereLattice):
        super().__init__()
        self.lattice = lattice

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        z = self.lattice.quantize(y.detach().cpu().numpy())
        q = torch.from_numpy(z).to(y.device) * (1.0 / self.lattice.r)
        return straight_through(y, q)
