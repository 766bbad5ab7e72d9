"""Normalisation of the CCST network (`CCSTConfig.norm`): the released code's batch norms by
default, our earlier pre-norm LayerNorm and none as options; train / eval behaviour of the batch
norms; old model files load with the normalisation they were trained with."""

from pathlib import Path

import numpy as np
import pytest
import torch
from annrepro.tables.spec import load_spec
from ccst.api import CCST
from ccst.cli import main
from ccst.model import NORMS, CCSTConfig, CCSTNet
from ccst.train import split_train_val

pytestmark = pytest.mark.usefixtures("warm_torch_optim")

SPECS = Path(__file__).resolve().parents[2] / "paper_tables" / "ccst"
TABLES = ("table1", "table2", "table3", "table4", "table5")
KW = dict(compression_factor=4, depths=(1,), heads=2, epochs=1, batch_size=16, progress=False)


def _blobs(n=120, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((6, d)) * 3.0
    x = centers[rng.integers(0, 6, n)] + rng.standard_normal((n, d))
    return np.ascontiguousarray(x, dtype=np.float32)


def _count(net, kind):
    return sum(isinstance(m, kind) for m in net.modules())


def _net(**kw):
    return CCSTNet(CCSTConfig(d_in=16, compression_factor=4, depths=(1,), heads=2, **kw))


# -- the default is the released code's normalisation ------------------------------------------


def test_default_norm_is_the_released_batch_norm():
    assert NORMS == ("released", "layernorm", "none")
    assert CCSTConfig(d_in=16, compression_factor=4, heads=2).norm == "released"
    assert CCST().arch["norm"] == "released"
    released, ln, none = _net(), _net(norm="layernorm"), _net(norm="none")
    # released: projection BN, q / k / v / attention-output BN, MLP output BN (one encoder),
    # and the two BNs all three have (compression module, MLP's Linear-ABN); no LayerNorm
    assert (_count(released, torch.nn.BatchNorm1d), _count(released, torch.nn.LayerNorm)) == (8, 0)
    assert (_count(ln, torch.nn.BatchNorm1d), _count(ln, torch.nn.LayerNorm)) == (2, 2)
    assert (_count(none, torch.nn.BatchNorm1d), _count(none, torch.nn.LayerNorm)) == (2, 0)
    # the released code starts each attention branch at zero (output BN weight 0)
    assert torch.count_nonzero(released.stages[0][0].attn.proj_bn.weight) == 0
    with pytest.raises(ValueError, match="unknown norm 'batch'"):
        CCSTConfig(d_in=16, compression_factor=4, heads=2, norm="batch")


def test_released_norm_standardises_the_projection_tokens_and_queries():
    """In train mode the projection tokens reach the encoders standardised per coordinate over
    the batch (BatchNorm1d after the projection), and the queries per channel over the batch
    and the tokens (the released Linear-BN q/k/v maps)."""
    net = _net().train()
    seen = {}
    net.stages[0].register_forward_pre_hook(lambda m, args: seen.update(z=args[0]))
    q = net.stages[0][0].attn.q
    q.register_forward_hook(lambda m, args, out: seen.update(q=out))
    x = torch.from_numpy(_blobs(64)) * 50.0  # far from unit scale
    with torch.no_grad():
        net(x)
    tokens = seen["z"][:, 1:].reshape(64, -1)  # (B, n * d_out)
    torch.testing.assert_close(tokens.mean(0), torch.zeros(tokens.shape[1]), atol=1e-4, rtol=0)
    with torch.no_grad():  # a sparse SRP column may be all zero: a constant coordinate stays 0
        alive = net.projection(x).var(0) > 0
    var = tokens.var(0, unbiased=False)
    assert alive.sum() > 40
    torch.testing.assert_close(var[alive], torch.ones(int(alive.sum())), atol=1e-3, rtol=0)
    qf = seen["q"].reshape(-1, seen["q"].shape[-1])
    torch.testing.assert_close(qf.mean(0), torch.zeros(qf.shape[1]), atol=1e-4, rtol=0)
    # without the batch norms the tokens keep the data's scale
    net = _net(norm="none").train()
    net.stages[0].register_forward_pre_hook(lambda m, args: seen.update(z=args[0]))
    with torch.no_grad():
        net(x)
    assert float(seen["z"][:, 1:].std()) > 10.0


# -- train / eval behaviour --------------------------------------------------------------------


def test_training_runs_in_train_mode_and_transform_in_eval_mode():
    """The running statistics count exactly the training steps (train mode; neither the output
    scale fit, the validation loss nor transform touches them); transform is deterministic,
    batch-size independent and works on a single vector."""
    xt = _blobs(120)
    model = CCST(**{**KW, "epochs": 2}).fit(xt)
    n_train = len(split_train_val(120, model.train_config.val_fraction, 0)[0])
    steps = 2 * (n_train // 16 + (n_train % 16 >= 2))  # a last batch of one vector is skipped
    bn = model.net.net.projection_bn
    assert int(bn.num_batches_tracked) == steps
    state = {k: v.clone() for k, v in model.net.state_dict().items()}
    y = model.transform(xt)
    assert not model.net.training
    assert all(torch.equal(v, model.net.state_dict()[k]) for k, v in state.items())
    np.testing.assert_array_equal(model.transform(xt), y)
    chunks = np.concatenate([model.transform(xt[i : i + 7]) for i in range(0, 120, 7)])
    np.testing.assert_allclose(chunks, y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.transform(xt, batch_size=1), y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.transform(xt[5:6]), y[5:6], rtol=1e-5, atol=1e-5)


# -- persistence and old files ------------------------------------------------------------------


def test_norm_round_trips_and_old_files_load_with_their_normalisation(tmp_path):
    xt = _blobs(60)
    models = {}
    for norm in NORMS:
        model = CCST(**KW, norm=norm).fit(xt)
        model.save(tmp_path / f"{norm}.pt")
        back = CCST.load(tmp_path / f"{norm}.pt")
        assert back.config.norm == norm
        np.testing.assert_array_equal(back.transform(xt), model.transform(xt))
        models[norm] = model
    # format 3 (CCSTConfig.pre_norm): pre_norm True = the LayerNorms, False = no normalisation
    for norm, pre_norm in (("layernorm", True), ("none", False)):
        state = torch.load(tmp_path / f"{norm}.pt", weights_only=True)
        state["format_version"] = 3
        state["model_config"]["pre_norm"] = pre_norm
        del state["model_config"]["norm"]
        torch.save(state, tmp_path / "v3.pt")
        old = CCST.load(tmp_path / "v3.pt")
        assert old.config.norm == norm
        np.testing.assert_array_equal(old.transform(xt), models[norm].transform(xt))
        # format <= 2 (no switch at all): trained with the LayerNorms
        if pre_norm:
            state["format_version"] = 2
            del state["model_config"]["pre_norm"]
            torch.save(state, tmp_path / "v2.pt")
            assert CCST.load(tmp_path / "v2.pt").config.norm == "layernorm"


def test_pre_norm_is_an_alias():
    assert CCST(pre_norm=True).arch["norm"] == "layernorm"
    assert CCST(pre_norm=False).arch["norm"] == "none"  # what pre_norm=False trained
    with pytest.raises(ValueError, match="pre_norm"):
        CCST(pre_norm=True, norm="none")


def test_cli_norm_option(tmp_path):
    xt = tmp_path / "xt.npy"
    np.save(xt, _blobs(40))
    args = ["--factor", "4", "--depths", "1", "--heads", "2", "--epochs", "1", "--batch-size", "16"]
    for extra, norm in (
        ([], "released"),
        (["--norm", "none"], "none"),
        (["--pre-norm"], "layernorm"),
    ):
        assert main(["train", str(xt), str(tmp_path / "m.pt"), *args, *extra]) == 0
        assert CCST.load(tmp_path / "m.pt").config.norm == norm


# -- the specs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("table", TABLES)
def test_every_spec_resolves_to_the_released_norm(table):
    spec = load_spec(SPECS / f"{table}.toml")
    for scale in spec.scales:
        params = spec.params_for(scale)
        assert params["ccst_norm"] == "released", scale
        assert "ccst_pre_norm" not in params, scale
    assert "ccst_norm" in spec.notes
