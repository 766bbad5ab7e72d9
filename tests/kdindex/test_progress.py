"""Progress of a KDindex fit (issue 15): the warm start, the teacher, the iterative
initialisation and the balanced encoding of the base each show a tqdm bar (`TrainConfig.progress`)
or a log line; progress changes no number; `best epoch -1` says what it means."""

import json
import logging

import numpy as np
from kdindex.api import KDIndex
from kdindex.teacher import HNSWTeacher
from kdindex.train import TrainConfig


def _data(seed=0):
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((300, 8)).astype(np.float32)
    xq = rng.standard_normal((60, 8)).astype(np.float32)
    labels = np.argsort(((xq[:, None] - xb[None]) ** 2).sum(-1), 1)[:, :10]
    return xb, xq, labels


def _fit(kind="AQ", **cfg):
    xb, xq, labels = _data()
    base = {"epochs": 2, "init_max_rounds": 2, "balance_chunk": 128}  # 3 Sinkhorn chunks
    index = KDIndex(kind, "l2", 2, 16, 10, TrainConfig(**{**base, **cfg}), n_warm=300)
    return index.fit(xb, xq, labels=labels)


def test_bars_follow_the_progress_switch_and_change_no_number(capsys):
    quiet = _fit(progress=False)
    assert "KDindex" not in capsys.readouterr().err
    loud = _fit(progress=True)
    err = capsys.readouterr().err
    for bar in ("KDindex init rounds", "init round 0", "KDindex balanced (Sinkhorn) codes",
                "KDindex epochs", "epoch 0"):  # fmt: skip
        assert bar in err, bar
    np.testing.assert_array_equal(loud.quantizer.codebooks, quiet.quantizer.codebooks)
    np.testing.assert_array_equal(loud.codes, quiet.codes)
    assert json.dumps(loud.result.curve) == json.dumps(quiet.result.curve)  # NaN losses too


def test_each_long_step_logs_its_start(caplog):
    caplog.set_level(logging.INFO, logger="kdindex")
    _fit("OPQ", progress=False)
    text = caplog.text
    assert "training faiss OPQ (2 x 16 codewords, 50 rotation iterations) on 300 x 8" in text
    assert "trained faiss OPQ in" in text
    assert "iterative initialisation: up to 2 rounds" in text
    assert "init round 0: loss" in text
    assert "validation recall of the initialised student (epoch -1)" in text
    caplog.clear()
    xb, xq, _ = _data()
    t = HNSWTeacher(8, "l2", M=8, ef_search=20)
    t.build(xb, progress=True)
    labels = t.label(xq, 10, progress=True)
    assert labels.shape == (60, 10)
    assert "building HNSW M=8 efC=40 over 300 x 8" in caplog.text
    assert "labelling 60 training queries with the HNSW top-10 (efSearch 20)" in caplog.text
    assert "labelled 60 training queries in" in caplog.text


def test_best_epoch_minus_one_is_explained(caplog):
    caplog.set_level(logging.INFO, logger="kdindex")
    index = _fit("PQ", lr=0.0, progress=False)  # lr 0: no epoch can beat the initialisation
    assert index.result.best_epoch == -1
    assert "best epoch -1: the initialised student is kept (no differentiable epoch improved" in (
        caplog.text
    )
