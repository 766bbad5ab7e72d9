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
