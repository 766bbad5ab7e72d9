"""`CCST(<architecture>, config=None, *, <run settings>, **overrides)` (issue 11 step 4): the
keyword style and the config= style are one configuration and train the same weights;
overrides win over the config; an unknown override is one line naming it."""

import dataclasses

import numpy as np
import pytest
import torch
from annrepro.errors import SettingError
from ccst import CCST
from ccst.methods import CCSTMethod
from ccst.train import TrainConfig

ARCH = dict(compression_factor=4, depths=(1,), heads=2)
RUN = dict(progress=False)


def _x(n=80, d=16, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_keyword_style_and_config_style_train_the_same_model(warm_torch_optim):
    old = CCST(**ARCH, epochs=2, batch_size=16, lr=1e-3, seed=3, **RUN)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-3, seed=3)
    new = CCST(**ARCH, config=cfg, **RUN)
    assert old.train_config == new.train_config == cfg and old.seed == new.seed == 3
    assert new.train_config is cfg  # no override: the config object itself
    assert old.arch == new.arch
    x = _x()
    a, b = old.fit(x), new.fit(x)
    assert a.boundary == b.boundary and a.history == b.history
    for (k, va), (_, vb) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
        assert torch.equal(va, vb), k
    assert np.array_equal(a.transform(x), b.transform(x))


def test_defaults_and_positional_architecture():
    assert CCST().train_config == TrainConfig()
    assert (
        CCST(4, None, 2, (1,), 2).arch
        == CCST(compression_factor=4, n_tokens=2, depths=(1,), heads=2).arch
    )


def test_overrides_win_over_the_config():
    cfg = TrainConfig(epochs=5, lr=1e-3, seed=1)
    model = CCST(4, config=cfg, epochs=2, seed=7)
    assert model.train_config == dataclasses.replace(cfg, epochs=2, seed=7)
    assert model.train_config.lr == 1e-3  # the config's
    assert model.seed == 7  # the seed of the weights follows the config's seed
    assert cfg.epochs == 5 and cfg.seed == 1  # the config given is not changed


def test_unknown_override_is_one_line_naming_it():
    with pytest.raises(SettingError, match=r"unknown argument\(s\) epoch;") as e:
        CCST(4, epoch=3)
    msg = str(e.value)
    assert "\n" not in msg
    for name in ("epochs", "batch_size", "depths", "input_scaling", "device"):
        assert name in msg
    with pytest.raises(SettingError, match="config must be a ccst.train.TrainConfig"):
        CCST(config={"epochs": 1})
    with pytest.raises(ValueError, match="unknown INRP variant"):  # TrainConfig's own check
        CCST(config=TrainConfig(), loss="cube")


def test_methods_accept_every_ccst_argument_and_no_other():
    """ccst.methods' settings are CCST's keywords: architecture, run settings, TrainConfig."""
    known = CCSTMethod.known_settings()
    assert {"epochs", "lr", "seed", "checkpoint_every", "depths", "pre_norm"} <= known
    assert {"input_scaling", "scale_sample", "device", "progress"} <= known
    assert not {"config", "overrides", "self", "compression_factor"} & known
