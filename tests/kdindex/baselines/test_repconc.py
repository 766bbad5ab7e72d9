"""RepCONC (kdindex.baselines.repconc): Sinkhorn-balanced batch codes and capacity rounding."""

import numpy as np
import pytest
import torch
from kdindex.balance import is_balanced
from kdindex.baselines import LBConfig, RepCONC, build_model, capacity_round


def test_repconc_batch_codes_are_balanced(lb):
    B, W = lb.B, lb.W
    # skewed data: most points near one codeword, so nearest-codeword codes are unbalanced
    ds, _, _ = lb.data("l2")
    model = build_model("RepCONC", ds.xb, "l2", B, W, LBConfig())
    assert isinstance(model, RepCONC)
    rng = np.random.default_rng(4)
    x = ds.xb[:8][rng.integers(0, 8, 320)] + 0.05 * rng.standard_normal((320, 16))
    xt = model.s.transform(torch.from_numpy(x.astype(np.float32)) / model.scale)
    nearest = model.s.assign(xt)[0].numpy()
    balanced = model.balanced_codes(xt).numpy()
    assert not is_balanced(nearest, W)
    assert is_balanced(balanced, W)  # max - min list length < N / W in every codebook
    counts = np.stack([np.bincount(balanced[:, b], minlength=W) for b in range(B)])
    assert (counts == 320 // W).all()  # capacity ceil(320 / 16) = 20: every list holds 20
    assert model.sinkhorn_misses == 0


def test_capacity_round_respects_capacity_and_prefers_large_entries():
    rng = np.random.default_rng(5)
    plan = rng.random((50, 8))
    plan[:, 0] += 10  # every row prefers codeword 0
    codes = capacity_round(plan, cap=7)
    counts = np.bincount(codes, minlength=8)
    assert counts.max() <= 7 and counts.sum() == 50
    # codeword 0 keeps the 7 rows with the largest entries for it
    assert set(np.flatnonzero(codes == 0)) == set(np.argsort(-plan[:, 0])[:7])
    np.testing.assert_array_equal(capacity_round(np.eye(4), 1), np.arange(4))
    with pytest.raises(ValueError, match="capacity"):
        capacity_round(plan, cap=6)
