"""The device option of KDindex (issue 12 step 4), tested without a GPU: `device="cpu"` given
explicitly through the API and `kdindex train` gives the default's index, and a device torch
does not have is one line (SettingError; `kdindex: error: --device ...`, exit 2)."""

import numpy as np
import pytest
import torch
from annrepro.errors import SettingError
from annrepro.groundtruth import knn_exact
from annrepro.vecio import write_vectors
from kdindex.api import KDIndex
from kdindex.cli import main
from kdindex.train import TrainConfig

NO_CUDA = pytest.mark.skipif(
    torch.cuda.is_available(), reason="CUDA is available: the error is for machines without it"
)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((300, 8)).astype(np.float32)
    xt = rng.standard_normal((80, 8)).astype(np.float32)
    return xb, xt, knn_exact(xt, xb, 10, "l2")[1]


@pytest.mark.parametrize(
    "kind, loss", [("PQ", "distribution"), ("AQ", "weighted_kl"), ("OPQ", "lambdarank")]
)
def test_explicit_cpu_gives_the_default_index(kind, loss):
    xb, xt, labels = _data()
    cfg = TrainConfig(loss=loss, epochs=1, init_max_rounds=1, progress=False)
    kw = dict(B=2, W=16, K=10, config=cfg, n_warm=300)
    a = KDIndex(kind, "l2", **kw).fit(xb, xt, labels=labels)
    b = KDIndex(kind, "l2", **kw, device="cpu").fit(xb, xt, labels=labels)
    assert b.device == "cpu"
    assert np.array_equal(a.codes, b.codes)
    assert np.array_equal(a.quantizer.codebooks, b.quantizer.codebooks)
    np.testing.assert_equal(a.result.curve, b.result.curve)  # NaN == NaN (epoch -1 loss)
    assert np.array_equal(a.encode(xt), b.encode(xt))


def test_cli_device_cpu_is_the_default(tmp_path):
    xb, xt, labels = _data()
    for name, x in (("xb", xb), ("xt", xt)):
        write_vectors(tmp_path / f"{name}.fvecs", x)
    np.save(tmp_path / "labels.npy", labels)
    saved = []
    for extra in ([], ["--device", "cpu"]):
        out = tmp_path / f"kd{len(extra)}.npz"
        args = ["train", "--xb", str(tmp_path / "xb.fvecs"), "--xt", str(tmp_path / "xt.fvecs"),
                "--labels", str(tmp_path / "labels.npy"), "--out", str(out), "--kind", "PQ",
                "-B", "2", "-W", "16", "--epochs", "1", "--init-rounds", "1", "--n-warm", "300",
                *extra]  # fmt: skip
        assert main(args) == 0
        with np.load(out) as z:
            saved.append((z["codes"], z["codebooks"]))
    assert all(np.array_equal(u, v) for u, v in zip(*saved, strict=True))


@NO_CUDA
def test_cuda_without_cuda_is_one_line(tmp_path, capsys):
    with pytest.raises(SettingError, match=r"torch\.cuda\.is_available\(\) is False"):
        KDIndex("PQ", "l2", B=2, W=16, device="cuda")
    out = tmp_path / "kd.npz"
    rc = main(["train", "--xb", "no.fvecs", "--xt", "no.fvecs", "--labels", "no.npy",
               "--out", str(out), "--device", "cuda"])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and not out.exists()
    assert err[0].startswith("kdindex: error: --device cuda: torch.cuda.is_available() is False")
