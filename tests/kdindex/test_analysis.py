"""kdindex.analysis: the paired t-test note of Table 2's caption."""

from types import SimpleNamespace

import pytest
from annrepro.stats import paired_ttest
from kdindex.analysis import paired_t_test_note

_DS = SimpleNamespace(name="fake")


def test_paired_t_test_hand_value_and_note():
    # differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t = 0.2 / (0.1 / sqrt 3) = 3.4641
    t, p = paired_ttest([0.6, 0.7, 0.8], [0.5, 0.5, 0.5])
    assert t == pytest.approx(3.4641016, rel=1e-6)
    assert p == pytest.approx(0.0741799, rel=1e-4)  # two-sided, 2 degrees of freedom
    with pytest.raises(ValueError, match="two or more pairs"):
        paired_ttest([0.5], [0.4])
    runs = lambda *v: {s: {"recall@10": x} for s, x in enumerate(v)}  # noqa: E731
    per_seed = {
        "PQ": runs(0.50, 0.52, 0.51),
        "AQ": runs(0.60, 0.61, 0.62),
        "KDindex (PQ)": runs(0.55, 0.56, 0.57),
        "KDindex (AQ)": runs(0.70, 0.72, 0.71),
    }
    note = paired_t_test_note("SIFT1M", _DS, per_seed, "recall@10")
    assert "best KDindex KDindex (AQ) (71.00) vs strongest baseline AQ (61.00)" in note
    assert "significant at 0.05" in note and "not significant" not in note
    per_seed["KDindex (AQ)"] = runs(0.70)
    assert "fewer than two common seeds" in paired_t_test_note("SIFT1M", _DS, per_seed, "recall@10")
