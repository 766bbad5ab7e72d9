"""DiffPQ (kdindex.baselines.diffpq): straight-through and soft forward passes."""

import torch
from kdindex.baselines import LBConfig, build_model


def test_diffpq_soft_forward_mixes_codewords(lb):
    B, W = lb.B, lb.W
    ds, _, _ = lb.data("l2")
    sx = build_model("DiffPQ", ds.xb, "l2", B, W, LBConfig(diffpq_mode="sx"))
    soft = build_model("DiffPQ", ds.xb, "l2", B, W, LBConfig(diffpq_mode="soft"))
    x = sx.s.transform(torch.from_numpy(ds.xb[:20]) / sx.scale)
    hard = sx.s.decode(sx.s.assign(x)[0])
    torch.testing.assert_close(sx._st(x), hard)  # straight-through: forward is the hard code
    assert not torch.allclose(soft._st(x), hard, atol=1e-3)
