"""`ccst compress` in bounded memory (issue 14 §4): the memory-mapped input is compressed block
by block and each block appended to the output (annrepro.vecio.VectorWriter); the file equals
the in-memory transform in every float format, and a failure leaves no file at the target."""

import numpy as np
import pytest
from annrepro.vecio import VectorWriter, read_vectors, write_vectors
from ccst import CCST
from ccst import cli as cli_mod
from ccst.cli import main
from ccst.errors import DataError

pytestmark = pytest.mark.usefixtures("warm_torch_optim")

N, D = 60, 16
CLI_TINY = ["--factor", "4", "--depths", "1", "--heads", "2", "--epochs", "1", "--batch-size", "16"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    np.save(root / "xt.npy", _x(seed=0))
    assert main(["train", str(root / "xt.npy"), str(root / "m.pt"), *CLI_TINY]) == 0
    return root / "m.pt"


def _x(seed=1, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((N, D)).astype(dtype)


def _spy_writes(monkeypatch, rows=16):
    """Compress in blocks of `rows`; returns the lengths of the blocks the writer got."""
    monkeypatch.setattr(cli_mod, "BLOCK_ROWS", rows)
    seen, write = [], VectorWriter.write

    def spy(self, x):
        seen.append(len(x))
        return write(self, x)

    monkeypatch.setattr(VectorWriter, "write", spy)
    return seen


@pytest.mark.parametrize("ext", [".fvecs", ".fbin", ".npy"])
def test_blocks_give_the_in_memory_transform(model, tmp_path, monkeypatch, capsys, ext):
    x = _x()
    src, out = tmp_path / "x.fvecs", tmp_path / f"y{ext}"
    write_vectors(src, x)
    m = CCST.load(model)
    whole = m.transform(x)
    blocks = np.concatenate([m.transform(x[i : i + 16]) for i in range(0, N, 16)])
    seen = _spy_writes(monkeypatch, rows=16)
    assert main(["compress", str(model), str(src), str(out)]) == 0
    assert seen == [16, 16, 16, 12]  # only blocks are materialised, never the whole output
    y = read_vectors(out)
    assert y.dtype == np.float32 and y.shape == (N, m.d_out)
    np.testing.assert_array_equal(y, blocks)  # what was computed is what is in the file
    # rows are independent (eval mode); allow for a BLAS kernel that sums another way per batch
    np.testing.assert_allclose(y, whole, rtol=1e-6, atol=1e-7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.fvecs", f"y{ext}"]
    assert f"compressed {N} vectors" in capsys.readouterr().out


def test_an_interrupted_compress_keeps_the_previous_output(model, tmp_path, monkeypatch):
    src, out = tmp_path / "x.npy", tmp_path / "y.fvecs"
    np.save(src, _x())
    write_vectors(out, np.ones((2, 4), dtype=np.float32))  # an older result
    before = out.read_bytes()
    seen = _spy_writes(monkeypatch, rows=16)
    transform = CCST.transform

    def interrupted(self, x, *a, **kw):
        if len(seen) == 2:
            raise KeyboardInterrupt
        return transform(self, x, *a, **kw)

    monkeypatch.setattr(CCST, "transform", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["compress", str(model), str(src), str(out)])
    assert seen == [16, 16] and out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy", "y.fvecs"]  # no temporary


def test_rows_of_a_later_block_are_named_from_the_file_start(model, tmp_path, monkeypatch, capsys):
    x = _x(dtype=np.float64)
    x[37, 2] = np.nan
    src, out = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(src, x)
    monkeypatch.setattr(cli_mod, "BLOCK_ROWS", 16)
    assert main(["compress", str(model), str(src), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"ccst: error: {src}: row 37 contains NaN or inf"
    # the other row-numbered DataError, a compressed vector that is not finite
    np.save(src, _x())
    transform = CCST.transform

    def diverging(self, xb, *a, **kw):
        if xb.shape[0] == 16 and np.array_equal(xb, _x()[32:48]):
            raise DataError("input vectors", "row 3: its compressed vector is not finite")
        return transform(self, xb, *a, **kw)

    monkeypatch.setattr(CCST, "transform", diverging)
    assert main(["compress", str(model), str(src), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"ccst: error: {src}: row 35: its compressed vector is not finite"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_an_integer_output_format_is_refused_without_a_file(model, tmp_path, capsys):
    src, out = tmp_path / "x.npy", tmp_path / "y.ivecs"
    np.save(src, _x())
    assert main(["compress", str(model), str(src), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "y.ivecs" in err[-1] and "values do not fit int32" in err[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]
