"""The device option of CCST (issue 12 step 4), tested without a GPU: `device="cpu"` given
explicitly through the API and the CLI gives the default's numbers, and a device torch does not
have is one line (SettingError; `ccst: error: --device ...`, exit 2), not torch's traceback and
not a "damaged model file"."""

import numpy as np
import pytest
import torch
from annrepro.errors import SettingError
from annrepro.vecio import read_vectors
from ccst import CCST
from ccst.baselines import MLPCompressor
from ccst.cli import main
from ccst.model import CCSTConfig, CCSTNet
from ccst.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("warm_torch_optim")

NO_CUDA = pytest.mark.skipif(
    torch.cuda.is_available(), reason="CUDA is available: the error is for machines without it"
)
TINY = dict(compression_factor=4, depths=(1,), heads=2, epochs=2, batch_size=16, progress=False)
CLI_TINY = ["--factor", "4", "--depths", "1", "--heads", "2", "--epochs", "1", "--batch-size", "16"]


def _x(n=60, d=16, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_explicit_cpu_gives_the_default_numbers():
    x = _x()
    a, b = CCST(**TINY).fit(x), CCST(**TINY, device="cpu").fit(x)
    assert a.history == b.history
    for (k, va), vb in zip(a.net.state_dict().items(), b.net.state_dict().values(), strict=True):
        assert vb.device.type == "cpu" and torch.equal(va, vb), k
    assert np.array_equal(a.transform(x), b.transform(x))


def test_cli_device_cpu_is_the_default(tmp_path):
    np.save(tmp_path / "x.npy", _x())
    outs = []
    for extra in ([], ["--device", "cpu"]):
        m = tmp_path / f"m{len(extra)}.pt"
        assert main(["train", str(tmp_path / "x.npy"), str(m), *CLI_TINY, *extra]) == 0
        y = tmp_path / f"y{len(extra)}.npy"
        assert main(["compress", str(tmp_path / "m0.pt"), str(tmp_path / "x.npy"), str(y),
                     *extra]) == 0  # fmt: skip
        outs.append((torch.load(m, weights_only=True)["state_dict"], read_vectors(y)))
    (s0, y0), (s1, y1) = outs
    assert all(torch.equal(s0[k], s1[k]) for k in s0)
    assert np.array_equal(y0, y1)


@NO_CUDA
def test_cuda_without_cuda_is_one_line_in_the_api(tmp_path):
    msg = r"torch\.cuda\.is_available\(\) is False"
    with pytest.raises(SettingError, match=msg):
        CCST(**TINY, device="cuda")
    with pytest.raises(SettingError, match=msg):
        MLPCompressor(device="cuda:0")
    path = tmp_path / "m.pt"
    CCST(**TINY).fit(_x()).save(path)
    with pytest.raises(SettingError, match=msg):  # not a ModelFileError: the file is fine
        CCST.load(path, device="cuda")
    net = CCSTNet(CCSTConfig(d_in=16, compression_factor=4, depths=(1,), heads=2))
    with pytest.raises(SettingError, match=msg):
        train(net, _x(), 1.0, TrainConfig(epochs=1, batch_size=16), device="cuda", progress=False)


@NO_CUDA
def test_cuda_without_cuda_is_one_line_on_the_command_line(tmp_path, capsys):
    x = tmp_path / "x.npy"
    np.save(x, _x())
    model = tmp_path / "m.pt"
    assert main(["train", str(x), str(model), *CLI_TINY]) == 0
    assert main(["index", "--model", str(model), "--base", str(x), "--kind", "HNSW8",
                 "--out", str(tmp_path / "i.faiss"), "--search-at", "compressed"]) == 0  # fmt: skip
    capsys.readouterr()
    commands = {
        "train": ["train", str(x), str(tmp_path / "new.pt"), *CLI_TINY],
        "compress": ["compress", str(model), str(x), str(tmp_path / "y.npy")],
        "index": ["index", "--model", str(model), "--base", str(x), "--out",
                  str(tmp_path / "j.faiss")],
        "search": ["search", "--index", str(tmp_path / "i.faiss"), "--queries", str(x),
                   "--model", str(model), "--out", str(tmp_path / "I.npy")],
    }  # fmt: skip
    for name, args in commands.items():
        assert main([*args, "--device", "cuda"]) == 2, name
        err = [ln for ln in capsys.readouterr().err.splitlines() if "thread(s)" not in ln]
        assert len(err) == 1, (name, err)
        assert err[0].startswith("ccst: error: --device cuda: torch.cuda.is_available() is")
    assert not any((tmp_path / n).exists() for n in ("new.pt", "y.npy", "j.faiss", "I.npy"))
