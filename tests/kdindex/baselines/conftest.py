"""Shared data of the learned-baseline tests (kdindex.baselines): a seeded Gaussian mixture, its
teacher labels (the exact top-K) and table params, as the `lb` fixture."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from annrepro.groundtruth import knn_exact

torch.set_num_threads(1)

B, W, K = 4, 16, 10


@pytest.fixture(scope="session", autouse=True)
def _imports():
    """One-off imports (torch's optimiser machinery ~3 s, POT ~2 s) outside the timed tests."""
    import ot  # noqa: F401

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def _mixture(n, d=16, seed=0, clusters=12):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((clusters, d)) * 2
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, d))
    return x.astype(np.float32)


def _data(metric="l2", d=16):
    """(ds, xt float32 (128, d), labels int64 (128, K)): a 400-vector base with 40 test queries."""
    xb, xt, xq = _mixture(400, d, 1), _mixture(128, d, 2), _mixture(40, d, 3)
    labels = knn_exact(xt, xb, K, metric)[1]
    gt = knn_exact(xq, xb, K, metric)[1]
    ds = SimpleNamespace(
        name="mixture", xb=xb, xq=xq, metric=metric, nb=len(xb), d=d, gt=lambda k: gt[:, :k]
    )
    return ds, xt, labels


def _params(**kw):
    p = {"B": B, "W": W, "k": 10, "nprobe": W, "n_train": 400, "lb_epochs": 3, "lb_batch": 32}
    p.update(kw)
    return p


@pytest.fixture
def lb():
    """B, W, K of the tests, `data(metric, d)` and `params(**overrides)`."""
    return SimpleNamespace(B=B, W=W, K=K, data=_data, params=_params)
