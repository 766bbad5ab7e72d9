"""KDindex behind `annrepro.methods` (entry point "kdindex").

Spec strings: "kdindex,<KIND><B>x<W>" with KIND PQ, OPQ or AQ: B codebooks of W codewords
("kdindex,AQ8x256", "kdindex,PQ8x256", "kdindex,OPQ8x256": 8 bytes per vector), distilled from an
HNSW teacher's top-K (Sec. 3). Searched exhaustively through faiss with the learned codebooks
(`kdindex.faiss_search`).

How fit / add map to the paper's protocol (Sec. 3, 4.1: the index is trained on the documents it
indexes, with the data set's training queries):
- `fit(xt, xb)`: documents xb, training queries xt (the learn set), teacher HNSW over xb; a
  later `add(xb)` of that same array stores the codes learned at fit (Algorithm 1's balanced
  codes by default, `balance_index`), as the paper's index does.
- `fit(xt)` without a base (our choice, for users with one set of vectors): the last
  `n_queries` rows of xt (default min(10000, nt // 5)) are the training queries, the rest the
  documents.
- `add(x)` of any other vectors: encoded by `KDIndex.encode` (nearest codes; AQ faiss's beam
  search), no retraining.

Settings (`make(spec, metric, **overrides)`): K, n_warm, n_queries, the teacher's M /
ef_construction / ef_search (teacher_M, teacher_ef_construction, teacher_ef_search; Table 7
defaults 32 / 40 / 100), the warm start's opq_niter / aq_beam / aq_refine
(`quantizers.train_quantizer`), and any `kdindex.train.TrainConfig` field (epochs, batch_size, seed,
balance_index, ...).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
from annrepro.errors import SettingError
from annrepro.methods import PluginMethod

from .api import KDIndex
from .quantizers import CodebookQuantizer
from .student import reconstruction_norms2
from .teacher import HNSWTeacher
from .train import TrainConfig

__all__ = ["KDindexMethod", "METHODS"]

_OWN = ("K", "n_warm", "n_queries", "teacher_M", "teacher_ef_construction", "teacher_ef_search")
_WARM = ("opq_niter", "aq_beam", "aq_refine")  # `train_quantizer`: the warm start


class KDindexMethod(PluginMethod):
    """A kdindex spec string (module docstring): distilled PQ / OPQ / AQ codebooks."""

    plugin = "kdindex"
    paper = "Lu et al., Knowledge distillation for high dimensional search index, NeurIPS 2023"
    SPEC = re.compile(r"kdindex,(PQ|OPQ|AQ)(\d+)x(\d+)")
    EXAMPLE = "'kdindex,<PQ|OPQ|AQ><B>x<W>', e.g. 'kdindex,AQ8x256'"

    @classmethod
    def known_settings(cls) -> set:
        return {f.name for f in dataclasses.fields(TrainConfig)} | set(_OWN) | set(_WARM)

    def __init__(self, spec: str, metric: str = "l2", **overrides):
        super().__init__(spec, metric, **overrides)
        m = self.match
        self.kind, self.B, self.W = m.group(1), int(m.group(2)), int(m.group(3))
        if self.W < 2 or self.W & (self.W - 1) or self.B < 1:
            raise SettingError(
                f"method {spec!r}: B >= 1 codebooks of W codewords, W a power of two (codes are "
                "log2(W) bits)"
            )
        self.index: KDIndex | None = None
        self._fitted_base: tuple | None = None  # (shape, fingerprint) of the base fitted on
        self._trained_codes: np.ndarray | None = None

    def settings(self) -> dict:
        return {"kind": self.kind, "B": self.B, "W": self.W, **self.overrides}

    def _fit(self, xt, xb):
        from annrepro.groundtruth import array_fingerprint

        o = self.overrides
        if xb is None:
            nq = int(o.get("n_queries", min(10000, len(xt) // 5)))
            if not 0 < nq < len(xt):
                raise SettingError(f"{self.spec}: n_queries={nq} of {len(xt)} learn vectors")
            docs, queries = xt[:-nq], xt[-nq:]
        else:
            docs, queries = xb, xt
        cfg = TrainConfig(**{k: v for k, v in o.items() if k not in _OWN + _WARM})
        warm = {k: v for k, v in o.items() if k in _WARM}
        K = int(o.get("K", 10))
        teacher = HNSWTeacher(
            docs.shape[1],
            self.metric,
            M=int(o.get("teacher_M", 32)),
            ef_construction=int(o.get("teacher_ef_construction", 40)),
            ef_search=int(o.get("teacher_ef_search", 100)),
        )
        teacher.build(docs)
        index = KDIndex(self.kind, self.metric, self.B, self.W, K, config=cfg, **warm)
        index.n_warm = int(o.get("n_warm", index.n_warm))
        index.fit(docs, queries, teacher=teacher)
        self._trained_codes = index.codes
        self._fitted_base = None if xb is None else (xb.shape, array_fingerprint(xb))
        index.codes, index.norms2 = None, None
        self.index = index

    def _add(self, xb):
        from annrepro.groundtruth import array_fingerprint

        index = self.index
        if (
            index.codes is None
            and self._fitted_base is not None
            and self._fitted_base == (xb.shape, array_fingerprint(xb))
        ):  # the base trained on: the codes of the paper's index
            index.codes = self._trained_codes
            index.norms2 = reconstruction_norms2(index.quantizer, index.codes)
        else:
            index.add(xb)

    def _search(self, xq, k):
        D, I = self.index.search(xq, min(k, self.ntotal))
        if k > self.ntotal:
            pad = k - self.ntotal
            D = np.pad(D, ((0, 0), (0, pad)), constant_values=np.nan)
            I = np.pad(I, ((0, 0), (0, pad)), constant_values=-1)
        return D, I

    def _code_bytes(self):
        return self.B * int(np.ceil(np.log2(self.W))) / 8

    def _state(self):
        q = self.index.quantizer
        arrays = {"codebooks": q.codebooks}
        if q.rotation is not None:
            arrays["rotation"] = q.rotation
        if self.index.codes is not None:
            arrays["codes"] = self.index.codes
        extra = {"overrides": self.overrides, "d_in": q.d_in, "d_out": q.d_out}
        extra["aq_beam"] = q.aq_beam
        return extra, arrays

    @classmethod
    def _from_state(cls, meta, arrays):
        st = meta["state"]
        m = cls(meta["spec"], meta["metric"], **st["overrides"])
        q = CodebookQuantizer(
            m.kind,
            st["d_in"],
            st["d_out"],
            arrays["codebooks"],
            arrays.get("rotation"),
            aq_beam=st["aq_beam"],
        )
        index = KDIndex(m.kind, m.metric, m.B, m.W, int(st["overrides"].get("K", 10)))
        index.quantizer = q
        if "codes" in arrays:
            index.codes = arrays["codes"]
            index.norms2 = reconstruction_norms2(q, index.codes)
        m.index = index
        return m

    def describe(self) -> dict:
        what = f"KDindex {self.kind} {self.B}x{self.W} distilled from an HNSW teacher"
        return {**super().describe(), "what": what}


METHODS = [KDindexMethod]
