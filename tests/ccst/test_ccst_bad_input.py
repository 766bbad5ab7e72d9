"""Bad input to CCST (API and CLI): one clear line naming the file and the problem, found before
any work where it can be; and concurrent writers of the same model / checkpoint file."""

import os

import numpy as np
import pytest
import torch
from ccst import CCST, ModelFileError
from ccst import api as api_mod
from ccst import train as train_mod
from ccst.cli import main
from ccst.losses import estimate_boundary

pytestmark = pytest.mark.usefixtures("warm_torch_optim")

D = 16
TINY = dict(compression_factor=4, depths=(1,), heads=2, epochs=1, batch_size=16, progress=False)
CLI_TINY = ["--factor", "4", "--depths", "1", "--heads", "2", "--epochs", "1", "--batch-size", "16"]


def _x(n=60, d=D, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.pt"
    CCST(**TINY).fit(_x()).save(path)
    return path


def _one_error_line(capsys, path) -> str:
    """The CLI's stderr ends with one error line naming `path` (a progress bar may precede it)."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert err.rstrip().splitlines()[-1] == errors[0], err
    assert errors[0].startswith(f"ccst: error: {path}: "), err
    return errors[0]


def _refuse_training(monkeypatch):
    """Make CCST.fit fail the test if it is reached: the CLI must refuse before any work."""

    def fit(self, *a, **kw):
        raise AssertionError("training started before the bad argument was found")

    monkeypatch.setattr(CCST, "fit", fit)


# -- training data ------------------------------------------------------------------------------


def test_too_few_training_vectors_are_refused_with_the_cause(tmp_path, capsys):
    with pytest.raises(ValueError, match="5 training vectors .* validation"):
        CCST(**TINY).fit(_x(5))
    xt = tmp_path / "xt.npy"
    np.save(xt, _x(5))
    assert main(["train", str(xt), str(tmp_path / "m.pt"), *CLI_TINY]) == 2
    err = _one_error_line(capsys, xt)
    assert "validation" in err and "val_fraction" in err
    assert not (tmp_path / "m.pt").exists()
    # without a validation split 5 vectors train, and the CLI does not print 'val loss nan'
    assert main(["train", str(xt), str(tmp_path / "m.pt"), *CLI_TINY, "--val-fraction", "0"]) == 0
    assert "nan" not in capsys.readouterr().out


def test_nan_training_vectors_are_named_not_called_duplicates(tmp_path, capsys):
    x = _x()
    x[3, 5] = np.nan
    with pytest.raises(ValueError, match="row 3 contains NaN or inf") as e:
        CCST(**TINY).fit(x)
    assert "identical" not in str(e.value)
    with pytest.raises(ValueError, match="NaN or inf") as e:
        estimate_boundary(x)
    assert "identical" not in str(e.value)
    xt = tmp_path / "xt.npy"
    np.save(xt, x)
    assert main(["train", str(xt), str(tmp_path / "m.pt"), *CLI_TINY]) == 2
    assert "row 3 contains NaN or inf" in _one_error_line(capsys, xt)


def test_float64_beyond_float32_range_is_refused_in_fit_and_transform(model_file):
    x = _x(dtype=np.float64)
    x[7, 0] = 1e39  # finite in float64, inf in float32
    with pytest.raises(ValueError, match="row 7 .*float32"):
        CCST(**TINY).fit(x)
    with pytest.raises(ValueError, match="row 7 .*float32"):
        CCST.load(model_file).transform(x)


@pytest.mark.parametrize("name", ["MLPCompressor", "VAECompressor"])
def test_table5_baselines_check_their_training_vectors_as_ccst(name):
    from ccst import baselines

    cls = getattr(baselines, name)
    x = _x(dtype=np.float64)
    x[9, 1] = 1e39
    with pytest.raises(ValueError, match="row 9 .*float32"):
        cls(compression_factor=4, epochs=1, batch_size=16).fit(x)
    with pytest.raises(ValueError, match="5 training vectors .* validation"):
        cls(compression_factor=4, epochs=1, batch_size=16).fit(_x(5))


# -- ccst compress: input, model, output --------------------------------------------------------


@pytest.mark.parametrize("bad", ["nan", "inf", "1e39"])
def test_compress_refuses_non_finite_input_naming_file_and_row(model_file, tmp_path, capsys, bad):
    x = _x(20, dtype=np.float64)
    x[11, 2] = float(bad)
    src, out = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(src, x)
    assert main(["compress", str(model_file), str(src), str(out)]) == 2
    assert "row 11" in _one_error_line(capsys, src)
    assert not out.exists()


def test_compress_refuses_a_dimension_mismatch(model_file, tmp_path, capsys):
    src = tmp_path / "in.npy"
    np.save(src, _x(20, d=8))
    assert main(["compress", str(model_file), str(src), str(tmp_path / "out.npy")]) == 2
    err = _one_error_line(capsys, src)
    assert "dimension 8" in err and str(model_file) in err and "16" in err


def _damaged_models(tmp_path, model_file):
    good = model_file.read_bytes()
    files = {
        "truncated.pt": good[: len(good) // 2],
        "garbage.pt": b"\x80\x02this is not a model" * 10,
        "empty.pt": b"",
        "text.pt": b"hello\n",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save([1, 2, 3], tmp_path / "list.pt")  # a valid torch file, not a CCST model
    state = torch.load(model_file, weights_only=True)
    state["state_dict"] = {k: v[:1] if v.ndim else v for k, v in state["state_dict"].items()}
    torch.save(state, tmp_path / "shapes.pt")  # weights that do not fit their configuration
    torch.save({**state, "kind": "catalyzer.Catalyzer"}, tmp_path / "kind.pt")  # another model
    return [tmp_path / n for n in (*files, "list.pt", "shapes.pt", "kind.pt", "missing.pt")]


def test_a_model_file_from_before_kind_was_written_loads(model_file, tmp_path):
    """Files saved before annrepro.atomic.atomic_save added `kind` hold the same keys without
    it; they load, with the same weights."""
    state = torch.load(model_file, weights_only=True)
    assert state.pop("kind") == "ccst.CCST" and state["format_version"] == 4
    torch.save(state, tmp_path / "old.pt")
    x = _x(20)
    np.testing.assert_array_equal(
        CCST.load(tmp_path / "old.pt").transform(x), CCST.load(model_file).transform(x)
    )


def test_damaged_model_files_give_one_line_naming_the_file(model_file, tmp_path, capsys):
    src = tmp_path / "in.npy"
    np.save(src, _x(20))
    for path in _damaged_models(tmp_path, model_file):
        with pytest.raises(ModelFileError) as e:
            CCST.load(path)
        assert e.value.path == str(path) and "\n" not in str(e.value), str(e.value)
        assert main(["compress", str(path), str(src), str(tmp_path / "out.npy")]) == 2
        _one_error_line(capsys, path)
    assert not (tmp_path / "out.npy").exists()


def test_damaged_checkpoint_names_the_file(tmp_path):
    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    (ckpt_dir / "last.pt").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(ModelFileError, match="last.pt") as e:
        CCST(**TINY).fit(_x(), checkpoint_dir=ckpt_dir)
    assert "resume=False" in str(e.value) and "\n" not in str(e.value)


def test_compress_checks_its_output_before_any_work(model_file, tmp_path, capsys, monkeypatch):
    src = tmp_path / "in.npy"
    np.save(src, _x(20))
    monkeypatch.setattr(CCST, "transform", lambda *a, **k: pytest.fail("compressed first"))
    for out in (tmp_path / "no_dir" / "out.npy", tmp_path / "out.xyz", tmp_path):
        assert main(["compress", str(model_file), str(src), str(out)]) == 2
        _one_error_line(capsys, out)


# -- ccst train: outputs checked before training ------------------------------------------------


def test_train_checks_outputs_before_training(tmp_path, capsys, monkeypatch):
    xt = tmp_path / "xt.npy"
    np.save(xt, _x())
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    _refuse_training(monkeypatch)
    for out in (tmp_path / "missing" / "m.pt", a_file / "m.pt", tmp_path):
        assert main(["train", str(xt), str(out), *CLI_TINY]) == 2
        _one_error_line(capsys, out)
    ckpt = a_file / "ckpt"
    args = [*CLI_TINY, "--checkpoint-dir", str(ckpt)]
    assert main(["train", str(xt), str(tmp_path / "m.pt"), *args]) == 2
    _one_error_line(capsys, ckpt)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_train_refuses_a_read_only_output_directory(tmp_path, capsys, monkeypatch):
    xt = tmp_path / "xt.npy"
    np.save(xt, _x())
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    _refuse_training(monkeypatch)
    assert main(["train", str(xt), str(ro / "m.pt"), *CLI_TINY]) == 2
    assert "not writable" in _one_error_line(capsys, ro / "m.pt")


def test_a_failing_model_write_names_the_file(tmp_path, capsys, monkeypatch):
    """torch's own message ('enforce fail at inline_container.cc') does not say which file."""

    def enforce_fail(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")

    xt = tmp_path / "xt.npy"
    np.save(xt, _x())
    model = CCST(**TINY).fit(_x())
    monkeypatch.setattr(torch, "save", enforce_fail)
    with pytest.raises(ModelFileError, match="m.pt: cannot write"):
        model.save(tmp_path / "m.pt")
    assert main(["train", str(xt), str(tmp_path / "m.pt"), *CLI_TINY]) == 2
    assert "cannot write" in _one_error_line(capsys, tmp_path / "m.pt")
    assert os.listdir(tmp_path) == ["xt.npy"]  # no temporary left behind


# -- two runs writing the same file -------------------------------------------------------------


def _reentrant_save(monkeypatch, second_writer):
    """torch.save that, the first time, lets `second_writer` write the same target after the
    first writer's temporary is written and before it is renamed (two runs sharing a cache or a
    checkpoint directory: with one fixed temporary name the first rename then fails)."""
    real, calls = torch.save, []

    def save(obj, f, *a, **k):
        calls.append(str(f))
        real(obj, f, *a, **k)
        if len(calls) == 1:
            second_writer()

    monkeypatch.setattr(torch, "save", save)
    return calls


def test_two_writers_of_one_model_file_do_not_break_each_other(tmp_path, monkeypatch):
    a, b = CCST(**TINY, seed=1).fit(_x()), CCST(**TINY, seed=2).fit(_x())
    target = tmp_path / "m.pt"
    calls = _reentrant_save(monkeypatch, lambda: b.save(target))
    a.save(target)
    assert len(calls) == 2 and calls[0] != calls[1]  # each writer has its own temporary
    back = CCST.load(target)
    np.testing.assert_array_equal(back.transform(_x()), a.transform(_x()))  # the last rename
    assert os.listdir(tmp_path) == ["m.pt"]


def test_two_runs_sharing_a_checkpoint_directory(tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt"
    other = CCST(**TINY, checkpoint_every=1)
    calls = _reentrant_save(
        monkeypatch, lambda: other.fit(_x(seed=1), checkpoint_dir=ckpt, resume=False)
    )
    CCST(**TINY, checkpoint_every=1).fit(_x(), checkpoint_dir=ckpt, resume=False)
    assert len(calls) == 2 and calls[0] != calls[1]
    assert sorted(os.listdir(ckpt)) == ["last.pt"]
    assert torch.load(ckpt / "last.pt", weights_only=True)["epoch"] == 1


def test_every_torch_save_in_ccst_is_atomic():
    """Models, checkpoints and cache entries are written through annrepro.atomic only (a unique
    temporary and an atomic rename), never by a bare torch.save."""
    from pathlib import Path

    sources = sorted(Path(api_mod.__file__).parent.glob("*.py"))
    assert sources
    for path in sources:
        assert "torch.save(" not in path.read_text(), path.name
    assert "atomic_save(" in Path(api_mod.__file__).read_text()
    assert "atomic_torch_save" in Path(train_mod.__file__).read_text()
