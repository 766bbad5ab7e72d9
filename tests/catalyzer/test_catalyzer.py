"""The catalyzer: losses (Eq. 2-4), straight-through lattice layer, training loop, API, CLI."""

import math

import catalyzer.losses
import numpy as np
import pytest
import torch
from catalyzer import (
    Catalyzer,
    CatalyzerNet,
    StraightThroughLattice,
    TrainConfig,
    TrainingDiverged,
    ZnSphereLattice,
    catalyzer_loss,
    koleo_loss,
    rank_loss,
    train_catalyzer,
)
from catalyzer.cli import main as cli_main
from catalyzer.search import quantized_search
from catalyzer.train import lr_at, positives_knn


@pytest.fixture(scope="module", autouse=True)
def _torch_warm_up():
    """torch's first optimiser step imports lazily (~2 s): pay it once, outside the tests."""
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.zeros(2, 2)).sum().backward()
    opt.step()


def _x(n=300, d=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _cfg(**kw):
    base = dict(d_out=8, hidden=16, epochs=1, batch_size=32, k_neg=10, n_val=0, lam=0.05)
    base.update(kw)
    return TrainConfig.preset("released", **base)


# ------------------------------------------------------------------------------ losses
def test_koleo_hand_computed():
    # nearest-neighbour distances: (0,0)->(1,0): 1, (1,0)->(0,0): 1, (0,2)->(0,0): 2
    y = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    assert koleo_loss(y).item() == pytest.approx(-math.log(2) / 3, abs=1e-6)


def test_koleo_excludes_self_and_handles_duplicates():
    y = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0]], requires_grad=True)
    loss = koleo_loss(y)  # two coincident points: finite thanks to eps, not -log(0)
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(y.grad).all()
    with pytest.raises(ValueError):
        koleo_loss(torch.zeros(1, 2))


def test_rank_loss_and_total_hand_computed():
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    p = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    n = torch.tensor([[0.0, 2.0], [0.0, 1.0]])
    # max(0, 1 - 2) = 0 and max(0, 3 - 1) = 2: no margin (Eq. 3)
    assert rank_loss(a, p, n).item() == pytest.approx(1.0)
    total, lr, lk = catalyzer_loss(a, p, n, lam=0.5)
    assert lr.item() == pytest.approx(1.0, abs=1e-6)
    assert total.item() == pytest.approx(lr.item() + 0.5 * lk.item())


# ---------------------------------------------------------------------- model, lattice layer
def test_net_output_is_unit_norm_and_checks_dimension():
    torch.manual_seed(0)
    net = CatalyzerNet(8, 4, hidden=16).eval()
    y = net(torch.from_numpy(_x(10)))
    assert torch.allclose(y.norm(dim=1), torch.ones(10), atol=1e-5)
    with pytest.raises(ValueError, match="expects"):
        net(torch.zeros(3, 9))


def test_straight_through_gradient():
    lat = ZnSphereLattice(4, 3)
    y = torch.tensor(_x(5, 4), requires_grad=True)
    q = StraightThroughLattice(lat)(y)
    expect = lat.quantize(y.detach().numpy()) / lat.r
    assert np.allclose(q.detach().numpy(), expect, atol=1e-6)
    w = torch.arange(20, dtype=torch.float32).reshape(5, 4)
    (q * w).sum().backward()
    assert torch.equal(y.grad, w)  # identity in the backward pass


# ---------------------------------------------------------------------------- training
def test_lr_presets():
    paper = TrainConfig.preset("paper")
    assert paper.epochs == 300
    assert [lr_at(e, 300, paper.lr_stages) for e in (0, 79, 80, 119, 120, 299)] == [
        0.1,
        0.1,
        0.05,
        0.05,
        0.01,
        0.01,
    ]
    rel = TrainConfig.preset("released")
    assert (rel.epochs, rel.batch_size) == (160, 64)
    assert [lr_at(e, 160, rel.lr_stages) for e in (0, 40, 80, 120)] == [0.1, 0.1, 0.05, 0.01]
    with pytest.raises(ValueError, match="unknown preset"):
        TrainConfig.preset("nope")


def test_positives_exclude_self():
    x = _x(50, 4)
    P = positives_knn(x, 5)
    assert P.shape == (50, 5) and not (P == np.arange(50)[:, None]).any()


def test_train_is_deterministic_and_validates():
    x = _x(200)
    cfg = _cfg(epochs=2, n_val=60, n_val_queries=20, val_quantizer="zn_3", val_every=1)
    r1, r2 = train_catalyzer(x, cfg), train_catalyzer(x, cfg)
    assert len(r1.history) == 2 and "val_1-recall@10" in r1.history[-1]
    assert 0 <= r1.best_score <= 1 and r1.vectors_per_s > 0 and 0 < r1.mining_share < 1
    for k, v in r1.state_dict.items():
        assert torch.equal(v, r2.state_dict[k])


def test_end2end_trains():
    r = train_catalyzer(_x(200), _cfg(end2end_r2=3))
    assert math.isfinite(r.history[-1]["loss"])


def test_bad_inputs():
    with pytest.raises(ValueError, match="k_neg"):
        train_catalyzer(_x(40), _cfg(k_neg=50))  # fewer vectors than k_neg
    with pytest.raises(ValueError, match="batch_size"):
        train_catalyzer(_x(60), _cfg(batch_size=64))
    with pytest.raises(ValueError, match="empty"):
        train_catalyzer(_x(200), _cfg(d_out=1, end2end_r2=2))  # no z in Z^1 with z^2 = 2
    bad = _x(200)
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_catalyzer(bad, _cfg())


def test_nan_loss_stops_with_epoch_and_keeps_last_good(monkeypatch):
    real = catalyzer.losses.catalyzer_loss
    calls = {"n": 0}

    def flaky(a, p, n, lam, eps=catalyzer.losses.KOLEO_EPS):
        calls["n"] += 1
        total, lr, lk = real(a, p, n, lam, eps)
        return (total * float("nan") if calls["n"] > 10 else total), lr, lk

    monkeypatch.setattr(catalyzer.losses, "catalyzer_loss", flaky)
    with pytest.raises(TrainingDiverged, match="epoch 1") as e:
        train_catalyzer(_x(300), _cfg(epochs=3))  # 9 batches per epoch: NaN in epoch 1
    assert e.value.epoch == 1
    assert all(torch.isfinite(v.float()).all() for v in e.value.state_dict.values())


# ---------------------------------------------------------------------------------- API
def test_catalyzer_api_save_load_roundtrip(tmp_path):
    x = _x(300)
    cat = Catalyzer(
        d_out=8, hidden=16, lam=0.05, preset="released", epochs=1, batch_size=32, k_neg=10, n_val=0
    ).fit(x)
    codes = cat.encode(x[:50], "zn_3")
    assert codes.dtype == np.uint64 and codes.shape == (50,)
    D, I = cat.search(x[:5], codes, 3, "zn_3")
    assert I.shape == (5, 3)
    bits = cat.encode(x[:50], "sign")
    assert bits.shape == (50, 1)
    _, Ib = cat.search(x[:5], bits, 3, "sign")
    assert Ib.shape == (5, 3)
    path = tmp_path / "cat.pt"
    cat.save(path)
    back = Catalyzer.load(path)
    assert back.config == cat.config and back.fingerprint == cat.fingerprint
    assert np.array_equal(back.transform(x[:20]), cat.transform(x[:20]))
    assert np.array_equal(back.encode(x[:50], "zn_3"), codes)


def test_catalyzer_files_from_before_format_version_load(tmp_path):
    """Files saved before annrepro.atomic's `format_version` said "format" (and had no `kind`):
    model and codes still load; a file of another kind or format is refused by name."""
    import json

    import torch

    x = _x(300)
    cat = Catalyzer(
        d_out=8, hidden=16, preset="released", epochs=1, batch_size=32, k_neg=10, n_val=0
    ).fit(x)
    cat.save(tmp_path / "new.pt")
    blob = torch.load(tmp_path / "new.pt", weights_only=True)
    assert blob.pop("kind") == "catalyzer.Catalyzer"
    blob["format"] = blob.pop("format_version")
    torch.save(blob, tmp_path / "old.pt")  # the layout Catalyzer.save wrote before
    back = Catalyzer.load(tmp_path / "old.pt")
    assert np.array_equal(back.transform(x[:20]), cat.transform(x[:20]))
    codes = cat.encode(x[:30], "zn_3")
    cat.save_codes(tmp_path / "new.npz", codes, "zn_3")
    with np.load(tmp_path / "new.npz") as z:
        meta = json.loads(str(z["meta"]))
    meta["format"] = meta.pop("format_version")
    np.savez(tmp_path / "old.npz", codes=codes, meta=np.array(json.dumps(meta)))
    assert np.array_equal(back.load_codes(tmp_path / "old.npz", "zn_3"), codes)
    torch.save({**blob, "kind": "ccst.CCST"}, tmp_path / "ccst.pt")
    with pytest.raises(ValueError, match="ccst.pt: a ccst.CCST file, not a catalyzer model"):
        Catalyzer.load(tmp_path / "ccst.pt")
    torch.save({**blob, "format": 9}, tmp_path / "v9.pt")
    with pytest.raises(ValueError, match="v9.pt: not a catalyzer file of format 1"):
        Catalyzer.load(tmp_path / "v9.pt")


def test_catalyzer_api_errors():
    cat = Catalyzer(
        d_out=8, hidden=16, preset="released", epochs=1, batch_size=32, k_neg=10, n_val=0
    )
    with pytest.raises(RuntimeError, match="not trained"):
        cat.transform(_x(3))
    cat.fit(_x(200))
    with pytest.raises(ValueError, match="trained on 8-d"):
        cat.transform(_x(3, d=9))
    cat24 = Catalyzer(
        d_out=24, hidden=8, preset="released", epochs=1, batch_size=32, k_neg=10, n_val=0
    ).fit(_x(200))
    with pytest.raises(ValueError, match="64 bits"):
        cat24.encode(_x(3), "zn_100")  # S_24 with r2 = 100: more than 64 bits (r2 79: 63.9)
    with pytest.raises(ValueError, match="empty"):
        Catalyzer(d_out=1, hidden=4, n_val=50, n_val_queries=10).fit(_x(300))  # zn_79: S_1 empty


def test_quantized_search_exact_matches_faiss():
    y = _x(40, 4)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    I = quantized_search(y[:5], y, 1, "none")
    assert (I[:, 0] == np.arange(5)).all()
    with pytest.raises(ValueError, match="unknown quantizer"):
        quantized_search(y, y, 1, "pq")


def test_cli_train_encode_search(tmp_path):
    x = _x(300)
    np.save(tmp_path / "xt.npy", x)
    model = tmp_path / "m.pt"
    args = [
        "--xt",
        str(tmp_path / "xt.npy"),
        "--out",
        str(model),
        "--d-out",
        "8",
        "--hidden",
        "16",
        "--preset",
        "released",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--n-val",
        "60",
        "--n-val-queries",
        "10",
        "--val-quantizer",
        "zn_3",
        "--threads",
        "1",
    ]
    assert cli_main(["train", *args]) == 0
    codes = tmp_path / "c.npy"
    assert (
        cli_main(
            [
                "encode",
                "--model",
                str(model),
                "--x",
                str(tmp_path / "xt.npy"),
                "--out",
                str(codes),
                "--quantizer",
                "zn_3",
            ]
        )
        == 0
    )
    out = tmp_path / "I.npy"
    assert (
        cli_main(
            [
                "search",
                "--model",
                str(model),
                "--codes",
                str(codes),
                "--xq",
                str(tmp_path / "xt.npy"),
                "--k",
                "4",
                "--quantizer",
                "zn_3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert np.load(out).shape == (300, 4)


# ------------------------------------------------------------------- batch-norm passes (switch)
def test_batchnorm_passes_switch(monkeypatch):
    """bn_passes="separate" (default, the authors' train.py): anchors, positives and negatives go
    through the network in three passes of batch_size rows, each with its own batch-norm
    statistics; "joint": one pass of 3 x batch_size rows. The switch changes the trained model."""
    assert TrainConfig().bn_passes == "separate"
    seen = []
    real = CatalyzerNet.forward

    def spy(self, x):
        if self.training:
            seen.append(x.shape[0])
        return real(self, x)

    monkeypatch.setattr(CatalyzerNet, "forward", spy)
    x = _x(96)
    sep = train_catalyzer(x, _cfg())
    assert seen == [32] * 9  # 3 batches x (anchor, positive, negative)
    seen.clear()
    joint = train_catalyzer(x, _cfg(bn_passes="joint"))
    assert seen == [96] * 3
    w = "layers.0.weight"
    assert not torch.equal(sep.state_dict[w], joint.state_dict[w])
    with pytest.raises(ValueError, match="bn_passes"):
        train_catalyzer(x, _cfg(bn_passes="both"))


# ------------------------------------------------- degenerate case: identity net = lattice baseline
def test_identity_catalyzer_with_lambda_0_is_the_lattice_baseline():
    """With lambda 0 and the identity in place of the MLP, the catalyzer's codes and search are
    the spherical-lattice baseline's (PCA+Lattice without the PCA) on normalised input."""
    from catalyzer import l2_normalize, pca_lattice_search

    xt, xb, xq = (l2_normalize(_x(n, 8, seed=s)) for n, s in ((200, 1), (300, 2), (20, 3)))
    cat = Catalyzer(
        d_out=8,
        lam=0.0,
        arch="identity",
        preset="released",
        epochs=1,
        batch_size=32,
        k_neg=10,
        n_val=60,
        n_val_queries=20,
        val_quantizer="zn_10",
    )
    cat.fit(xt)
    assert not list(cat.net.parameters())
    np.testing.assert_allclose(cat.transform(xb), xb, atol=1e-6)  # re-normalised: ulps
    base = pca_lattice_search(xt, xb, xq, 10, d_out=8, r2=10, projection="none")
    codes = cat.encode(xb, "zn_10")
    np.testing.assert_array_equal(codes, ZnSphereLattice(8, 10).encode(xb))
    _, I = cat.search(xq, codes, 10, "zn_10")
    np.testing.assert_array_equal(I, base.I)
    np.testing.assert_array_equal(quantized_search(xq, xb, 10, "zn_10"), base.I)
    with pytest.raises(ValueError, match="identity"):
        Catalyzer(d_out=4, arch="identity", n_val=0, epochs=1, batch_size=32, k_neg=10).fit(xt)
