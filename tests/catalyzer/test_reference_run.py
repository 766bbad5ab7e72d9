"""`catalyzer reference-run`: the released code's protocol, on a tiny private registry."""

import json

import catalyzer.reference as ref
import numpy as np
import pytest
from catalyzer.cli import main
from catalyzer.train import lr_at


@pytest.fixture
def toy_registry(tmp_path, monkeypatch):
    """A registry with one file-backed data set: learn 400, base 200, 10 queries, shipped gt."""
    from annrepro import datasets as dsmod
    from annrepro.vecio import write_vectors

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((8, 8)).astype(np.float32)

    def draw(n):
        return centres[rng.integers(0, 8, n)] + 0.3 * rng.standard_normal((n, 8)).astype("f4")

    xt, xb, xq = draw(400), draw(200), draw(10)
    data = tmp_path / "data"
    write_vectors(data / "toy" / "learn.fvecs", xt)
    write_vectors(data / "toy" / "base.fvecs", xb)
    write_vectors(data / "toy" / "query.fvecs", xq)
    gt = np.argsort(((xq[:, None] - xb[None]) ** 2).sum(-1), axis=1)[:, :100].astype(np.int32)
    write_vectors(data / "toy" / "gt.ivecs", gt)
    root = tmp_path / "paper_tables"
    root.mkdir()
    (root / "datasets.toml").write_text(
        """
[datasets.toy]
scale = "small"
metric = "l2"
base = "toy/base.fvecs"
learn = "toy/learn.fvecs"
query = "toy/query.fvecs"
groundtruth = "toy/gt.ivecs"
"""
    )
    monkeypatch.setenv("ANNREPRO_TABLES", str(root))
    monkeypatch.setenv("ANNREPRO_DATA", str(data))
    monkeypatch.setattr(dsmod, "_cache", {})
    return {"xt": xt}


def test_reference_config_is_the_released_preset():
    cfg = ref.reference_config(seed=3)
    assert (cfg.d_out, cfg.lam, cfg.hidden, cfg.epochs, cfg.batch_size) == (24, 0.02, 1024, 160, 64)
    assert (cfg.momentum, cfg.k_pos, cfg.k_neg, cfg.val_every) == (0.9, 10, 50, 10)
    # train.py: --lr_schedule 0.1,0.1,0.05,0.01, each value for epochs / 4 epochs
    lrs = [lr_at(e, 160, cfg.lr_stages) for e in range(160)]
    assert lrs == [0.1] * 80 + [0.05] * 40 + [0.01] * 40
    assert (cfg.neg_search, cfg.pos_include_self, cfg.bn_passes) == ("hnsw32", True, "separate")
    assert (cfg.val_quantizer, cfg.seed, cfg.n_val) == ("zn_79", 3, 0)


def test_reference_run_cli_on_tiny_data(tmp_path, toy_registry, monkeypatch, capsys):
    calls = []
    real = ref.train_catalyzer

    def spy(xt, cfg, progress=False, validation=None):
        calls.append((xt.copy(), cfg, [v.copy() for v in validation]))
        return real(xt, cfg, progress=False, validation=validation)

    monkeypatch.setattr(ref, "train_catalyzer", spy)
    out = tmp_path / "o"
    args = ["reference-run", "--dataset", "toy", "--epochs", "2", "--hidden", "16",
            "--n-train", "300", "--n-val-queries", "50", "--seeds", "0", "1", "--threads", "1",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    xt = toy_registry["xt"]
    assert [c[1].seed for c in calls] == [0, 1]
    for got_xt, cfg, (vq, vb) in calls:  # training learn[:300]; validation learn[300:350] vs it
        np.testing.assert_array_equal(got_xt, xt[:300])
        np.testing.assert_array_equal(vq, xt[300:350])
        np.testing.assert_array_equal(vb, xt[:300])
        assert (cfg.epochs, cfg.hidden) == (2, 16)
    rec = json.loads((out / "reference-run.json").read_text())
    assert rec["protocol"]["training"] == "learn[0:300]"
    assert "shipped" in rec["protocol"]["eval_A"]
    for seed in ("0", "1"):
        r = rec["seeds"][seed]
        assert r["s_per_epoch"] > 0 and 0 < r["mining_share"] < 1
        assert r["best_val_zn_79_1-recall@10"] is not None  # validated after the last epoch
        for ev in ("A", "B"):
            assert set(r["eval"][ev]) == set(ref.QUANTIZERS)
            for v in r["eval"][ev].values():
                assert 0 <= v["1-recall@1"] <= v["1-recall@10"] <= v["1-recall@100"] <= 1
    printed = capsys.readouterr().out
    assert printed.startswith((out / "reference-run.txt").read_text())
    assert "OPQ8_64,PQ8" in printed and "s/epoch" in printed


def test_reference_run_rejects_a_split_larger_than_the_learn_set(tmp_path, toy_registry, capsys):
    args = ["reference-run", "--dataset", "toy", "--epochs", "1", "--n-train", "380",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 2
    assert "--n-train 380 + --n-val-queries 5000 exceed its 400 learn vectors" in (
        capsys.readouterr().err
    )
