"""The CCST network (Sec. 3.1): configuration, SRP initialisation of the projections, shapes."""

import math

import numpy as np
import pytest
import torch
from ccst.model import CCSTConfig, CCSTNet, default_tokens
from ccst.srp import srp_matrix


@pytest.mark.parametrize(("factor", "d_out", "n"), [(2, 480, 8), (4, 240, 12)])
def test_gist_defaults_forward_shapes(factor, d_out, n):
    # released GIST1M configuration: 8 tokens (expand 4) for factor 2, 12 (expand 3) for 4
    cfg = CCSTConfig(d_in=960, compression_factor=factor, depths=(1, 1))
    assert (cfg.d_out, cfg.n_tokens) == (d_out, n) and default_tokens(factor) == n
    assert cfg.n_tokens * cfg.d_out == 960 * (4 if factor == 2 else 3)
    net = CCSTNet(cfg).eval()
    x = torch.randn(3, 960)
    with torch.no_grad():
        assert net.tokens(x).shape == (3, n, d_out)
        y = net(x)
    assert y.shape == (3, d_out) and y.dtype == torch.float32


def test_projection_init_is_srp_eq2():
    d_in, d_out, n = 400, 100, 4  # s = 20
    cfg = CCSTConfig(d_in=d_in, compression_factor=4, n_tokens=n, depths=(1,), seed=7)
    w = CCSTNet(cfg).projection.weight.detach().numpy()  # (n * d_out, d_in)
    assert w.shape == (n * d_out, d_in)
    np.testing.assert_array_equal(w, CCSTNet.srp_init(cfg))
    s = math.sqrt(d_in)
    value = math.sqrt(s / d_out)
    blocks = [w[i * d_out : (i + 1) * d_out].T for i in range(n)]  # each W_i: (d_in, d_out)
    for wi in blocks:
        np.testing.assert_allclose(np.unique(wi), [-value, 0.0, value], rtol=1e-6)
        assert np.count_nonzero(wi) / wi.size == pytest.approx(1.0 / s, rel=0.1)
        # same statistics as a fresh SRP draw: variance 1 / d_out per entry
        ref = srp_matrix(d_in, d_out, seed=12345)
        assert wi.var() == pytest.approx(ref.var(), rel=0.1)
        assert wi.var() == pytest.approx(1.0 / d_out, rel=0.1)
    # the n projections are different draws
    assert not np.array_equal(blocks[0], blocks[1])


def test_projection_init_depends_on_seed_only():
    a = CCSTNet(CCSTConfig(d_in=32, compression_factor=4, depths=(1,), heads=2, seed=1))
    b = CCSTNet(CCSTConfig(d_in=32, compression_factor=4, depths=(1,), heads=2, seed=1))
    c = CCSTNet(CCSTConfig(d_in=32, compression_factor=4, depths=(1,), heads=2, seed=2))
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.projection.weight, c.projection.weight)


@pytest.mark.parametrize("norm", ["released", "layernorm", "none"])
def test_attention_query_key_narrower_than_value(norm):
    cfg = CCSTConfig(d_in=64, compression_factor=2, heads=4, qk_ratio=0.5, depths=(1,), norm=norm)
    att = CCSTNet(cfg).stages[0][0].attn
    assert att.q.out_features == att.k.out_features == 4 * 4  # 32 / 4 heads * 0.5
    assert att.v.out_features == 32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d_in": 30, "compression_factor": 4}, "does not divide the input dimension 30"),
        ({"d_in": 32, "compression_factor": 2, "heads": 3}, "heads=3 must divide"),
        ({"d_in": 32, "compression_factor": 2, "depths": (2, 0)}, "depths"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CCSTConfig(**kwargs)


def test_config_round_trip():
    cfg = CCSTConfig(d_in=64, compression_factor=4, depths=(1, 2, 1), heads=2)
    assert CCSTConfig.from_dict(cfg.to_dict()) == cfg
