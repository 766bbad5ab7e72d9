"""`Catalyzer(<architecture>, config=None, *, device, **overrides)` (issue 11 step 4): the
keyword style and the config= style are one configuration and train the same weights;
overrides win over the config; an unknown override is one line naming it."""

import dataclasses

import numpy as np
import pytest
from annrepro.errors import SettingError
from catalyzer import Catalyzer, TrainConfig

TINY = dict(epochs=1, batch_size=32, k_neg=10, n_val=0)


def _x(n=300, d=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_keyword_style_and_config_style_train_the_same_model():
    old = Catalyzer(d_out=8, hidden=16, lam=0.05, preset="released", **TINY)
    cfg = TrainConfig.preset("released", d_out=8, hidden=16, lam=0.05, **TINY)
    new = Catalyzer(config=cfg)
    assert old.config == new.config == cfg
    assert new.config is cfg  # no override: the config object itself
    x = _x()
    a, b = old.fit(x), new.fit(x)
    assert a.model_id == b.model_id
    assert np.array_equal(a.transform(x[:20]), b.transform(x[:20]))


def test_defaults_are_the_paper_preset():
    assert Catalyzer().config == TrainConfig.preset("paper")
    assert Catalyzer(preset="released").config == TrainConfig.preset("released")
    # positional architecture, as the CLI calls it
    assert Catalyzer(8, 16, 0.05, "released").config == TrainConfig.preset(
        "released", d_out=8, hidden=16, lam=0.05
    )


def test_overrides_and_architecture_win_over_the_config():
    cfg = TrainConfig.preset("released", d_out=8, hidden=16, epochs=5, seed=1)
    cat = Catalyzer(12, config=cfg, epochs=2, lam=0.1)
    assert (cat.config.d_out, cat.config.epochs, cat.config.lam) == (12, 2, 0.1)
    assert cat.config.hidden == 16 and cat.config.seed == 1  # the config's
    assert cat.config.lr_stages == TrainConfig.preset("released").lr_stages
    assert cfg.epochs == 5  # the config given is not changed
    assert cat.config == dataclasses.replace(cfg, d_out=12, epochs=2, lam=0.1)


def test_unknown_override_is_one_line_naming_it():
    with pytest.raises(SettingError, match=r"unknown argument\(s\) epoch;") as e:
        Catalyzer(d_out=8, epoch=3)
    msg = str(e.value)
    assert "\n" not in msg and "epochs" in msg and "batch_size" in msg and "device" in msg


def test_config_and_preset_or_a_foreign_config_are_refused():
    with pytest.raises(SettingError, match="preset='released' and config= both given"):
        Catalyzer(preset="released", config=TrainConfig())
    with pytest.raises(SettingError, match="config must be a catalyzer.train.TrainConfig"):
        Catalyzer(config={"epochs": 1})
