"""`catalyzer reproduce` forwards to `annrepro reproduce --tables 'catalyzer.*'`."""

import annrepro.cli
from catalyzer.cli import main


def test_reproduce_forwards_to_annrepro(monkeypatch):
    seen = []
    monkeypatch.setattr(annrepro.cli, "main", lambda argv: seen.append(argv) or 0)
    assert main(["reproduce", "--scale", "tiny"]) == 0
    assert seen == [["reproduce", "--tables", "catalyzer.*", "--scale", "tiny"]]


def test_usage_and_unknown_command(capsys):
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "catalyzer reproduce" in capsys.readouterr().out
    assert main(["bogus"]) == 2
    assert "unknown command" in capsys.readouterr().err


# ----------------------------------------------------------- encode / search: files and mismatches
def _train_model(tmp_path, d_out=8, seed=0, name="m.pt"):
    import numpy as np

    x = np.random.default_rng(seed).standard_normal((300, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    model = tmp_path / name
    args = ["train", "--xt", str(tmp_path / "x.npy"), "--out", str(model), "--d-out", str(d_out),
            "--hidden", "16", "--preset", "released", "--epochs", "1", "--batch-size", "32",
            "--n-val", "0", "--seed", str(seed), "--threads", "1"]  # fmt: skip
    assert main(args) == 0
    return model


def test_encode_writes_where_asked_and_says_so(tmp_path, capsys):
    model = _train_model(tmp_path)
    out = tmp_path / "o" / "c.codes"
    rc = main(["encode", "--model", str(model), "--x", str(tmp_path / "x.npy"), "--out", str(out),
               "--quantizer", "zn_3"])  # fmt: skip
    assert rc == 0
    assert out.is_file() and not (tmp_path / "o" / "c.codes.npy").exists()
    assert capsys.readouterr().out.strip().endswith(str(out))


def test_search_refuses_codes_of_another_quantizer_model_or_shape(tmp_path, capsys):
    import numpy as np

    model = _train_model(tmp_path)
    other = _train_model(tmp_path, seed=1, name="other.pt")
    x = str(tmp_path / "x.npy")

    def encode(m, q, out):
        assert (
            main(["encode", "--model", str(m), "--x", x, "--out", str(out), "--quantizer", q]) == 0
        )

    def search(codes, q="zn_3", m=model):
        capsys.readouterr()
        rc = main(["search", "--model", str(m), "--codes", str(codes), "--xq", x, "--k", "3",
                   "--quantizer", q, "--out", str(tmp_path / "I.npy")])  # fmt: skip
        return rc, capsys.readouterr().err

    encode(model, "zn_3", tmp_path / "zn.codes")
    encode(model, "sign", tmp_path / "sign.codes")
    assert search(tmp_path / "zn.codes")[0] == 0
    rc, err = search(tmp_path / "sign.codes", q="zn_3")  # sign codes, lattice search
    assert rc == 2 and "sign" in err and "zn_3" in err
    rc, err = search(tmp_path / "zn.codes", m=other)  # another model's codes
    assert rc == 2 and "another model" in err
    np.save(tmp_path / "f.npy", np.zeros(300, dtype=np.float32))  # a float array
    rc, err = search(tmp_path / "f.npy")
    assert rc == 2 and "uint64" in err
    np.save(tmp_path / "2d.npy", np.zeros((300, 2), dtype=np.uint64))  # a 2-D array
    rc, err = search(tmp_path / "2d.npy")
    assert rc == 2 and "uint64" in err


def test_train_names_n_val_when_the_learn_set_is_too_small(tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "x.npy", np.zeros((4500, 8), dtype=np.float32))
    rc = main(["train", "--xt", str(tmp_path / "x.npy"), "--out", str(tmp_path / "m.pt"),
               "--epochs", "1", "--threads", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "--n-val" in err and "10000" in err and "-5500" not in err


def test_damaged_model_file_is_one_line(tmp_path, capsys):
    import numpy as np
    from annrepro.vecio import write_vectors

    for name, data in (("cut.pt", b"PK\x03\x04 truncated"), ("empty.pt", b"")):
        (tmp_path / name).write_bytes(data)
        x = tmp_path / "x.fvecs"
        write_vectors(x, np.ones((4, 8), np.float32))
        args = ["encode", "--model", str(tmp_path / name), "--x", str(x)]
        assert main(args + ["--out", str(tmp_path / "c.npz")]) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if "thread" not in ln]
        assert len(err) == 1 and name in err[0] and "Traceback" not in err[0]


def test_encode_on_dask_gives_the_single_process_codes(tmp_path, capsys):
    """`catalyzer encode --engine dask`: shards on 2 local workers read back as the same codes."""
    import numpy as np
    import pytest

    pytest.importorskip("distributed")
    from annrepro.distributed import read_shards
    from catalyzer import Catalyzer

    model = _train_model(tmp_path)
    x = tmp_path / "x.npy"
    argv = ["encode", "--model", str(model), "--x", str(x), "--quantizer", "zn_3"]
    dask = ["--engine", "dask", "--workers", "2", "--shard-rows", "64"]
    assert main(argv + ["--out", str(tmp_path / "shards"), *dask]) == 0
    want = Catalyzer.load(model).encode(np.load(x), "zn_3")
    np.testing.assert_array_equal(read_shards(tmp_path / "shards"), want)
    assert "shards in" in capsys.readouterr().out


def test_search_writes_the_format_its_extension_names(tmp_path, capsys):
    import numpy as np
    from annrepro.vecio import read_vectors

    model = _train_model(tmp_path)
    x = str(tmp_path / "x.npy")
    codes = tmp_path / "c.npz"
    assert main(["encode", "--model", str(model), "--x", x, "--out", str(codes),
                 "--quantizer", "zn_3"]) == 0  # fmt: skip
    common = ["search", "--model", str(model), "--codes", str(codes), "--xq", x, "--k", "3",
              "--quantizer", "zn_3"]  # fmt: skip
    assert main(common + ["--out", str(tmp_path / "I.ivecs")]) == 0
    assert main(common + ["--out", str(tmp_path / "I.npy")]) == 0
    a, b = read_vectors(tmp_path / "I.ivecs"), np.load(tmp_path / "I.npy")
    np.testing.assert_array_equal(a, b)  # a real .ivecs file, not .npy bytes under that name
    capsys.readouterr()
    assert main(common + ["--out", str(tmp_path / "I.bin")]) == 2
    assert "I.bin" in capsys.readouterr().err
