"""Analyses of the KDindex tables' runs: the significance test of Table 2's caption."""

from __future__ import annotations

import numpy as np
from annrepro.stats import paired_ttest


def paired_t_test_note(paper_name: str, ds, per_seed: dict, column: str) -> str:
    """Table 2 caption: 'The improvement over the strongest baseline is statistically significant
    on a paired t-test (p < 0.05)': the best KDindex row against the best other row by mean
    `column`, paired over the seeds both ran (annrepro.stats.paired_ttest, two-sided).

    per_seed: {row: {seed: run}} as `experiments.seed_row` fills it; returns the note."""

    def mean(row):
        return np.mean([r[column] for r in per_seed[row].values()])

    kd = [r for r in per_seed if r.startswith("KDindex")]
    other = [r for r in per_seed if not r.startswith("KDindex")]
    if not kd or not other:
        return f"{paper_name}: no paired t-test (KDindex or baseline rows missing)"
    best_kd, best_base = max(kd, key=mean), max(other, key=mean)
    seeds = sorted(set(per_seed[best_kd]) & set(per_seed[best_base]))
    head = (
        f"{paper_name} ({ds.name}): paired t-test on {column}, best KDindex {best_kd} "
        f"({100 * mean(best_kd):.2f}) vs strongest baseline {best_base} "
        f"({100 * mean(best_base):.2f}) over seeds {seeds}: "
    )
    if len(seeds) < 2:
        return head + "not computed (fewer than two common seeds)"
    a = [per_seed[best_kd][s][column] for s in seeds]
    b = [per_seed[best_base][s][column] for s in seeds]
    t, p = paired_ttest(a, b)
    verdict = "significant" if p < 0.05 and t > 0 else "not significant"
    return head + f"t = {t:.3g}, two-sided p = {p:.3g} ({verdict} at 0.05)"
