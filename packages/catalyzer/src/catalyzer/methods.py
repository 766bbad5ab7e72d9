"""The catalyzer behind `annrepro.methods` (entry point "catalyzer").

Spec strings: "catalyzer<d_out>,<quantizer>" with quantizer
- "zn_<r2>": the spherical lattice of the paper (Sec. 4.2), asymmetric search; "catalyzer24,zn_79"
  gives 64-bit codes;
- "sign": binary codes of d_out bits, Hamming search (Sec. 4.1); "catalyzer64,sign" is 8 bytes;
- any faiss factory string, trained and searched by faiss on the catalyzed features f(x)
  ("catalyzer24,OPQ8_64,PQ8" is the paper's "Catalyzer + OPQ" row).

Settings (`make(spec, metric, **overrides)`): any `Catalyzer` argument (preset, lam, hidden) or
`TrainConfig` field (epochs, batch_size, seed, ...). Our choice where the estimator's default
assumes a big learn set: unless n_val is given, min(10000, nt // 5) learn vectors are held out
for validation (the paper's 10000 on its 500k-vector learn sets), with n_val // 10 of them
queries; unless val_quantizer is given, the best epoch is chosen on the codes the method stores
(its lattice, or sign codes), and with zn_79 for a faiss stage (exact search of the outputs,
'none', for d_out > 64, where faiss's lattice does not exist).

Only metric "l2": the catalyzer is trained on Euclidean neighbours (Sec. 3); on unit-norm data
the inner product ranks alike, so normalise and use "l2".

"pca<d_out>,zn_<r2>" (entry point "pca"): Table 1's "PCA + Lattice" baseline (Sec. 5.4), the
lattice with a PCA in place of the catalyzer: PCA learned on the learn set (centred, faiss
PCAMatrix) to d_out dims, L2 normalisation, the spherical lattice's codes, asymmetric search
(`catalyzer.baselines.pca_lattice_search`, what Table 1 runs). "pca24,zn_79" is 64 bits. It
takes no settings; faiss's own PCA factory strings are upper case ("PCA24,Flat").
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
from annrepro.errors import SettingError
from annrepro.methods import FaissStage, PluginMethod, array_to_torch, torch_to_array

from .api import Catalyzer
from .search import code_lattice

__all__ = ["CatalyzerMethod", "PCALatticeMethod", "METHODS"]


def _pad_like_faiss(D, I, k):
    """(D, I) of fewer than k stored codes padded to k columns as faiss does (inf, -1)."""
    pad = k - I.shape[1]
    if pad <= 0:
        return D, I
    D = np.pad(D.astype(np.float32), ((0, 0), (0, pad)), constant_values=np.inf)
    return D, np.pad(I, ((0, 0), (0, pad)), constant_values=-1)


class CatalyzerMethod(PluginMethod):
    """A catalyzer spec string (module docstring): the MLP, then lattice, sign or faiss codes."""

    plugin = "catalyzer"
    paper = "Sablayrolles et al., Spreading vectors for similarity search, ICLR 2019"
    SPEC = re.compile(r"catalyzer(\d+),(.+)")
    EXAMPLE = (
        "'catalyzer<d_out>,<quantizer>' (zn_79, sign or a faiss factory string), "
        "e.g. 'catalyzer24,zn_79'"
    )

    @classmethod
    def known_settings(cls) -> set:
        from .train import TrainConfig

        return ({f.name for f in dataclasses.fields(TrainConfig)} | {"preset"}) - {"d_out"}

    def __init__(self, spec: str, metric: str = "l2", **overrides):
        super().__init__(spec, metric, **overrides)
        if metric != "l2":
            raise SettingError(
                f"method {spec!r}: the catalyzer supports metric 'l2' only (it learns Euclidean "
                "neighbours); for inner product on unit-norm data use 'l2'"
            )
        self.d_out, self.quantizer = int(self.match.group(1)), self.match.group(2)
        self.cat: Catalyzer | None = None
        self.stage: FaissStage | None = None
        self.codes: list[np.ndarray] = []
        if self.quantizer.startswith("zn_") and not self.quantizer[3:].isdigit():
            raise SettingError(f"method {spec!r}: lattice quantizer is 'zn_<r2>', e.g. zn_79")

    def settings(self) -> dict:
        if self.cat is None:
            return dict(self.overrides)
        return {"quantizer": self.quantizer, **self.cat.config.to_dict()}

    def _native(self) -> bool:
        return self.quantizer == "sign" or self.quantizer.startswith("zn_")

    def _fit(self, xt, xb):
        kw = dict(self.overrides)
        if "val_quantizer" not in kw:  # validate (keep the best epoch) on the codes stored
            native = self.quantizer if self._native() else "zn_79"
            kw["val_quantizer"] = native if native == "sign" or self.d_out <= 64 else "none"
        if "n_val" not in kw:
            kw["n_val"] = min(10000, len(xt) // 5)
            kw.setdefault("n_val_queries", max(1, kw["n_val"] // 10))
        self.cat = Catalyzer(d_out=self.d_out, **kw)
        if self.quantizer.startswith("zn_"):
            code_lattice(self.d_out, self.quantizer)  # refuses codes over 64 bits before training
        self.cat.fit(xt)
        if not self._native():
            # the run's seed draws the faiss stage's training too (annrepro.methods.seed_faiss)
            self.stage = FaissStage(self.quantizer, "l2", seed=self.overrides.get("seed"))
            self.stage.train(self.cat.transform(xt))
        self.codes = []

    def _add(self, xb):
        if self._native():
            self.codes.append(self.cat.encode(xb, self.quantizer))
        else:
            self.stage.add(self.cat.transform(xb))

    def _all_codes(self) -> np.ndarray:
        if len(self.codes) > 1:
            self.codes = [np.concatenate(self.codes)]
        return self.codes[0]

    def _search(self, xq, k):
        if self._native():
            codes = self._all_codes()
            D, I = self.cat.search(xq, codes, min(k, len(codes)), self.quantizer)
            return _pad_like_faiss(D, I, k)
        return self.stage.search(self.cat.transform(xq), k)

    def _code_bytes(self):
        if self.quantizer == "sign":
            return (self.d_out + 7) // 8
        if self.quantizer.startswith("zn_"):
            return 8  # uint64 codes (the lattice codes need <= 64 bits, Appendix B)
        return self.stage.code_bytes()

    def _state(self):
        blob = {
            "state_dict": self.cat.net.state_dict(),
            "config": self.cat.config.to_dict(),
            "d_in": self.cat.d_in,
        }
        arrays = {"catalyzer": torch_to_array(blob)}
        if self._native():
            if self.codes:
                arrays["codes"] = self._all_codes()
        else:
            arrays["faiss_index"] = self.stage.to_array()
        return {"overrides": self.overrides}, arrays

    @classmethod
    def _from_state(cls, meta, arrays):
        from .train import TrainConfig

        m = cls(meta["spec"], meta["metric"], **meta["state"]["overrides"])
        blob = array_to_torch(arrays["catalyzer"])
        cat = Catalyzer.__new__(Catalyzer)
        cat.config = TrainConfig.from_dict(blob["config"])
        cat.result, cat.fingerprint, cat.net, cat.d_in = None, None, None, None
        cat._set(blob["state_dict"], blob["d_in"])
        m.cat = cat
        if "codes" in arrays:
            m.codes = [arrays["codes"]]
        if "faiss_index" in arrays:
            m.stage = FaissStage.from_array(m.quantizer, "l2", arrays["faiss_index"])
        return m

    def describe(self) -> dict:
        what = f"catalyzer MLP to {self.d_out} dims, then {self.quantizer}"
        return {**super().describe(), "what": what}


class PCALatticeMethod(PluginMethod):
    """ "pca<d_out>,zn_<r2>" (module docstring): PCA, L2 normalisation, spherical lattice codes."""

    plugin = "pca"
    paper = "Sablayrolles et al., ICLR 2019, Table 1's PCA + Lattice baseline (Sec. 5.4)"
    SPEC = re.compile(r"pca(\d+),(zn_\d+)")
    EXAMPLE = "'pca<d_out>,zn_<r2>' (PCA + Lattice), e.g. 'pca24,zn_79'"

    def __init__(self, spec: str, metric: str = "l2", **overrides):
        super().__init__(spec, metric, **overrides)
        if metric != "l2":
            raise SettingError(
                f"method {spec!r}: PCA + Lattice compares L2-normalised projections: metric "
                "'l2' only (on unit-norm data the inner product ranks alike)"
            )
        self.d_out, self.quantizer = int(self.match.group(1)), self.match.group(2)
        self.lattice = code_lattice(self.d_out, self.quantizer)
        self.A: np.ndarray | None = None  # the PCA as y = x @ A.T + b (faiss LinearTransform)
        self.b: np.ndarray | None = None
        self.codes: list[np.ndarray] = []

    def settings(self) -> dict:
        return {"d_out": self.d_out, "quantizer": self.quantizer}

    def _project(self, x) -> np.ndarray:
        from .baselines import l2_normalize

        return l2_normalize(np.ascontiguousarray(x @ self.A.T + self.b, dtype=np.float32))

    def _fit(self, xt, xb):
        import faiss

        if self.d_out > xt.shape[1]:
            raise SettingError(
                f"method {self.spec!r}: PCA cannot output {self.d_out} dims from {xt.shape[1]}"
            )
        pca = faiss.PCAMatrix(xt.shape[1], self.d_out)
        pca.train(np.ascontiguousarray(xt, dtype=np.float32))
        d = xt.shape[1]
        self.A = faiss.vector_to_array(pca.A).reshape(self.d_out, d).astype(np.float32)
        self.b = faiss.vector_to_array(pca.b).astype(np.float32)
        self.codes = []

    def _add(self, xb):
        self.codes.append(self.lattice.encode(self._project(xb)))

    def _search(self, xq, k):
        codes = np.concatenate(self.codes) if len(self.codes) > 1 else self.codes[0]
        self.codes = [codes]
        D, I = self.lattice.search(self._project(xq), codes, min(k, len(codes)))
        return _pad_like_faiss(D, I, k)

    def _code_bytes(self):
        return 8  # uint64 lattice codes (<= 64 bits, Appendix B)

    def _state(self):
        arrays = {"A": self.A, "b": self.b}
        if self.codes:
            arrays["codes"] = np.concatenate(self.codes)
        return {}, arrays

    @classmethod
    def _from_state(cls, meta, arrays):
        m = cls(meta["spec"], meta["metric"])
        m.A, m.b = np.asarray(arrays["A"]), np.asarray(arrays["b"])
        if "codes" in arrays:
            m.codes = [np.asarray(arrays["codes"])]
        return m

    def describe(self) -> dict:
        what = f"PCA to {self.d_out} dims, L2 normalisation, then {self.quantizer}"
        return {**super().describe(), "what": what}


METHODS = [CatalyzerMethod, PCALatticeMethod]
