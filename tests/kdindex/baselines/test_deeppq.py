"""DeepPQ (kdindex.baselines.deeppq): progressive residual codes."""

import torch
from kdindex.baselines import LBConfig, build_model


def test_deeppq_stages_are_progressive_residual_codes(lb):
    B, W = lb.B, lb.W
    ds, _, _ = lb.data("l2")
    model = build_model("DeepPQ", ds.xb, "l2", B, W, LBConfig())
    assert model.s.kind == "AQ" and model.s.codebooks.shape == (B, W, 16)
    x = model.s.transform(torch.from_numpy(ds.xb[:50]) / model.scale)
    recs, logits = model._progressive(x)
    assert len(recs) == B and logits[0].shape == (50, W)
    codes = model.s.assign(x)[0]  # greedy residual codes: the last stage is Q(x)
    torch.testing.assert_close(recs[-1], model.s.decode(codes), rtol=1e-5, atol=1e-5)
    err = [((x - r) ** 2).sum().item() for r in recs]
    assert all(a >= b for a, b in zip(err, err[1:]))  # each stage refines the residual
