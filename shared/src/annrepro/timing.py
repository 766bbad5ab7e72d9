"""Timing helpers: wall-clock timers and queries-per-second measured the same way everywhere.

QPS protocol: one warm-up run (caches, lazily built tables), then the best of `repeats` runs,
with the thread count fixed (the papers measure search speed single-threaded). Every timing is
reported with its thread count.
"""

from __future__ import annotations

import time

from .threads import threads as _threads

__all__ = ["Timer", "measure_qps"]


class Timer:
    """`with Timer() as t: ...` then `t.s` holds the elapsed wall-clock seconds."""

    def __enter__(self):
        self._t0 = time.perf_counter()
        self.s = float("nan")
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self._t0
        return False


def measure_qps(search_fn, xq, repeats: int = 3, threads: int = 1):
    """Queries per second of `search_fn(xq) -> (D, I)`: warm-up, then best of `repeats`.

    Returns `(qps, (D, I))` with the results of the last run.
    """
    nq = len(xq)
    best = float("inf")
    with _threads(threads):
        res = search_fn(xq)  # warm-up
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            res = search_fn(xq)
            best = min(best, time.perf_counter() - t0)
    return nq / max(best, 1e-9), res
