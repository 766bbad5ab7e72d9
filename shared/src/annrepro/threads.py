"""Thread control for faiss (OpenMP) and torch.

On the 2-core machines this project runs on, multi-threaded faiss and torch slow down 4-12x when
the other core is busy (../shared/PITFALLS.md): tests cap threads to 1 and every timing records
its thread count.
"""

from __future__ import annotations

import contextlib
import os

from .errors import SettingError

__all__ = ["threads", "get_threads", "set_threads", "default_threads", "check_threads"]


def check_threads(n, what: str = "threads") -> int:
    """n as a thread count (an integer >= 1, or a string of one); SettingError naming `what`
    (the option or variable it came from) otherwise."""
    given = n
    if isinstance(n, str):
        try:
            n = int(n.strip())
        except ValueError:
            n = None
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SettingError(f"{what}={given!r}: expected a positive integer (threads)")
    return n


def default_threads() -> int:
    """ANNREPRO_THREADS if set (a positive integer, else SettingError), else OMP_NUM_THREADS if
    set (the user's own cap, which a CLI must not override: on a shared 2-core machine that made
    one training 6x slower), else the number of usable cores."""
    for var in ("ANNREPRO_THREADS", "OMP_NUM_THREADS"):
        env = os.environ.get(var)
        if env is not None and env.strip():
            return check_threads(env, var)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def get_threads() -> int:
    """The thread count faiss uses now."""
    import faiss

    return faiss.omp_get_max_threads()


def set_threads(n: int) -> None:
    """Set faiss's and torch's thread counts to n."""
    import faiss

    n = check_threads(n)
    faiss.omp_set_num_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # torch is optional for the common library
        pass


@contextlib.contextmanager
def threads(n: int):
    """Run a block with faiss and torch capped at n threads; restore the previous count."""
    n = check_threads(n)
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
