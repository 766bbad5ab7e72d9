"""Thread control for faiss (OpenMP) and torch.

On the 2-core machines this project runs on, multi-threaded faiss and torch slow down 4-12x when
the other core is busy (../shared/PITFALLS.md): tests cap threads to 1 and every timing records
its thread count.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["threads", "get_threads", "set_threads", "default_threads"]


def default_threads() -> int:
    """ANNREPRO_THREADS if set, else the number of usable cores."""
    env = os.environ.get("ANNREPRO_THREADS")
    if env:
        return max(1, int(env))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def get_threads() -> int:
    import faiss

    return faiss.omp_get_max_threads()


def set_threads(n: int) -> None:
    import faiss

    faiss.omp_set_num_threads(int(n))
    try:
        import torch

        torch.set_num_threads(int(n))
    except ImportError:  # torch is optional for the common library
        pass


@contextlib.contextmanager
def threads(n: int):
    """Run a block with faiss and torch capped at n threads; restore the previous count."""
    prev = get_threads()
    try:
        import torch

        prev_torch = torch.get_num_threads()
    except ImportError:
        prev_torch = None
    set_threads(n)
    try:
        yield
    finally:
        import faiss

        faiss.omp_set_num_threads(prev)
        if prev_torch is not None:
            import torch

            torch.set_num_threads(prev_torch)
