"""benchmarks/gpu_check.sh and gpu_check.py (issue 12 step 4) on the CPU path: the script that
checks `--device cuda` end to end runs, and is tested, where no GPU is: three methods trained,
encoded and reported, one line each; `--device cuda` without CUDA is one line, exit 2."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(
    r"^gpu_check (?P<method>catalyzer|ccst|kdindex): device=(?P<device>\S+) "
    r"epochs=(?P<epochs>\d+) s/epoch=(?P<s_epoch>[\d.]+) train_vectors/s=(?P<train>\d+) "
    r"encode_vectors/s=(?P<encode>\d+) 1-recall@10=(?P<recall>[\d.]+) "
    r"peak_gpu_memory=(?P<peak>n/a on cpu|\d+MiB) data='(?P<data>[^']+)' \((?P<note>.*)\) "
    r"\[[\d.]+ s\]$"
)


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks/gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_cpu_path_trains_encodes_and_reports_each_method():
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    cmd = ["bash", str(ROOT / "benchmarks/gpu_check.sh"), "--device", "cpu", "--quick"]
    proc = subprocess.run(
        [*cmd, "--synthetic", "--threads", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout.splitlines()
    assert "installing" not in proc.stdout  # importable here: the script installs nothing
    assert out[0].startswith("gpu_check: torch ") and "device cpu" in out[0]
    assert out[1] == "gpu_check: torch threads 1, faiss threads 1"
    rows = {m["method"]: m for m in map(LINE.match, out) if m}
    assert sorted(rows) == ["catalyzer", "ccst", "kdindex"], out
    for method, m in rows.items():
        assert m["device"] == "cpu" and m["peak"] == "n/a on cpu", method
        assert int(m["epochs"]) >= 1 and float(m["s_epoch"]) > 0, method
        assert int(m["train"]) > 0 and int(m["encode"]) > 0, method
        # far above chance (10 of >= 300 base vectors): each method learned and encoded
        assert 0.1 < float(m["recall"]) <= 1, (method, m["recall"])
        assert m["data"].startswith("synthetic"), method
    assert rows["kdindex"]["note"].endswith("the same as fit's: True")
    assert out[-1].startswith("gpu_check: ok, 3 method(s) on cpu in ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_one_line(capsys):
    assert _gpu_check().main(["--device", "cuda", "--quick", "--synthetic"]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    err = cap.err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("gpu_check: error: --device cuda: torch.cuda.is_available() is False")


def test_a_failing_method_is_reported_and_the_others_still_run(monkeypatch, capsys):
    mod = _gpu_check()

    def broken(device, synthetic, quick):
        raise RuntimeError("the catalyzer network is on cpu, not on cuda")

    monkeypatch.setitem(mod.CHECKS, "catalyzer", broken)
    rc = mod.main(["--device", "cpu", "--quick", "--synthetic", "--threads", "1",
                   "--methods", "catalyzer", "ccst"])  # fmt: skip
    assert rc == 1
    out = capsys.readouterr().out.splitlines()
    assert "gpu_check catalyzer: FAILED on cpu: RuntimeError: the catalyzer network" in out[2]
    assert LINE.match(out[3])["method"] == "ccst"
    assert out[-1].startswith("gpu_check: FAILED catalyzer")
