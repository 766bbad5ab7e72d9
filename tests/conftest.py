"""Test configuration: threads capped to 1, results and caches in temporary folders."""

import os
from pathlib import Path

# Cap threads before numpy / faiss / torch start their pools (PITFALLS.md: 2 cores).
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")
os.environ["ANNREPRO_THREADS"] = "1"
# One faiss SIMD level on every machine: faiss-cpu dispatches its kernels at run time (AVX2,
# AVX512, ...) and the summation order differs between them, which moves chaotic tiny results
# (ITQ's sign iterations) by whole queries. AVX2 is on every x86-64 machine we run on; the
# tiny snapshots were made with it. Only tests pin it: reproduce runs use the best level and
# record it in the provenance.
os.environ.setdefault("FAISS_SIMD_LEVEL", "AVX2")

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
    """Each test session gets its own cache and results folders (never the user's)."""
    base = tmp_path_factory.getbasetemp()
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
