"""Atomic writes of every result, model and cache file: two writers never break each other."""

import os
import subprocess
import sys

WRITER = """
import sys
from annrepro.atomic import atomic_torch_save
import torch
for i in range(40):
    blob = {"writer": sys.argv[2], "i": i, "w": torch.full((256,), float(i))}
    atomic_torch_save(blob, sys.argv[1])
"""


def test_two_processes_writing_one_cache_entry(tmp_path):
    """The old fixed `<name>.tmp` let one writer rename the other's temporary away
    (FileNotFoundError); unique temporaries make both succeed and leave one whole file."""
    target = tmp_path / "cache" / "model.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(target), name], env=env)
        for name in ("a", "b")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    import torch

    blob = torch.load(target)
    assert blob["writer"] in ("a", "b") and blob["i"] == 39
    assert [f.name for f in target.parent.iterdir()] == ["model.pt"]  # no temporary left


def test_atomic_save_and_savez_write_one_format_version(tmp_path):
    import json

    import numpy as np
    import pytest
    import torch
    from annrepro.atomic import atomic_save, atomic_savez

    path = atomic_save(tmp_path / "m.pt", {"w": torch.ones(2)}, 3, "pkg.Model")
    blob = torch.load(path, weights_only=True)
    assert blob["format_version"] == 3 and blob["kind"] == "pkg.Model"
    assert blob["w"].tolist() == [1.0, 1.0]
    path = atomic_savez(tmp_path / "codes.bin", {"codes": np.arange(3)}, {"q": "zn_3"}, 2)
    assert path == tmp_path / "codes.bin" and path.is_file()  # exactly there: no ".npz" added
    with np.load(path) as z:
        assert json.loads(str(z["meta"])) == {"format_version": 2, "q": "zn_3"}
        assert z["codes"].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="format_version"):  # the helper owns the key
        atomic_save(tmp_path / "x.pt", {"format_version": 1}, 1, "pkg.Model")
    with pytest.raises(ValueError, match="meta"):
        atomic_savez(tmp_path / "x.npz", {"meta": np.zeros(1)}, {}, 1)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["codes.bin", "m.pt"]  # nothing else
