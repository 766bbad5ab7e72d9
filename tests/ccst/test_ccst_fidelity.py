"""Fidelity to the paper / the released code: INRP loss form (Eq. 4) and the degenerate case
CSST == SRP (the normalisation switch: test_ccst_norm.py; the units of the table rows:
test_experiments.py)."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from annrepro.groundtruth import knn_exact
from annrepro.metrics import one_recall_at
from annrepro.tables.spec import load_spec
from ccst.api import CCST
from ccst.baselines import MLPCompressor
from ccst.cli import main
from ccst.losses import inrp_loss
from ccst.model import CCSTConfig, CCSTNet
from ccst.srp import srp_matrix, srp_project
from ccst.train import TrainConfig

pytestmark = pytest.mark.usefixtures("warm_torch_optim")

SPECS = Path(__file__).resolve().parents[2] / "paper_tables" / "ccst"
TABLES = ("table1", "table2", "table3", "table4", "table5")


def _blobs(n=120, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((6, d)) * 3.0
    x = centers[rng.integers(0, 6, n)] + rng.standard_normal((n, d))
    return np.ascontiguousarray(x, dtype=np.float32)


# -- item 1: Eq. 4 takes the absolute difference of the two distances -------------------------


def test_default_inrp_loss_is_the_absolute_difference():
    """Eq. 4's outer norm is of a scalar: |d_out - d_in| (the released code: sqrt((x-y)^2)).
    1-D points 0, 0.1, 1, 3 mapped to 0, 0.1, 0.5, 3.5, boundary 2: the unordered pairs with an
    error are (0,2) d_in 1 err 0.5 w ln 2; (1,2) d_in 0.9 err 0.5 w -ln 0.45; (0,3), (1,3)
    err 0.5 w beta; (2,3) err 1 w beta; each pair counts twice over m^2 = 16."""
    x = torch.tensor([[0.0], [0.1], [1.0], [3.0]])
    fx = torch.tensor([[0.0], [0.1], [0.5], [3.5]])
    w02, w12 = math.log(2.0), -math.log(0.45)
    absolute = 2 * (w02 * 0.5 + w12 * 0.5 + 0.01 * 0.5 * 2 + 0.01 * 1.0) / 16
    squared = 2 * (w02 * 0.25 + w12 * 0.25 + 0.01 * 0.25 * 2 + 0.01 * 1.0) / 16
    assert float(inrp_loss(fx, x, boundary=2.0)) == pytest.approx(absolute, rel=1e-5)
    assert float(inrp_loss(fx, x, 2.0, variant="squared")) == pytest.approx(squared, rel=1e-5)
    assert TrainConfig().loss == "abs"
    assert CCST().train_config.loss == "abs"
    assert MLPCompressor().train_config.loss == "abs"


def test_cli_trains_with_the_absolute_loss_by_default(tmp_path):
    xt = tmp_path / "xt.npy"
    np.save(xt, _blobs(40))
    args = ["--factor", "4", "--depths", "1", "--heads", "2", "--epochs", "1", "--batch-size", "16"]
    assert main(["train", str(xt), str(tmp_path / "m.pt"), *args]) == 0
    assert CCST.load(tmp_path / "m.pt").train_config.loss == "abs"
    assert main(["train", str(xt), str(tmp_path / "s.pt"), *args, "--loss", "squared"]) == 0
    assert CCST.load(tmp_path / "s.pt").train_config.loss == "squared"


@pytest.mark.parametrize("table", TABLES)
def test_every_spec_resolves_to_the_absolute_loss(table):
    spec = load_spec(SPECS / f"{table}.toml")
    for scale in spec.scales:
        params = spec.params_for(scale)
        assert params["ccst_loss"] == "abs", scale
        assert params.get("mlp_loss", "abs") == "abs", scale


# -- item 2: every ccst column reaches the report in its own unit: test_experiments.py -----


# -- item 3: the network's normalisation (CCSTConfig.norm): tests/ccst/test_ccst_norm.py -----


# -- item 4: no transformer stages + frozen SRP projections == SRP -----------------------------


def _degenerate(**kw):
    # norm="none": the released batch norm after the projection would rescale each coordinate
    kw.setdefault("norm", "none")
    return CCST(
        compression_factor=4,
        n_tokens=1,
        depths=(),
        readout="token_mean",
        freeze_projection=True,
        heads=2,
        epochs=2,
        batch_size=32,
        progress=False,
        **kw,
    )


def test_csst_without_stages_and_frozen_projection_equals_srp():
    xt = _blobs(200, d=32)
    w = srp_matrix(32, 8, seed=0)  # Table 5's SRP row at seed 0
    model = _degenerate(input_scaling="none").fit(xt)
    np.testing.assert_allclose(model.transform(xt), srp_project(xt, w), rtol=1e-5, atol=1e-5)
    assert torch.equal(
        model.net.net.projection.weight, torch.from_numpy(CCSTNet.srp_init(model.config))
    )
    # with the released batch norm after the projection it is no longer the SRP (ccst.model)
    released = _degenerate(input_scaling="none", norm="released").fit(xt)
    assert not np.allclose(released.transform(xt), srp_project(xt, w), rtol=1e-3, atol=1e-3)


def test_degenerate_csst_search_equals_srp_search_with_output_scaling():
    """With the default output scaling f = c * SRP (c > 0): the same neighbours as SRP, as the
    Table 5 rows score them (ties aside: distances agree up to c^2)."""
    xb, xq = _blobs(300, d=32, seed=1), _blobs(30, d=32, seed=2)
    _, gt = knn_exact(xq, xb, 10, "l2")
    w = srp_matrix(32, 8, seed=0)
    D_s, I_s = knn_exact(srp_project(xq, w), srp_project(xb, w), 10, "l2")
    model = _degenerate().fit(xb)
    c = float(model.net.out_scale)
    D_c, I_c = knn_exact(model.transform(xq), model.transform(xb), 10, "l2")
    np.testing.assert_allclose(D_c, c * c * D_s, rtol=1e-4, atol=1e-4)
    for k in (1, 5, 10):
        assert one_recall_at(I_c, gt, k) == one_recall_at(I_s, gt, k)


def test_degenerate_switches_default_to_the_paper():
    cfg = CCSTConfig(d_in=16, compression_factor=4, heads=2)
    assert (cfg.readout, cfg.freeze_projection, cfg.norm) == ("compression", False, "released")
    with pytest.raises(ValueError, match="readout"):
        CCSTConfig(d_in=16, compression_factor=4, heads=2, readout="max")
