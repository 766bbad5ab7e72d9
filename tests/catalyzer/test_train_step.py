"""The fast training step (`TrainConfig.fast_step`, the default) against the plain one it
replaces: the same weights, losses and kept state bit for bit, in every batch-norm mode, with
end-to-end training and a ragged last batch; and the switch keys neither checkpoints nor the
model cache."""

import catalyzer.losses
import numpy as np
import pytest
import torch
from catalyzer import TrainConfig, TrainingDiverged, train_catalyzer
from catalyzer.cache import cache_key

TIMINGS = ("mine_s", "train_s", "val_s")


def _x(n=330, d=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _cfg(**kw):
    base = dict(d_out=8, hidden=16, epochs=2, batch_size=32, k_neg=10, lam=0.05, n_val=60,
                n_val_queries=20, val_quantizer="zn_3", val_every=1)  # fmt: skip
    base.update(kw)
    return TrainConfig.preset("released", **base)


def _losses(history):
    return [{k: v for k, v in rec.items() if k not in TIMINGS} for rec in history]


def _same(a, b):
    assert a.state_dict.keys() == b.state_dict.keys()
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert (a.best_epoch, a.best_score) == (b.best_epoch, b.best_score)
    assert _losses(a.history) == _losses(b.history)


@pytest.mark.parametrize(
    "kw",
    [
        {},  # 270 training rows: 8 batches of 32 and a ragged one of 14
        {"bn_passes": "joint"},
        {"end2end_r2": 3},
        {"neg_search": "hnsw32", "pos_include_self": True},
        {"batch_size": 27},  # 10 full batches, no ragged one
        {"batch_size": 67},  # a last batch of 1 row: skipped by both
    ],
)
def test_fast_step_gives_the_plain_steps_weights_bit_for_bit(kw):
    x = _x(331 if kw.get("batch_size") == 67 else 330)
    fast = train_catalyzer(x, _cfg(**kw))
    plain = train_catalyzer(x, _cfg(fast_step=False, **kw))
    _same(fast, plain)
    assert fast.history[-1]["loss"] > 0


@pytest.mark.parametrize("fast_step", [True, False])
def test_nan_loss_names_the_batch_and_resets_in_both_steps(monkeypatch, fast_step):
    real, calls = catalyzer.losses.catalyzer_loss, [0]

    def flaky(a, p, n, lam, eps=catalyzer.losses.KOLEO_EPS):
        calls[0] += 1
        total, lr, lk = real(a, p, n, lam, eps)
        return (total * float("nan") if calls[0] == 9 + 4 else total), lr, lk

    monkeypatch.setattr(catalyzer.losses, "catalyzer_loss", flaky)
    with pytest.raises(TrainingDiverged, match=r"at epoch 1 \(batch 3\)") as e:
        train_catalyzer(_x(), _cfg(fast_step=fast_step))  # 9 batches per epoch
    assert e.value.epoch == 1
    assert all(torch.isfinite(v.float()).all() for v in e.value.state_dict.values())


def test_fast_step_is_not_part_of_checkpoint_or_cache_keys(tmp_path, monkeypatch):
    """A run of the plain step interrupted after epoch 1 resumes with the fast step and ends
    with the uninterrupted run's weights."""
    import catalyzer.train

    x, cfg = _x(), _cfg(epochs=3)
    straight = train_catalyzer(x, cfg)
    real, calls = catalyzer.train.mine_negatives, [0]

    def mine(*a, **kw):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    with monkeypatch.context() as m:
        m.setattr(catalyzer.train, "mine_negatives", mine)
        with pytest.raises(KeyboardInterrupt):
            train_catalyzer(x, _cfg(epochs=3, fast_step=False), checkpoint_dir=tmp_path)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1
    _same(straight, train_catalyzer(x, cfg, checkpoint_dir=tmp_path))
    assert cache_key("k", _cfg()) == cache_key("k", _cfg(fast_step=False))
    assert cache_key("k", _cfg()) != cache_key("k", _cfg(lam=0.1))
