"""Compressor baselines of Table 5 (ccst.baselines); their table rows: test_experiments.py."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ccst.baselines import (
    CompressorConfig,
    MLPCompressor,
    MLPNet,
    VAECompressor,
    VAENet,
    catalyst_compress,
    vae_kl,
    vae_loss,
)
from ccst.train import TrainConfig, TrainingDiverged, train

pytestmark = pytest.mark.usefixtures("warm_torch_optim")

SPEC = Path(__file__).resolve().parents[2] / "paper_tables" / "ccst" / "table5.toml"


def blobs(n=256, d=16, seed=0) -> np.ndarray:
    """float32 (n, d): 8 Gaussian clusters."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((8, d)) * 3
    x = centers[rng.integers(0, 8, n)] + rng.standard_normal((n, d))
    return np.ascontiguousarray(x, dtype=np.float32)


FAST = dict(compression_factor=4, epochs=12, batch_size=64, lr=1e-2)


@pytest.mark.parametrize("cls", [MLPCompressor, VAECompressor])
def test_shapes_and_dtype(cls):
    x = blobs()
    model = cls(**{**FAST, "epochs": 1}).fit(x)
    y = model.transform(x[:37])
    assert y.shape == (37, 4) and y.dtype == np.float32 and y.flags.c_contiguous
    assert (model.d_in, model.d_out) == (16, 4)
    assert len(model.history) == 1


@pytest.mark.parametrize("cls", [MLPCompressor, VAECompressor])
def test_training_loss_decreases(cls):
    model = cls(**FAST).fit(blobs())
    first, last = model.history[0]["train_loss"], model.history[-1]["train_loss"]
    assert last < 0.8 * first, [h["train_loss"] for h in model.history]
    assert all(math.isfinite(h["val_loss"]) for h in model.history)


def test_vae_kl_hand_computed():
    # KL(N(mu, diag(s2)) || N(0, I)) = 0.5 sum(mu^2 + s2 - 1 - ln s2)
    # row 0: mu = (1, 0), s2 = (1, 2): 0.5 * (1 + 0 + (2 - 1 - ln 2)) = 1 - 0.5 ln 2
    # row 1: mu = 0, s2 = 1: 0
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]], dtype=torch.float64)
    kl = vae_kl(mu, logvar)
    assert kl.shape == (2,)
    assert kl[0].item() == pytest.approx(1.0 - 0.5 * math.log(2.0), abs=1e-12)
    assert kl[1].item() == 0.0


def test_vae_eval_loss_is_reconstruction_plus_weighted_kl():
    """Eval mode: z = mu, loss = mean(0.5 ||x' - dec(mu)||^2 + w KL), x' standardised."""
    x = blobs(n=32)
    net = VAENet(CompressorConfig(d_in=16))
    net.set_standardisation(x)
    net.eval()
    xt = torch.from_numpy(x)
    with torch.no_grad():
        mu, logvar = net.encode(xt)
        xs = (xt - xt.mean(0)) / xt.sub(xt.mean(0)).pow(2).mean().sqrt()
        rec = 0.5 * (net.decoder(mu) - xs).pow(2).sum(1)
        expected = (rec + 0.3 * vae_kl(mu, logvar)).mean().item()
        assert vae_loss(net, xt, kl_weight=0.3).item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("cls", [MLPCompressor, VAECompressor])
def test_transform_deterministic_and_seeded(cls):
    x = blobs()
    a = cls(**{**FAST, "epochs": 2}, seed=3).fit(x)
    b = cls(**{**FAST, "epochs": 2}, seed=3).fit(x)
    c = cls(**{**FAST, "epochs": 2}, seed=4).fit(x)
    ya = a.transform(x)
    np.testing.assert_array_equal(ya, a.transform(x))  # eval mode: no sampling, no BN update
    np.testing.assert_array_equal(ya, b.transform(x))  # same seed, same weights (CPU)
    assert not np.array_equal(ya, c.transform(x))
    # batching does not change the result
    np.testing.assert_allclose(ya, a.transform(x, batch_size=50), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [MLPCompressor, VAECompressor])
def test_bad_input(cls):
    x = blobs()
    with pytest.raises(ValueError, match="does not divide"):
        cls(**{**FAST, "epochs": 1}).fit(blobs(d=18))  # 4 does not divide 18
    with pytest.raises(ValueError, match="2-D"):
        cls(**{**FAST, "epochs": 1}).fit(x[0])
    with pytest.raises(RuntimeError, match="not fitted"):
        cls(**FAST).transform(x)
    model = cls(**{**FAST, "epochs": 1}).fit(x)
    with pytest.raises(ValueError, match="dimension 16"):
        model.transform(blobs(d=12))


def test_bad_settings():
    with pytest.raises(ValueError, match="kl_weight"):
        VAECompressor(kl_weight=-1.0)
    with pytest.raises(ValueError, match="input_scaling"):
        MLPCompressor(input_scaling="minmax")
    with pytest.raises(ValueError, match="INRP variant"):
        MLPCompressor(loss="cube")
    with pytest.raises(ValueError, match="empty hidden layer"):
        CompressorConfig(d_in=16, hidden_ratios=(0.01,))
    with pytest.raises(ValueError, match="identical"):
        VAECompressor(**FAST).fit(np.ones((64, 16), dtype=np.float32))


def test_mlp_shares_ccst_scaling():
    """The MLP's default scale normalisation is ccst.CCST's (so MLP vs CSST isolates the
    architecture); every mode trains."""
    from ccst import CCST

    assert MLPCompressor().input_scaling == CCST(compression_factor=4).input_scaling
    for scaling in ("output", "boundary", "none"):
        model = MLPCompressor(**FAST, input_scaling=scaling).fit(blobs())
        assert model.history[-1]["train_loss"] < model.history[0]["train_loss"], scaling


def test_custom_loss_nan_stops_training():
    """train(loss_fn=...) keeps the NaN stop of the INRP loop."""
    net = MLPNet(CompressorConfig(d_in=16))
    cfg = TrainConfig(epochs=2, batch_size=64)
    with pytest.raises(TrainingDiverged, match="epoch 1"):
        train(net, blobs(), 1.0, cfg, progress=False, loss_fn=lambda n, xb: n(xb).sum() * np.nan)


# -- Catalyst ------------------------------------------------------------------------------


def test_catalyst_compress_without_catalyzer(monkeypatch):
    monkeypatch.setitem(sys.modules, "catalyzer", None)  # `import catalyzer` now fails
    x = blobs(n=300)
    with pytest.raises(ModuleNotFoundError) as e:
        catalyst_compress(x, x[:20], 4, 0, {})
    assert e.value.name == "catalyzer"  # ccst.experiments.catalyze notes it and skips the rows


def test_catalyst_compress_unit_norm_outputs():
    pytest.importorskip("catalyzer")
    x = blobs(n=300)
    p = dict(hidden=32, epochs=2, n_val=60, n_val_queries=20, val_quantizer="none")
    xb_c, xq_c = catalyst_compress(x, x[:7], 4, 0, p)
    assert xb_c.shape == (300, 4) and xq_c.shape == (7, 4)
    np.testing.assert_allclose(np.linalg.norm(xq_c, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(xq_c, xb_c[:7], rtol=1e-5, atol=1e-6)
