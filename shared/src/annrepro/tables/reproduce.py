"""`annrepro reproduce`: run tables in order, resume what is up to date, print the timings.

A table whose good result on disk was made from the same spec, published CSV, code, data
checksums, scale and seed (runner.fingerprint) is not recomputed unless `force`: an interrupted
`reproduce` (even kill -9) restarts where it stopped. Each result is written atomically as its
table finishes, so a killed run loses at most the table it was computing.
"""

from __future__ import annotations

import time
from pathlib import Path

from .compare import compare_run
from .runner import run_table, up_to_date

__all__ = ["reproduce"]


def reproduce(
    specs,
    scale: str,
    seed: int = 0,
    n_threads: int | None = None,
    out_dir: Path | None = None,
    progress: bool = True,
    force: bool = False,
    echo=print,
) -> list[tuple[str, str, float, object]]:
    """Run (or resume) every spec; returns [(table id, "ran" | "up to date" | "failed", wall s,
    run)] and echoes one line per table and a timing summary."""
    done = []
    t0 = time.perf_counter()
    for spec in specs:
        run = None if force else up_to_date(spec, scale, seed, out_dir)
        if run is not None:
            echo(
                f"{spec.id} [{scale}]: up to date (made {run.provenance.get('started', '?')}; "
                "--force recomputes)"
            )
            done.append((spec.id, "up to date", 0.0, run))
            continue
        echo(f"running {spec.id} [{scale}] ...")
        run = run_table(
            spec, scale, seed=seed, n_threads=n_threads, out_dir=out_dir, progress=progress
        )
        wall = float(run.provenance["wall_s"])
        echo(f"  {compare_run(spec, run).summary_line()}  ({wall:.1f} s)")
        done.append((spec.id, "failed" if run.error else "ran", wall, run))
    total = time.perf_counter() - t0
    if done:
        threads = sorted({str(r.provenance.get("threads", "?")) for *_, r in done})
        echo(f"timings [{scale}], threads {'/'.join(threads)}:")
        w = max(len(t) for t, *_ in done)
        for table, status, wall, _ in done:
            echo(f"  {table:<{w}}  {wall / 60:7.2f} min  {status}")
        echo(f"  {'all':<{w}}  {total / 60:7.2f} min")
    return done
