"""`catalyzer encode` in bounded memory (issue 14 §4): the input is memory-mapped and encoded
block by block into a temporary memory-mapped array; the codes file equals the in-memory
encoding, and a failure leaves neither a codes file nor the temporary behind."""

import numpy as np
import pytest
from annrepro.vecio import write_vectors
from catalyzer import Catalyzer
from catalyzer import cli as cli_mod
from catalyzer.cli import main

N, D = 300, 8


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    x = np.random.default_rng(0).standard_normal((N, D)).astype(np.float32)
    np.save(root / "xt.npy", x)
    args = ["train", "--xt", str(root / "xt.npy"), "--out", str(root / "m.pt"), "--d-out", "8",
            "--hidden", "16", "--preset", "released", "--epochs", "1", "--batch-size", "32",
            "--n-val", "0", "--threads", "1"]  # fmt: skip
    assert main(args) == 0
    return root / "m.pt"


def _x(seed=1):
    return np.random.default_rng(seed).standard_normal((N, D)).astype(np.float32)


def _spy_blocks(monkeypatch, rows=64):
    """Encode in blocks of `rows`; returns the list of block lengths Catalyzer.encode got."""
    monkeypatch.setattr(cli_mod, "BLOCK_ROWS", rows)
    seen, encode = [], Catalyzer.encode

    def spy(self, x, quantizer="zn_79"):
        seen.append(len(x))
        return encode(self, x, quantizer)

    monkeypatch.setattr(Catalyzer, "encode", spy)
    return seen


@pytest.mark.parametrize("ext", [".fvecs", ".npy"])
@pytest.mark.parametrize("quantizer", ["zn_3", "sign"])
def test_blocks_give_the_in_memory_codes(model, tmp_path, monkeypatch, capsys, ext, quantizer):
    x = _x()
    src, out = tmp_path / f"x{ext}", tmp_path / "c.codes"
    write_vectors(src, x)
    want = Catalyzer.load(model).encode(x, quantizer)
    seen = _spy_blocks(monkeypatch, rows=64)
    argv = ["encode", "--model", str(model), "--x", str(src), "--out", str(out)]
    assert main([*argv, "--quantizer", quantizer]) == 0
    assert seen == [64, 64, 64, 64, 44]  # only blocks reach the network, never the whole input
    got = Catalyzer.load(model).load_codes(out, quantizer)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.codes", f"x{ext}"]
    assert f"{N} codes ({quantizer}" in capsys.readouterr().out


def test_an_interrupted_encode_leaves_no_file(model, tmp_path, monkeypatch):
    write_vectors(tmp_path / "x.npy", _x())
    seen = _spy_blocks(monkeypatch, rows=64)
    encode = Catalyzer.encode

    def interrupted(self, x, quantizer="zn_79"):
        if len(seen) == 3:
            raise KeyboardInterrupt
        return encode(self, x, quantizer)

    monkeypatch.setattr(Catalyzer, "encode", interrupted)
    out = tmp_path / "c.codes"
    argv = ["encode", "--model", str(model), "--x", str(tmp_path / "x.npy"), "--out", str(out)]
    with pytest.raises(KeyboardInterrupt):
        main([*argv, "--quantizer", "zn_3"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]  # no codes, no temporary


def test_a_bad_row_in_a_later_block_is_named_and_nothing_is_written(
    model, tmp_path, monkeypatch, capsys
):
    x = _x()
    x[200, 3] = np.nan
    rec = np.empty((N, D + 1), dtype="<f4")  # .fvecs bytes (write_vectors refuses NaN)
    rec[:, 0] = np.int32(D).view("<f4")
    rec[:, 1:] = x
    src, out = tmp_path / "x.fvecs", tmp_path / "c.codes"
    src.write_bytes(rec.tobytes())
    monkeypatch.setattr(cli_mod, "BLOCK_ROWS", 64)
    argv = ["encode", "--model", str(model), "--x", str(src), "--out", str(out)]
    assert main([*argv, "--quantizer", "zn_3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x.fvecs" in err[0] and "row 200 contains NaN or inf" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.fvecs"]
