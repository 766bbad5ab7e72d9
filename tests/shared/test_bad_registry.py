"""Bad input, class "registry problems" and the "verified" stamp: an unknown metric, inf in the
registry or in a registered file, a file changed behind the stamp's back. `annrepro data check`
answers each with one line naming the file and the problem (exit 2), never a traceback, and
re-hashes every file instead of trusting the stamp."""

import hashlib
import os

import numpy as np
import pytest
from annrepro import datasets as dsmod
from annrepro import registry as regmod
from annrepro.cli import main
from annrepro.datasets import DatasetError, get_dataset
from annrepro.vecio import write_vectors


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A one-data-set registry; `make(extra_dataset_lines, files_override)` writes it."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    write_vectors(data / "toy" / "base.fvecs", rng.standard_normal((40, 6)).astype(np.float32))
    write_vectors(data / "toy" / "query.fvecs", rng.standard_normal((4, 6)).astype(np.float32))
    root = tmp_path / "paper_tables"
    root.mkdir()
    monkeypatch.setenv("ANNREPRO_TABLES", str(root))
    monkeypatch.setenv("ANNREPRO_DATA", str(data))
    monkeypatch.setattr(dsmod, "_cache", {})

    def make(metric='"l2"', base_bytes=None, base="toy/base.fvecs"):
        b, q = data / base, data / "toy" / "query.fvecs"
        size = b.stat().st_size if base_bytes is None else base_bytes
        (root / "datasets.toml").write_text(
            f'[files."{base}"]\nsha256 = "{_sha(b)}"\nbytes = {size}\n'
            f'[files."toy/query.fvecs"]\nsha256 = "{_sha(q)}"\n\n'
            f'[datasets.toy]\nscale = "small"\nmetric = {metric}\nbase = "{base}"\n'
            'query = "toy/query.fvecs"\n'
        )
        dsmod._cache.clear()
        return root / "datasets.toml"

    return data, make


def _check(capsys, *argv):
    rc = main(["data", *argv])
    cap = capsys.readouterr()
    return rc, cap.err.strip().splitlines()


def test_data_check_passes_on_a_good_registry(toy, capsys):
    _, make = toy
    make()
    assert main(["data", "check", "toy"]) == 0
    assert "toy: ok (40 base, 4 queries" in capsys.readouterr().out


def test_unknown_metric(toy, capsys):
    _, make = toy
    path = make(metric='"cosine"')
    rc, err = _check(capsys, "check", "toy")
    assert rc == 2 and len(err) == 1
    assert err[0] == (
        f"annrepro: error: {path}: [datasets.'toy']: unknown metric 'cosine'; expected one of "
        "l2, ip"
    )


def test_inf_in_the_registry(toy, capsys):
    _, make = toy
    path = make(base_bytes="inf")
    rc, err = _check(capsys, "list")
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"annrepro: error: {path}: [files.'toy/base.fvecs']: bytes = inf")


@pytest.mark.parametrize("value", [np.inf, np.nan, 1e39])
def test_bad_values_in_a_registered_file(toy, capsys, value):
    data, make = toy
    x = np.random.default_rng(0).standard_normal((40, 6))
    x[7, 2] = value
    np.save(data / "toy" / "base.npy", x)  # np.save: write_vectors would refuse it
    make(base="toy/base.npy")
    rc, err = _check(capsys, "check", "toy")
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("annrepro: error: toy: ") and "toy/base.npy: row 7 contains" in err[0]


def test_changed_file_with_size_and_mtime_restored_is_caught(toy):
    data, make = toy
    make()
    p = data / "toy" / "query.fvecs"
    np.testing.assert_array_equal(get_dataset("toy").xq.shape, (4, 6))  # verified, stamped
    st = p.stat()
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 0x01  # same size
    p.write_bytes(bytes(raw))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime
    dsmod._cache.clear()
    with pytest.raises(DatasetError, match=r"query\.fvecs: sha256 .* does not match"):
        _ = get_dataset("toy").xq


def test_data_check_rehashes_even_when_stamped(toy, capsys):
    """A stamp can lie (a bit flip on disk keeps size, mtime and ctime): data check re-hashes."""
    data, make = toy
    reg_path = make()
    p = data / "toy" / "query.fvecs"
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 0x01
    p.write_bytes(bytes(raw))
    entry = regmod.registry(reg_path)["files"]["toy/query.fvecs"]
    stamp = regmod._verified_stamp(p, entry)  # forge "verified" for the changed bytes
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text("forged")
    assert get_dataset("toy").xq.shape == (4, 6)  # a plain load trusts the stamp (cheap)
    rc, err = _check(capsys, "check", "toy")
    assert rc == 2 and len(err) == 1
    assert "toy/query.fvecs: sha256" in err[0] and "does not match the registry" in err[0]


def test_unknown_data_set_is_one_line(toy, capsys):
    _, make = toy
    make()
    rc, err = _check(capsys, "check", "nope")
    assert rc == 2 and err == ["annrepro: error: unknown data set 'nope'; registered: toy"]
