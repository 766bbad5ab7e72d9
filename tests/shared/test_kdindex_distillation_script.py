"""benchmarks/kdindex_distillation.py: bad arguments give one line, not a traceback."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location(
        "kdindex_distillation", ROOT / "benchmarks/kdindex_distillation.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_unknown_dataset_is_one_line():
    with pytest.raises(SystemExit, match=r"^--dataset no-such-set: unknown data set"):
        _script().main(["--dataset", "no-such-set", "--quick"])


def test_dimension_the_pq_baseline_cannot_split_is_one_line(monkeypatch):
    import annrepro.datasets

    x = np.random.default_rng(0).standard_normal((60, 12)).astype(np.float32)
    fake = SimpleNamespace(name="fake-12d", metric="l2", xb=x, xq=x[:5], xt=x)
    monkeypatch.setattr(annrepro.datasets, "get_dataset", lambda name: fake)
    with pytest.raises(SystemExit, match=r"^fake-12d: dimension 12 is not a multiple of B = 8"):
        _script().main(["--dataset", "fake-12d", "--quick", "--n-extra", "0"])
