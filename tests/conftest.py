"""Test configuration: threads capped to 1, results and caches in temporary folders."""

import os
from pathlib import Path

# Cap threads before numpy / faiss / torch start their pools (PITFALLS.md: 2 cores).
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")
os.environ["ANNREPRO_THREADS"] = "1"
# One set of CPU kernels on every machine. faiss, OpenBLAS (numpy's and faiss's), MKL, oneDNN
# and ATen pick their kernels at run time (AVX2, AVX512, ...) and the summation order differs
# between them; tiny results that go through k-means, ITQ's sign iterations or training move by
# whole queries (seen: the same commit gave other kdindex / catalyzer tiny numbers on an AVX512
# machine). AVX2 (OpenBLAS "Haswell") is on every x86-64 machine we run on, and the tiny
# snapshots are made with these pins. Only tests pin them: reproduce runs use the best kernels
# and record faiss's level in the provenance.
for var, value in (
    ("FAISS_SIMD_LEVEL", "AVX2"),
    ("OPENBLAS_CORETYPE", "Haswell"),
    # OpenBLAS sizes some GEMM blocks by the L2 cache it detects; this project's AMD machines set
    # 512 (KiB) in their environment, so the same value everywhere gives one summation order
    ("OPENBLAS_L2_SIZE", "512"),
    ("MKL_CBWR", "AVX2"),
    ("ONEDNN_MAX_CPU_ISA", "AVX2"),
    ("ATEN_CPU_CAPABILITY", "avx2"),
):
    os.environ.setdefault(var, value)

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
if "ANNREPRO_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["ANNREPRO_DATA"] = str(SHARED_DATA)
os.environ.setdefault("ANNREPRO_TABLES", str(REPO / "paper_tables"))


def pytest_configure(config):
    import faiss

    faiss.omp_set_num_threads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own cache and results folders (never the user's), and no
    behaviour switch of the caller's environment (nox sets ANNREPRO_AUTO_FETCH=1 on a machine
    without ../shared): a test that wants one sets it itself."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.delenv("ANNREPRO_AUTO_FETCH", raising=False)
    monkeypatch.setenv("ANNREPRO_CACHE", str(base / "cache"))
    monkeypatch.setenv("ANNREPRO_RESULTS", str(base / "results"))


def have_data(*rels):
    root = os.environ.get("ANNREPRO_DATA")
    return bool(root) and all((Path(root) / r).exists() for r in rels)


def pytest_runtest_setup(item):
    """`@pytest.mark.requires_data("siftsmall/siftsmall_base.fvecs", ...)`: skip with a reason
    when those files are not under ANNREPRO_DATA."""
    for mark in item.iter_markers("requires_data"):
        if not have_data(*mark.args):
            pytest.skip(
                f"requires_data: {', '.join(mark.args)} not under ANNREPRO_DATA "
                "(set ANNREPRO_DATA=../shared/data)"
            )
