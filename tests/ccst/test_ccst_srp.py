"""Sparse random projection (Eq. 2 of CCST; Li et al. 2006): statistics and determinism."""

import math

import numpy as np
import pytest
from ccst.srp import default_density_param, srp_matrix, srp_project


def test_default_s_is_sqrt_d_in():
    assert default_density_param(400) == 20.0
    assert default_density_param(960) == pytest.approx(math.sqrt(960))


def test_density_is_one_over_s():
    d_in, d_out = 400, 500  # s = 20: 5 % of 200k entries are non-zero
    w = srp_matrix(d_in, d_out, seed=0)
    s = math.sqrt(d_in)
    density = np.count_nonzero(w) / w.size
    assert density == pytest.approx(1.0 / s, rel=0.05)
    # both signs equally likely
    pos, neg = np.count_nonzero(w > 0), np.count_nonzero(w < 0)
    assert pos / (pos + neg) == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("scaled", [True, False])
def test_values_are_plus_minus_sqrt_s_or_zero(scaled):
    d_in, d_out = 256, 64
    s = math.sqrt(d_in)
    w = srp_matrix(d_in, d_out, seed=1, scaled=scaled)
    assert w.dtype == np.float32 and w.shape == (d_in, d_out)
    # Eq. 2 scales by 1/sqrt(d_out); Li et al. keep +-sqrt(s) in the matrix
    magnitude = math.sqrt(s / d_out) if scaled else math.sqrt(s)
    values = np.unique(w)
    assert len(values) == 3
    np.testing.assert_allclose(values, [-magnitude, 0.0, magnitude], rtol=1e-6)
    np.testing.assert_allclose(
        np.unique(w * math.sqrt(d_out) if scaled else w),
        [-math.sqrt(s), 0.0, math.sqrt(s)],
        rtol=1e-5,
    )


def test_entry_moments():
    d_in, d_out = 900, 300
    w = srp_matrix(d_in, d_out, seed=2).astype(np.float64)
    assert abs(w.mean()) < 3 * math.sqrt(1.0 / d_out / w.size)
    assert w.var() == pytest.approx(1.0 / d_out, rel=0.05)


def test_custom_s():
    w = srp_matrix(300, 100, seed=3, s=3.0)  # Achlioptas (2003): s = 3
    assert np.count_nonzero(w) / w.size == pytest.approx(1.0 / 3.0, rel=0.03)


def test_squared_distances_preserved_in_expectation():
    rng = np.random.default_rng(0)
    d_in, d_out, n_draws = 64, 16, 300
    x = rng.standard_normal((20, d_in)).astype(np.float32)
    y = rng.standard_normal((20, d_in)).astype(np.float32)
    orig = ((x - y) ** 2).sum(1)
    ratios = np.empty((n_draws, len(x)))
    for seed in range(n_draws):
        w = srp_matrix(d_in, d_out, seed=seed)
        ratios[seed] = (((x - y) @ w) ** 2).sum(1) / orig
    # each pair: mean over independent matrices is 1 (unbiased); the spread is JL-sized
    np.testing.assert_allclose(ratios.mean(0), 1.0, atol=0.15)
    assert ratios.mean() == pytest.approx(1.0, abs=0.05)


def test_distances_concentrate_for_large_d_out():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 256)).astype(np.float32)
    w = srp_matrix(256, 2048, seed=7)
    d_orig = ((x[:, None] - x[None]) ** 2).sum(-1)
    xp = x @ w
    d_proj = ((xp[:, None] - xp[None]) ** 2).sum(-1)
    iu = np.triu_indices(len(x), 1)
    ratio = d_proj[iu] / d_orig[iu]
    assert ratio.mean() == pytest.approx(1.0, abs=0.03)
    assert np.abs(ratio - 1).max() < 0.3


def test_seeded_and_deterministic():
    a = srp_matrix(128, 32, seed=5)
    b = srp_matrix(128, 32, seed=5)
    c = srp_matrix(128, 32, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_project_matches_matmul_and_batches():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1001, 48)).astype(np.float32)
    w = srp_matrix(48, 12, seed=0)
    full = srp_project(x, w)
    batched = srp_project(x, w, batch_size=100)
    assert full.dtype == np.float32 and full.shape == (1001, 12) and full.flags.c_contiguous
    np.testing.assert_allclose(full, x @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(full, batched, rtol=1e-5, atol=1e-5)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        srp_matrix(16, 0, seed=0)
    with pytest.raises(ValueError):
        srp_matrix(16, 4, seed=0, s=0.5)
    with pytest.raises(ValueError):
        srp_project(np.zeros((2, 5), np.float32), srp_matrix(4, 2, seed=0))
