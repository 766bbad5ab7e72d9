"""Statistics of repeated runs, one convention for the three papers.

- The spread of a table cell over seeds is the *sample* standard deviation (ddof = 1, `DDOF`):
  the papers print "mean ± std over 5 runs", which estimates the run-to-run spread (kdindex
  used ddof = 1 and catalyzer ddof = 0 before this module).
- `mean_std_row` builds a producer row from per-seed runs: mean, "<column>:std" and, where every
  run has per-query values, those values one row per run ("<column>:per_query", (n_runs, nq)):
  the runner's bootstrap interval then resamples the seeds and the queries, so the bracket
  covers the training's run-to-run spread as well as the choice of queries.
- `paired_ttest`: two methods over the same seeds (kdindex Table 2's caption).
"""

from __future__ import annotations

import numpy as np

__all__ = ["DDOF", "mean_std", "mean_std_row", "paired_ttest"]

DDOF = 1  # sample standard deviation over seeds
PER_QUERY = ":per_query"


def mean_std(values) -> tuple[float, float | None]:
    """(mean, sample std) of per-seed values; std is None for a single run."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("mean_std of no values")
    return float(v.mean()), (float(v.std(ddof=DDOF)) if v.size > 1 else None)


def mean_std_row(dataset: str, row: str, runs: list[dict], cols) -> dict:
    """A producer row {"dataset", "row", col, "col:std", "col:per_query"} from per-seed runs
    (each a dict with the columns `cols`, optionally "col:per_query" arrays of equal length;
    the row's "col:per_query" holds them one row per run, or the one run's values)."""
    out = {"dataset": dataset, "row": row}
    for c in cols:
        out[c], std = mean_std([r[c] for r in runs])
        if std is not None:
            out[f"{c}:std"] = std
        if runs and all(c + PER_QUERY in r for r in runs):
            per = np.asarray([np.asarray(r[c + PER_QUERY], dtype=np.float64) for r in runs])
            out[c + PER_QUERY] = (per[0] if len(runs) == 1 else per).tolist()
    return out


def paired_ttest(a, b) -> tuple[float, float]:
    """Two-sided paired t-test of a against b over the same seeds: (t, p) by
    scipy.stats.ttest_rel. Needs two pairs or more; identical differences give (nan, nan)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"a paired t-test needs two or more pairs; got {a.size} and {b.size}")
    from scipy.stats import ttest_rel

    res = ttest_rel(a, b)
    return float(res.statistic), float(res.pvalue)
