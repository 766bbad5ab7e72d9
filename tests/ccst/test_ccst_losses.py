"""INRP loss (Sec. 3.2, Eq. 4-5) on hand-computed pairs, and the boundary estimate."""

import math

import numpy as np
import pytest
import torch
from ccst.losses import estimate_boundary, inrp_loss, inrp_weights


def test_weights_clamp_between_beta_and_alpha():
    # Eq. 5 with boundary 2: -ln(0.1/2) = 3.0 -> alpha 2; -ln(1/2) = ln 2; -ln(2/2) = 0 -> beta;
    # -ln(3/2) < 0 -> beta; d = 0 -> alpha
    d = torch.tensor([0.1, 1.0, 2.0, 3.0, 0.0], dtype=torch.float64)
    w = inrp_weights(d, boundary=2.0)
    np.testing.assert_allclose(w.numpy(), [2.0, math.log(2.0), 0.01, 0.01, 2.0], rtol=1e-12)


# 1-D points: input distances 0.1, 1, 3 / 0.9, 2.9 / 2; outputs move points 1 and 3
X = [[0.0], [0.1], [1.0], [3.0]]
FX = [[0.0], [0.1], [0.5], [3.5]]


def _by_hand(power: int, boundary: float) -> float:
    total = 0.0
    for i in range(4):
        for j in range(4):
            d_in = abs(X[i][0] - X[j][0])
            d_out = abs(FX[i][0] - FX[j][0])
            w = 2.0 if d_in == 0 else min(2.0, max(0.01, -math.log(d_in / boundary)))
            total += w * abs(d_out - d_in) ** power
    return total / 16


@pytest.mark.parametrize(("variant", "power"), [("squared", 2), ("abs", 1)])
def test_loss_matches_hand_computation(variant, power):
    x = torch.tensor(X, dtype=torch.float32)
    fx = torch.tensor(FX, dtype=torch.float32)
    loss = inrp_loss(fx, x, boundary=2.0, variant=variant)
    assert float(loss) == pytest.approx(_by_hand(power, 2.0), rel=1e-5)


def test_hand_values_spelled_out():
    # pairs (unordered) with a non-zero error: (0,2) d_in 1, d_out 0.5, w ln 2;
    # (1,2) d_in 0.9, d_out 0.4, w -ln 0.45; (0,3)/(1,3) errors 0.5 at w beta; (2,3) error 1
    w02, w12 = math.log(2.0), -math.log(0.45)
    squared = 2 * (w02 * 0.25 + w12 * 0.25 + 0.01 * 0.25 * 2 + 0.01 * 1.0) / 16
    absolute = 2 * (w02 * 0.5 + w12 * 0.5 + 0.01 * 0.5 * 2 + 0.01 * 1.0) / 16
    assert _by_hand(2, 2.0) == pytest.approx(squared)
    assert _by_hand(1, 2.0) == pytest.approx(absolute)


def test_loss_gradient_finite_with_duplicate_outputs():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    fx = torch.zeros(3, 2, requires_grad=True)
    inrp_loss(fx, x, boundary=1.0).backward()
    assert torch.isfinite(fx.grad).all()


def test_unknown_variant_and_bad_boundary():
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="unknown INRP variant"):
        inrp_loss(x, x, 1.0, variant="cube")
    with pytest.raises(ValueError, match="boundary must be positive"):
        inrp_weights(torch.ones(2), 0.0)


def test_boundary_is_mean_pairwise_distance():
    x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    expected = np.mean(
        [np.linalg.norm(x[i] - x[j]) for i in range(50) for j in range(50) if i != j]
    )
    assert estimate_boundary(x) == pytest.approx(expected, rel=1e-6)


def test_boundary_sampled_estimate_is_close():
    x = np.random.default_rng(1).standard_normal((3000, 16)).astype(np.float32)
    exact = estimate_boundary(x, sample=3000)
    assert estimate_boundary(x, sample=500, seed=3) == pytest.approx(exact, rel=0.02)


def test_boundary_of_duplicates_is_an_error():
    x = np.ones((10, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="identical"):
        estimate_boundary(x)
    with pytest.raises(ValueError, match="at least 2"):
        estimate_boundary(x[:1])
