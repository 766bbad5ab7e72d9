"""Test helpers for the paper packages (the way faiss's tests share `SyntheticDataset`).

- `SyntheticDataset`: a seeded Gaussian mixture with the interface producers use of a registry
  `Dataset` (xb / xq / xt, nb / nq / nt / d, metric, gt(k), describe(), info(), check()).
- `FakeContext`: a real `annrepro.tables.Context` (seeds, param, memo, note, artifact, progress)
  whose data sets are given in memory instead of resolved from the registry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .datasets import synthetic_split
from .groundtruth import knn_exact
from .tables.runner import Context, RunMemo

__all__ = ["SyntheticDataset", "FakeContext", "LinearTransform"]


class SyntheticDataset:
    """Seeded Gaussian mixture. xb, xt, xq: float32 (n, d); `xb` may be replaced (e.g. by a
    uint8 memory map). `gt(k)`: exact top-k ids, int64 (nq, k), computed once per k."""

    def __init__(
        self,
        name: str = "synthetic",
        d: int = 16,
        nb: int = 300,
        nq: int = 20,
        nt: int | None = None,
        seed: int = 0,
        metric: str = "l2",
        clusters: int = 8,
        spread: float = 0.5,
        xb=None,
        **split,
    ):
        xb0, xt, xq = synthetic_split(
            {"d": d, "nb": nb, "nt": nt or nb, "nq": nq, "clusters": clusters, "spread": spread}
            | {"seed": seed, **split}
        )
        self.name, self.metric, self.d = name, metric, d
        self.xb = xb0 if xb is None else xb
        self.xt, self.xq = xt, xq
        self.nb, self.nq, self.nt = len(self.xb), nq, len(xt)
        self.scale = "tiny"
        self.has_learn = True  # a learn set of its own (registry data sets may lack one)
        self._gt: dict[int, np.ndarray] = {}

    def gt(self, k: int) -> np.ndarray:
        if k not in self._gt:
            xb = np.asarray(self.xb, dtype=np.float32)
            self._gt[k] = knn_exact(self.xq, xb, k, self.metric)[1]
        return self._gt[k]

    def check(self) -> None:
        pass

    def describe(self) -> str:
        return f"{self.name}: synthetic {self.d}-d, nb={self.nb}, nq={self.nq}, nt={self.nt}"

    def info(self) -> dict:
        return {
            "name": self.name, "scale": self.scale, "metric": self.metric, "nb": self.nb,
            "nq": self.nq, "nt": self.nt, "d": self.d, "learn_is_base": False,
            "description": self.describe(), "stands_in_for": "",
        }  # fmt: skip


def _blank_spec():
    from .tables.spec import TableSpec

    return TableSpec(
        id="test.table", paper="test", title="a test", source="-", path=Path("test.toml"),
        columns={}, scales={"tiny": {}}, params={}, claims=[], cells=[],
    )  # fmt: skip


class FakeContext(Context):
    """A Context over in-memory data sets: `FakeContext(spec, {"SIFT1M": SyntheticDataset(...)},
    scale="tiny", **param_overrides)`; `spec=None` gives a blank spec (the params are then only
    the overrides). Its memo is its own (tests never share state) unless `memo=` passes another
    context's `run_memo` (two tables of one run)."""

    def __init__(
        self, spec, datasets: dict | None = None, scale="tiny", out_dir=None, memo=None, **params
    ):
        spec = _blank_spec() if spec is None else spec
        datasets = {} if datasets is None else datasets
        super().__init__(spec, scale, seed=params.pop("seed", 0), threads=1)
        self.progress_enabled = False
        self.params = {**self.params, **params}
        self._datasets = dict(datasets)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.run_memo = RunMemo() if memo is None else memo  # share it: tables of one run

    def dataset(self, paper_name: str):
        ds = self._datasets[paper_name]
        self.used[paper_name] = ds
        return ds

    def each_dataset(self, names=None):
        for name in list(self._datasets) if names is None else list(names):
            yield name, self.dataset(name)

    def memo(self, key, fn, nbytes: int | None = None):
        return self.run_memo.get(key, fn, nbytes)


class LinearTransform:
    """`x -> x @ w` with a seeded random w (d, d_out), optionally sleeping `delay_s` per call:
    a stand-in for a trained model's transform in the Dask tests. It lives here, in an
    importable module, because Dask workers must import the class of every task's function (a
    class defined in a test module is not importable by the workers)."""

    def __init__(self, d: int, d_out: int, seed: int = 0, delay_s: float = 0.0):
        self.w = np.random.default_rng(seed).standard_normal((d, d_out)).astype(np.float32)
        self.delay_s = delay_s

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.delay_s:
            import time

            time.sleep(self.delay_s)
        return x @ self.w
