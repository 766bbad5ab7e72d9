"""`KDIndex(<architecture>, config=None, *, n_warm, device, **overrides)` (issue 11 step 4): the
keyword style and the config= style are one configuration and train the same index; overrides
win over the config; warm-start settings stay the warm start's; an unknown override is one line
naming it."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from annrepro.errors import SettingError
from annrepro.groundtruth import knn_exact
from kdindex.api import KDIndex
from kdindex.train import TrainConfig

torch.set_num_threads(1)

TINY = dict(epochs=1, progress=False, batch_size=32, val_frac=0.25)


def _x(n, d, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_keyword_style_and_config_style_train_the_same_index():
    xb, xq = _x(200, 8), _x(64, 8, seed=1)
    labels = knn_exact(xq, xb, 4, "l2")[1]
    cfg = TrainConfig(**TINY, lr=0.02)
    old = KDIndex("OPQ", "l2", B=2, W=4, K=4, config=cfg, n_warm=200, opq_niter=3)
    new = KDIndex("OPQ", "l2", B=2, W=4, K=4, n_warm=200, opq_niter=3, **TINY, lr=0.02)
    assert old.config is cfg  # no override: the config object itself
    assert old.config == new.config and old.warm == new.warm == {"opq_niter": 3}
    a, b = old.fit(xb, xq, labels=labels), new.fit(xb, xq, labels=labels)
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.quantizer.codebooks, b.quantizer.codebooks)
    np.testing.assert_array_equal(a.quantizer.rotation, b.quantizer.rotation)
    assert json.dumps(a.result.curve) == json.dumps(b.result.curve)  # NaN loss of the epoch -1
    for x, y in zip(a.search(xq[:5], 4), b.search(xq[:5], 4)):
        np.testing.assert_array_equal(x, y)


def test_defaults_and_positional_config():
    assert KDIndex().config == TrainConfig() and KDIndex().warm == {}
    cfg = TrainConfig(epochs=3)
    assert KDIndex("PQ", "l2", 2, 16, 10, cfg).config is cfg  # as the CLI calls it


def test_overrides_win_over_the_config():
    cfg = TrainConfig(epochs=5, lr=0.05, seed=1)
    index = KDIndex("AQ", config=cfg, epochs=2, seed=7, aq_beam=3)
    assert index.config == dataclasses.replace(cfg, epochs=2, seed=7)
    assert index.config.lr == 0.05  # the config's
    assert index.warm == {"aq_beam": 3}  # a warm-start setting, not a TrainConfig field
    assert cfg.epochs == 5 and cfg.seed == 1  # the config given is not changed


def test_unknown_override_is_one_line_naming_it():
    with pytest.raises(SettingError, match=r"unknown argument\(s\) aq_width, epoch;") as e:
        KDIndex("AQ", epoch=3, aq_width=2)
    msg = str(e.value)
    assert "\n" not in msg
    for name in ("epochs", "batch_size", "aq_beam", "opq_niter", "n_warm", "device", "kind"):
        assert name in msg
    with pytest.raises(SettingError, match="config must be a kdindex.train.TrainConfig"):
        KDIndex(config={"epochs": 1})
