"""annrepro.stats (one ddof), the producers' Context services and annrepro.testing."""

import numpy as np
import pytest
from annrepro.stats import DDOF, mean_std, mean_std_row, paired_ttest
from annrepro.tables import find_specs
from annrepro.tables.runner import ProducerError, RunMemo
from annrepro.testing import FakeContext, SyntheticDataset


def test_std_over_seeds_is_the_sample_std():
    assert DDOF == 1
    m, s = mean_std([1.0, 2.0, 3.0])
    assert m == 2.0 and s == pytest.approx(1.0)  # ddof 0 would give 0.816
    assert mean_std([5.0]) == (5.0, None)


def test_mean_std_row_keeps_per_query_values_per_run():
    runs = [{"r": 0.5, "r:per_query": [0.0, 1.0]}, {"r": 0.7, "r:per_query": [0.4, 1.0]}]
    row = mean_std_row("SIFT1M", "PQ", runs, ["r"])
    assert row["r"] == pytest.approx(0.6) and row["r:std"] == pytest.approx(
        np.std([0.5, 0.7], ddof=1)
    )
    # one row per run: the runner's interval resamples the seeds as well as the queries
    assert np.asarray(row["r:per_query"]) == pytest.approx(np.array([[0.0, 1.0], [0.4, 1.0]]))
    one = mean_std_row("SIFT1M", "PQ", runs[:1], ["r"])
    assert one["r:per_query"] == pytest.approx([0.0, 1.0]) and "r:std" not in one


def test_paired_ttest():
    t, p = paired_ttest([0.6, 0.62, 0.61], [0.5, 0.53, 0.5])
    assert t > 0 and p < 0.05
    with pytest.raises(ValueError, match="two or more pairs"):
        paired_ttest([1.0], [2.0])


def test_memo_keeps_within_budget_newest_first():
    memo = RunMemo(budget_bytes=100)
    calls = []
    for key in ("a", "b", "a", "c"):
        memo.get(key, lambda k=key: calls.append(k) or np.zeros(40, np.uint8))
    assert calls == ["a", "b", "c"]  # "a" served from the memo the second time
    assert memo.hits == 1
    memo.get("b", lambda: calls.append("b2") or np.zeros(40, np.uint8))
    assert calls[-1] == "b2"  # "b" was the least recently used when "c" came: evicted


def test_context_seeds_and_params():
    (spec,) = find_specs("kdindex.table2")
    ctx = FakeContext(spec, {"SIFT1M": SyntheticDataset("s", d=8)}, n_seeds=3, seed=10)
    assert ctx.seeds() == [10, 11, 12] and ctx.seeds(2) == [10, 11]
    assert ctx.param("efSearch", "GIST1M") == 512
    assert ctx.param("nope", default=7) == 7
    with pytest.raises(ProducerError, match="no value for data set 'Bigann'"):
        ctx.param("efSearch", "Bigann")
    assert ctx.param_list("B") == [8]
    ds = ctx.dataset("SIFT1M")
    assert ds.gt(5).shape == (20, 5) and ctx.used["SIFT1M"] is ds
    assert ctx.memo("k", lambda: 1) == 1 and ctx.memo("k", lambda: 2) == 1
