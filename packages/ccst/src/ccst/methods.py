"""CCST behind `annrepro.methods` (entry point "csst", the paper's name for the compressor).

Spec strings: "csst<f>x,<faiss factory>": the CCST network compresses d -> d / f (Sec. 3), and
the faiss index of the factory string is trained, filled and searched on the compressed vectors
("csst4x,PQ16", "csst4x,HNSW32", "csst2x,SQ8", "csst4x,Flat"). Queries are compressed by the same
network. A graph built on compressed vectors but searched at full dimension (the paper's HNSW
use) is `ccst index`; here everything is in the compressed space, so bytes per vector are the
compressed codes'.

Settings (`make(spec, metric, **overrides)`): any `CCST` argument (epochs, batch_size, lr, seed,
norm, ...). The estimator's default epochs (2400, Sec. 4.1) take hours on a CPU: give epochs.
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import numpy as np
from annrepro.errors import SettingError
from annrepro.methods import FaissStage, PluginMethod

from .api import CCST

__all__ = ["CCSTMethod", "SRPMethod", "METHODS"]


class CCSTMethod(PluginMethod):
    """A csst spec string (module docstring): CCST compression, then a faiss index."""

    plugin = "csst"
    paper = "CCST: compact transformer compression before indexing (CNT/CCST, ccst.txt)"
    SPEC = re.compile(r"csst(\d+)x,(.+)")
    EXAMPLE = "'csst<factor>x,<faiss factory>', e.g. 'csst4x,PQ16'"

    @classmethod
    def known_settings(cls) -> set:
        return CCST.argument_names() - {"compression_factor"}

    def __init__(self, spec: str, metric: str = "l2", **overrides):
        super().__init__(spec, metric, **overrides)
        self.factor, self.factory = int(self.match.group(1)), self.match.group(2)
        if self.factor < 1:
            raise SettingError(f"method {spec!r}: compression factor must be >= 1")
        self.overrides = {"progress": False, **overrides}
        self.model: CCST | None = None
        self.stage: FaissStage | None = None

    def settings(self) -> dict:
        return {"compression_factor": self.factor, "factory": self.factory, **self.overrides}

    def _fit(self, xt, xb):
        if xt.shape[1] % self.factor:
            raise SettingError(
                f"method {self.spec!r}: compression factor {self.factor} does not divide the "
                f"dimension {xt.shape[1]}"
            )
        self.model = CCST(compression_factor=self.factor, **self.overrides).fit(xt)
        # the run's seed draws the faiss stage's training too (annrepro.methods.seed_faiss)
        self.stage = FaissStage(self.factory, self.metric, seed=self.overrides.get("seed"))
        self.stage.train(self.model.transform(xt))

    def _add(self, xb):
        t0 = time.perf_counter()
        y = self.model.transform(xb)
        self.transform_s += time.perf_counter() - t0  # compression, not the index's build
        self.stage.add(y)

    def _search(self, xq, k):
        return self.stage.search(self.model.transform(xq), k)

    def _code_bytes(self):
        return self.stage.code_bytes()

    def _state(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ccst.pt"
            self.model.save(path)
            model = np.frombuffer(path.read_bytes(), dtype=np.uint8).copy()
        return {"overrides": self.overrides}, {"ccst": model, "faiss_index": self.stage.to_array()}

    @classmethod
    def _from_state(cls, meta, arrays):
        m = cls(meta["spec"], meta["metric"], **meta["state"]["overrides"])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ccst.pt"
            path.write_bytes(np.asarray(arrays["ccst"], dtype=np.uint8).tobytes())
            m.model = CCST.load(path)
        m.stage = FaissStage.from_array(m.factory, m.metric, arrays["faiss_index"])
        return m

    def describe(self) -> dict:
        what = f"CCST transformer compressing {self.factor}x, then faiss {self.factory!r}"
        return {**super().describe(), "what": what}


class SRPMethod(PluginMethod):
    """ "srp<f>x,<faiss factory>": a single sparse random projection d -> d / f (Eq. 2, the
    baseline of Table 5 and the initialisation of CCST's projections), then the faiss index on
    the projected vectors. Setting: seed (the projection's draw)."""

    plugin = "srp"
    paper = "CCST, Eq. 2 (Li et al. 2006 very sparse random projections)"
    SPEC = re.compile(r"srp(\d+)x,(.+)")
    EXAMPLE = "'srp<factor>x,<faiss factory>', e.g. 'srp4x,Flat'"

    @classmethod
    def known_settings(cls) -> set:
        return {"seed"}

    def __init__(self, spec: str, metric: str = "l2", **overrides):
        super().__init__(spec, metric, **overrides)
        self.factor, self.factory = int(self.match.group(1)), self.match.group(2)
        self.seed = int(overrides.get("seed", 0))
        self.w: np.ndarray | None = None
        self.stage: FaissStage | None = None

    def settings(self) -> dict:
        return {"compression_factor": self.factor, "factory": self.factory, "seed": self.seed}

    def _project(self, x):
        from .srp import srp_project

        return np.ascontiguousarray(srp_project(x, self.w), dtype=np.float32)

    def _fit(self, xt, xb):
        from .srp import srp_matrix

        d = xt.shape[1]
        if d % self.factor:
            raise SettingError(
                f"method {self.spec!r}: compression factor {self.factor} does not divide the "
                f"dimension {d}"
            )
        self.w = srp_matrix(d, d // self.factor, self.seed)
        self.stage = FaissStage(self.factory, self.metric, seed=self.seed)
        self.stage.train(self._project(xt))

    def _add(self, xb):
        self.stage.add(self._project(xb))

    def _search(self, xq, k):
        return self.stage.search(self._project(xq), k)

    def _code_bytes(self):
        return self.stage.code_bytes()

    def _state(self):
        return {"seed": self.seed}, {"srp": self.w, "faiss_index": self.stage.to_array()}

    @classmethod
    def _from_state(cls, meta, arrays):
        m = cls(meta["spec"], meta["metric"], seed=meta["state"]["seed"])
        m.w = np.ascontiguousarray(arrays["srp"], dtype=np.float32)
        m.stage = FaissStage.from_array(m.factory, m.metric, arrays["faiss_index"])
        return m

    def describe(self) -> dict:
        what = f"sparse random projection {self.factor}x, then faiss {self.factory!r}"
        return {**super().describe(), "what": what}


METHODS = [CCSTMethod, SRPMethod]
