"""Bad input, class "dimension mismatch between roles": learn / base / query (and model / input,
index / query in the paper packages) must share d; the message names both roles, their files
and dimensions, and hints at a swapped (n, d) header."""

import hashlib

import numpy as np
import pytest
from annrepro import datasets as dsmod
from annrepro.cli import main
from annrepro.datasets import DatasetError, get_dataset
from annrepro.errors import InputError
from annrepro.validate import check_same_dim
from annrepro.vecio import write_vectors


def test_check_same_dim_names_roles_files_and_dims():
    xb, xq = np.zeros((50, 8)), np.zeros((5, 7))
    assert check_same_dim(base=xb, query=np.zeros((3, 8)), learn=(9, 8)) == 8
    with pytest.raises(
        InputError, match=r"^query \(q\.fvecs\) dimension 7 differs from base \(b\.fvecs\) dim"
    ):
        check_same_dim(base=xb, query=xq, paths={"base": "b.fvecs", "query": "q.fvecs"})
    with pytest.raises(InputError, match=r"^ccst compress: input dimension 96 differs from model"):
        check_same_dim(model=128, input=(10, 96), what="ccst compress")


def test_check_same_dim_hints_at_a_swapped_header():
    with pytest.raises(InputError, match=r"read as 100 x 128, it would fit: n and d swapped"):
        check_same_dim(base=(1000, 128), query=(128, 100))


@pytest.fixture
def toy(tmp_path, monkeypatch):
    data = tmp_path / "data"
    root = tmp_path / "paper_tables"
    root.mkdir()
    monkeypatch.setenv("ANNREPRO_TABLES", str(root))
    monkeypatch.setenv("ANNREPRO_DATA", str(data))
    monkeypatch.setattr(dsmod, "_cache", {})

    def make(**dims):
        rng = np.random.default_rng(0)
        lines = ['[datasets.toy]\nscale = "small"\nmetric = "l2"']
        files = []
        for role, (n, d) in dims.items():
            rel = f"toy/{role}.fvecs"
            write_vectors(data / rel, rng.standard_normal((n, d)).astype(np.float32))
            sha = hashlib.sha256((data / rel).read_bytes()).hexdigest()
            files.append(f'[files."{rel}"]\nsha256 = "{sha}"')
            lines.append(f'{role} = "{rel}"')
        (root / "datasets.toml").write_text("\n".join(files + lines) + "\n")

    return make


def test_dataset_names_the_two_files(toy, capsys):
    toy(base=(40, 8), query=(5, 7))
    with pytest.raises(
        DatasetError,
        match=r"toy: query \(toy/query\.fvecs\) dimension 7 differs from base \(toy/base\.fvecs\)"
        r" dimension 8",
    ):
        get_dataset("toy").check()
    assert main(["data", "check", "toy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("annrepro: error: toy: query (toy/query.fvecs)")


def test_dataset_learn_of_another_dimension(toy):
    toy(base=(40, 8), query=(5, 8), learn=(30, 16))
    with pytest.raises(DatasetError, match=r"learn \(toy/learn\.fvecs\) dimension 16 differs"):
        get_dataset("toy").gt(3)
