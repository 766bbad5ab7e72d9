"""The device option of the catalyzer (issue 12 step 4), tested without a GPU: `device="cpu"`
given explicitly through the API and every CLI command gives the default's numbers, and a
device torch does not have is one line (SettingError, `catalyzer: error: ...`, exit 2)."""

import numpy as np
import pytest
import torch
from annrepro.errors import SettingError
from catalyzer import Catalyzer
from catalyzer.cli import main
from catalyzer.train import TrainConfig, train_catalyzer

NO_CUDA = pytest.mark.skipif(
    torch.cuda.is_available(), reason="CUDA is available: the error is for machines without it"
)
KW = dict(d_out=8, hidden=16, preset="released", epochs=2, batch_size=32, n_val=60)
KW.update(n_val_queries=20, val_quantizer="zn_3")


def _x(n=300, d=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].device.type == "cpu" and b[k].device.type == "cpu"
        assert torch.equal(a[k], b[k]), k


def test_explicit_cpu_gives_the_default_numbers(tmp_path):
    x = _x()
    default = Catalyzer(**KW).fit(x)
    cpu = Catalyzer(**KW, device="cpu").fit(x, checkpoint_dir=tmp_path)
    assert cpu.device == "cpu"
    _same_state(default.result.state_dict, cpu.result.state_dict)
    assert default.result.history[-1]["loss"] == cpu.result.history[-1]["loss"]
    assert default.result.best_score == cpu.result.best_score
    assert np.array_equal(default.transform(x), cpu.transform(x))
    assert np.array_equal(default.encode(x, "zn_3"), cpu.to("cpu").encode(x, "zn_3"))
    assert torch.load(tmp_path / "last.pt", weights_only=True)["device"] == "cpu"


def test_train_catalyzer_on_cpu_keeps_cpu_states():
    cfg = TrainConfig.preset("released", **{k: v for k, v in KW.items() if k != "preset"})
    a, b = train_catalyzer(_x(), cfg), train_catalyzer(_x(), cfg, device="cpu")
    _same_state(a.state_dict, b.state_dict)


def _train_cli(tmp_path, *extra):
    out = tmp_path / f"m{len(extra)}.pt"
    args = ["train", "--xt", str(tmp_path / "x.npy"), "--out", str(out), "--d-out", "8",
            "--hidden", "16", "--preset", "released", "--epochs", "1", "--batch-size", "32",
            "--n-val", "0", "--threads", "1", *extra]  # fmt: skip
    assert main(args) == 0
    return out


def test_cli_device_cpu_is_the_default(tmp_path):
    np.save(tmp_path / "x.npy", _x())
    m0, m1 = _train_cli(tmp_path), _train_cli(tmp_path, "--device", "cpu")
    _same_state(
        torch.load(m0, weights_only=True)["state_dict"],
        torch.load(m1, weights_only=True)["state_dict"],
    )
    codes = []
    for extra in ([], ["--device", "cpu"]):
        out = tmp_path / f"c{len(extra)}.codes"
        rc = main(["encode", "--model", str(m0), "--x", str(tmp_path / "x.npy"),
                   "--out", str(out), "--quantizer", "zn_3", *extra])  # fmt: skip
        assert rc == 0
        with np.load(out) as f:
            codes.append(f["codes"])
    assert np.array_equal(*codes)
    ids = []
    for extra in ([], ["--device", "cpu"]):
        out = tmp_path / f"I{len(extra)}.npy"
        rc = main(["search", "--model", str(m0), "--codes", str(tmp_path / "c0.codes"),
                   "--xq", str(tmp_path / "x.npy"), "--k", "3", "--quantizer", "zn_3",
                   "--out", str(out), *extra])  # fmt: skip
        assert rc == 0
        ids.append(np.load(out))
    assert np.array_equal(*ids)


@NO_CUDA
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_one_line_in_the_api(device):
    cfg = TrainConfig.preset("released", **{k: v for k, v in KW.items() if k != "preset"})
    msg = r"torch\.cuda\.is_available\(\) is False"
    with pytest.raises(SettingError, match=msg):
        Catalyzer(**KW, device=device)
    with pytest.raises(SettingError, match=msg):
        train_catalyzer(_x(), cfg, device=device)
    cat = Catalyzer(**KW)
    with pytest.raises(SettingError, match=msg):
        cat.to(device)
    assert cat.device == "cpu"


@NO_CUDA
def test_cuda_without_cuda_is_one_line_on_the_command_line(tmp_path, capsys):
    np.save(tmp_path / "x.npy", _x())
    model = _train_cli(tmp_path)
    x = str(tmp_path / "x.npy")
    assert main(["encode", "--model", str(model), "--x", x, "--out", str(tmp_path / "c.codes"),
                 "--quantizer", "zn_3"]) == 0  # fmt: skip
    capsys.readouterr()
    commands = {
        "train": ["train", "--xt", x, "--out", str(tmp_path / "new.pt")],
        "encode": ["encode", "--model", str(model), "--x", x, "--out", str(tmp_path / "n.codes")],
        "search": ["search", "--model", str(model), "--codes", str(tmp_path / "c.codes"),
                   "--xq", x, "--out", str(tmp_path / "I.npy"), "--quantizer", "zn_3"],
    }  # fmt: skip
    for name, args in commands.items():
        assert main([*args, "--device", "cuda"]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, (name, err)
        assert err[0].startswith("catalyzer: error: --device cuda: torch.cuda.is_available() is")
    assert not any((tmp_path / n).exists() for n in ("new.pt", "n.codes", "I.npy"))
