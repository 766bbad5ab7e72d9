"""Training switches of the KDindex tables: the torch Sinkhorn of Algorithm 1 and the Table 5
ablation variants (no distillation loss, no balance strategy, initialization only)."""

import warnings

import numpy as np
import pytest
import torch
from kdindex.api import KDIndex
from kdindex.balance import balance_gap, balanced_assign
from kdindex.train import TrainConfig, sinkhorn_codes


def _sq_dist(M, W=16, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, 1, d)) * 1.5
    c = rng.standard_normal((1, W, d))
    return ((x - c) ** 2).sum(-1)


@pytest.mark.parametrize("M", [64, 640])
def test_sinkhorn_codes_match_pot_and_balance(M):
    d = _sq_dist(M)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = balanced_assign(d, reg=0.05, num_iter=500)
    got = sinkhorn_codes(torch.from_numpy(d), reg=0.05, num_iter=500).numpy()
    assert got.dtype == np.int64 and got.shape == (M,)
    assert (got == ref).mean() > 0.95
    # Algorithm 1 balances the lists far better than the nearest codeword
    assert balance_gap(got, 16)[0] < balance_gap(d.argmin(1), 16)[0] / 2


def test_sinkhorn_codes_falls_back_on_underflow(monkeypatch):
    import kdindex.train as train

    calls = []
    real = train.balanced_assign
    monkeypatch.setattr(train, "balanced_assign", lambda *a, **k: calls.append(1) or real(*a, **k))
    d = _sq_dist(64)
    d[:, 0] = 1e9  # normalised cost ~16 in column 0: exp(-16 / 0.01) underflows to 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = sinkhorn_codes(torch.from_numpy(d), reg=0.01, num_iter=200).numpy()
    assert calls == [1]
    assert got.shape == (64,) and got.min() >= 0 and got.max() < 16
    ok = sinkhorn_codes(torch.from_numpy(_sq_dist(64)), reg=0.05, num_iter=200)
    assert calls == [1] and ok.shape == (64,)


def _fit(cfg, kind="PQ", seed=0):
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((300, 8)).astype(np.float32)
    xq = rng.standard_normal((60, 8)).astype(np.float32)
    d2 = ((xq[:, None] - xb[None]) ** 2).sum(-1)
    labels = np.argsort(d2, 1)[:, :10]
    index = KDIndex(kind, "l2", B=2, W=16, K=10, config=cfg, n_warm=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index.fit(xb, xq, labels=labels)
    return index


def test_variants_change_training():
    base = dict(epochs=2, init_max_rounds=1, patience=5, progress=False, seed=0)
    full = _fit(TrainConfig(**base))
    no_distill = _fit(TrainConfig(distill_weight=0.0, **base))
    assert not np.allclose(full.quantizer.codebooks, no_distill.quantizer.codebooks)
    init_only = _fit(TrainConfig(**dict(base, epochs=0)))
    assert [c["phase"] for c in init_only.result.curve] == ["init", "diff"]
    no_bal = _fit(TrainConfig(**base).without_balance())
    # the posting lists of "w/o balance" are the nearest codewords: less balanced than Alg. 1
    assert balance_gap(no_bal.codes, 16).mean() > balance_gap(full.codes, 16).mean()


def test_bad_config():
    with pytest.raises(ValueError, match="distill_weight"):
        TrainConfig(distill_weight=-1)
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=-1)
