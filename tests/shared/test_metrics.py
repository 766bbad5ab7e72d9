"""Metrics on hand-computed cases."""

import numpy as np
import pytest
from annrepro.metrics import binomial_ci, mrr_at, n_recall_at, ndcg_at, one_recall_at, recall_at

GT = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])


def test_one_recall():
    I = np.array([[9, 0, 8, 7], [5, 6, 7, 4]])
    assert one_recall_at(I, GT, 1) == 0.0
    assert one_recall_at(I, GT, 2) == 0.5
    assert one_recall_at(I, GT, 4) == 1.0


def test_n_recall_counts_duplicates_once_and_ignores_padding():
    I = np.array([[0, 0, 1, -1], [4, 9, -1, -1]])
    assert n_recall_at(I, GT, 2, 4) == pytest.approx((2 / 2 + 1 / 2) / 2)
    assert recall_at(np.array([[3, 2, 1, 0], [7, 6, 5, 4]]), GT, 4) == 1.0


def test_ndcg_and_mrr():
    I = np.array([[9, 0, 8, 1], [4, 5, 6, 7]])
    disc = 1 / np.log2(np.arange(2, 6))
    ndcg0 = (disc[1] + disc[3]) / disc.sum()
    assert ndcg_at(I, GT, 4) == pytest.approx((ndcg0 + 1.0) / 2)
    assert mrr_at(I, GT, 4) == pytest.approx((1 / 2 + 1) / 2)
    assert mrr_at(np.full((2, 4), 99), GT, 4) == 0.0


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="different query sets"):
        one_recall_at(np.zeros((3, 4), int), GT, 1)
    with pytest.raises(ValueError, match="only 4 columns"):
        one_recall_at(GT, GT, 10)


def test_wilson_interval():
    lo, hi = binomial_ci(0.9, 100)
    assert 0.82 < lo < 0.84 and 0.94 < hi < 0.96
    assert binomial_ci(1.0, 100)[1] == pytest.approx(1.0)
