"""One interface for every method of the three papers and every faiss baseline.

    from annrepro.methods import make, load
    m = make("catalyzer24,zn_79", "l2", epochs=8)     # or "OPQ8_64,PQ8", "kdindex,AQ8x256", ...
    m.fit(xt)                                          # learn set float32 (nt, d)
    m.add(xb)                                          # encode and store; again to append
    D, I = m.search(xq, 10)                            # I int64 (nq, 10), -1 where fewer found
    m.bytes_per_vector, m.describe()
    m.save("m.annrepro"); m = load("m.annrepro")

Spec strings follow faiss's index factory: comma-separated stages, the learned transform first.
- Any faiss factory string ("PQ8", "OPQ8_64,PQ8", "LSQ8x8", "RQ8x8", "ITQ64,LSH",
  "HNSW32,SQ8", "Flat") is passed to `faiss.index_factory` itself.
- A first stage named by a paper package (entry points of the group "annrepro.methods":
  "catalyzer<d_out>", "csst<f>x", "srp<f>x", "kdindex") goes to the class of that package's
  `<paper>.methods.METHODS` whose SPEC it matches (`PluginMethod`); its remaining stages are
  the package's quantizer ("zn_79", "sign", "AQ8x256") or again a faiss factory string over
  the learned features.

`bytes_per_vector` is the size of one vector's code (what the papers call the code size; a graph
index's links are not in it); `describe()` also gives `index_bytes_per_vector`, the serialised
index divided by the number of vectors (codebooks, rotations and graph links included).

Files: `save` writes one .npz archive (atomically) holding a JSON header (`format_version`,
`plugin`, spec, metric) and the method's arrays; `load` reads it back through the plugin named
in the header.
"""

from __future__ import annotations

import abc
import io
import json
import re
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np

from .errors import InputError, SettingError
from .validate import as_float32, check_metric

__all__ = [
    "Method",
    "FaissMethod",
    "FaissStage",
    "seed_faiss",
    "make",
    "load",
    "plugins",
    "split_spec",
    "check_settings",
    "PluginMethod",
    "method_class",
    "parse_overrides",
]

FORMAT_VERSION = 1
GROUP = "annrepro.methods"


def split_spec(spec: str) -> tuple[str, str]:
    """ "catalyzer24,OPQ8_64,PQ8" -> ("catalyzer24", "OPQ8_64,PQ8"); "PQ8" -> ("PQ8", "")."""
    if not isinstance(spec, str) or not spec.strip():
        raise SettingError(f"method spec {spec!r}: expected a non-empty string such as 'PQ8'")
    head, _, rest = spec.strip().partition(",")
    return head.strip(), rest.strip()


def plugins() -> dict:
    """{name: module} of the installed paper packages' method plugins (entry points)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def _plugin_for(head: str):
    for name, ep in plugins().items():
        if re.fullmatch(rf"{re.escape(name)}(\d+x?)?", head):
            return name, ep.load()
    return None, None


def make(spec: str, metric: str = "l2", **overrides) -> Method:
    """The method a spec string names (see the module docstring). overrides go to the learned
    stage's estimator (e.g. epochs=8); a faiss-only spec takes only `seed` (`seed_faiss`)."""
    check_metric(metric)
    head, _ = split_spec(spec)
    name, module = _plugin_for(head)
    if module is not None:
        return method_class(module, spec.strip(), name)(spec.strip(), metric, **overrides)
    seed = overrides.pop("seed", None)
    if overrides:
        raise SettingError(
            f"method {spec!r} is a faiss factory string: it takes no settings but seed "
            f"(got {sorted(overrides)}); settings are for the learned stages "
            f"({', '.join(sorted(plugins())) or 'no paper package installed'})"
        )
    return FaissMethod(spec.strip(), metric, seed=seed)


def method_class(module, spec: str, plugin: str | None = None):
    """The class of a plugin module's METHODS whose SPEC the spec string matches; otherwise the
    first of the plugin's own classes (`plugin`, the entry point the spec's head named; a module
    may serve several), whose constructor then says what it expected."""
    for cls in module.METHODS:
        if cls.SPEC.fullmatch(spec):
            return cls
    own = [c for c in module.METHODS if getattr(c, "plugin", None) == plugin]
    return (own or module.METHODS)[0]


def _as_vectors(x, what: str, d: int | None = None) -> np.ndarray:
    x = as_float32(x, what)
    if x.ndim != 2 or 0 in x.shape:
        raise InputError(f"{what}: expected a non-empty 2-D array (n, d), got shape {x.shape}")
    if d is not None and x.shape[1] != d:
        raise InputError(f"{what} have dimension {x.shape[1]}, the method was fitted on d={d}")
    return x


class Method(abc.ABC):
    """The protocol every method follows; subclasses implement `_fit`, `_add`, `_search`,
    `_code_bytes`, `_state` and `_from_state`."""

    plugin = "faiss"
    paper = None  # the paper a method reproduces, for describe()

    def __init__(self, spec: str, metric: str = "l2"):
        self.spec, self.metric = spec, check_metric(metric)
        self.d: int | None = None
        self.ntotal = 0
        # seconds `add` spent in a learned transform before the index (a network compressing
        # the base): a method with one adds its time here, so that the index's own build time
        # is add's time minus this (annrepro.evaluate's index_add_s)
        self.transform_s = 0.0

    # ------------------------------------------------------------------ protocol
    def fit(self, xt, xb=None) -> Method:
        """Learn from xt float32 (nt, d) (codebooks, networks, ...); nothing is stored yet.

        xb: the base about to be added, for methods that learn on the documents they index
        (KDindex trains its codes on the base with the learn set as training queries, Sec. 3);
        the others ignore it."""
        xt = _as_vectors(xt, "learn vectors")
        if xb is not None:
            xb = _as_vectors(xb, "base vectors", xt.shape[1])
        self._fit(xt, xb)
        self.d, self.ntotal = xt.shape[1], 0
        return self

    def add(self, xb) -> None:
        """Encode xb float32 (n, d) and append it (ids ntotal .. ntotal + n - 1); no retraining."""
        self._need_fit()
        xb = _as_vectors(xb, "base vectors", self.d)
        self._add(xb)
        self.ntotal += len(xb)

    def search(self, xq, k: int):
        """(D float32 (nq, k), I int64 (nq, k)) of the k best stored vectors per query (D in the
        method's own score: distances ascending for l2, similarities descending for ip)."""
        self._need_fit()
        if self.ntotal == 0:
            raise InputError(f"{self.spec}: nothing to search: add() base vectors first")
        if int(k) < 1:
            raise SettingError(f"k={k}: must be >= 1")
        xq = _as_vectors(xq, "queries", self.d)
        D, I = self._search(xq, int(k))
        return np.asarray(D, dtype=np.float32), np.asarray(I, dtype=np.int64)

    @property
    def bytes_per_vector(self) -> float:
        """Bytes of one stored vector's code (graph links and shared codebooks excluded)."""
        self._need_fit()
        return float(self._code_bytes())

    def describe(self) -> dict:
        """What this is: spec, metric, plugin, paper, dimension, vectors, code and index bytes."""
        out = {
            "spec": self.spec,
            "metric": self.metric,
            "plugin": self.plugin,
            "paper": self.paper,
            "d": self.d,
            "ntotal": self.ntotal,
        }
        if self.d is not None:
            out["bytes_per_vector"] = self.bytes_per_vector
            if self.ntotal:
                out["index_bytes_per_vector"] = self._index_bytes() / self.ntotal
        out["settings"] = self.settings()
        return out

    def settings(self) -> dict:
        return {}

    # ------------------------------------------------------------------ files
    def save(self, path) -> Path:
        """One .npz archive at exactly `path` (atomic: a failed save keeps the previous file;
        `annrepro.atomic.atomic_savez`, which writes `format_version` first in the meta)."""
        from .atomic import atomic_savez

        self._need_fit()
        extra, arrays = self._state()
        meta = {
            "plugin": self.plugin,
            "spec": self.spec,
            "metric": self.metric,
            "d": self.d,
            "ntotal": self.ntotal,
            "state": extra,
        }
        return atomic_savez(path, arrays, meta, FORMAT_VERSION)

    def _need_fit(self) -> None:
        if self.d is None:
            raise InputError(f"{self.spec}: not fitted: call fit(xt) or load a saved method")

    def _index_bytes(self) -> int:
        return sum(a.nbytes for a in self._state()[1].values())

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def _fit(self, xt: np.ndarray, xb: np.ndarray | None) -> None:
        """Learn from xt (and the base xb where the method learns on its documents)."""

    @abc.abstractmethod
    def _add(self, xb: np.ndarray) -> None:
        """Encode and store xb after what is stored."""

    @abc.abstractmethod
    def _search(self, xq: np.ndarray, k: int):
        """(D, I) of the k best stored vectors per query."""

    @abc.abstractmethod
    def _code_bytes(self) -> float:
        """Bytes of one stored vector's code."""

    @abc.abstractmethod
    def _state(self) -> tuple[dict, dict]:
        """(JSON-able settings, {name: numpy array}) that `_from_state` restores."""

    @classmethod
    @abc.abstractmethod
    def _from_state(cls, meta: dict, arrays: dict) -> Method:
        """The method `_state` describes (d and ntotal are set by `load`)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, {self.metric!r}, ntotal={self.ntotal})"


def load(path) -> Method:
    """A method written by `Method.save`; a missing, damaged or foreign file is one InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such method file")
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in z.files if k != "meta"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(
            f"{path}: not a readable annrepro method file (truncated or another file? "
            f"{type(e).__name__}: {' '.join(str(e).split())[:120]})"
        ) from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path}: not an annrepro method file of format {FORMAT_VERSION}")
    plugin = meta.get("plugin")
    if plugin == "faiss":
        cls = FaissMethod
    else:
        ep = plugins().get(plugin)
        if ep is None:
            raise InputError(f"{path}: made by the {plugin!r} package, which is not installed")
        cls = method_class(ep.load(), meta["spec"], plugin)
    m = cls._from_state(meta, arrays)
    m.d, m.ntotal = meta["d"], meta["ntotal"]
    return m


class PluginMethod(Method):
    """Base of a paper package's methods (its module lists them in METHODS): the whole spec
    string must match SPEC (else a SettingError showing EXAMPLE), the settings must be among
    `known_settings()`; the match is `self.match`, the settings `self.overrides`."""

    SPEC: re.Pattern = re.compile(r"(?!)")
    EXAMPLE = ""

    def __init__(self, spec: str, metric: str = "l2", **overrides):
        super().__init__(spec, metric)
        m = self.SPEC.fullmatch(spec)
        if m is None:
            raise SettingError(f"method {spec!r}: expected {self.EXAMPLE}")
        check_settings(spec, overrides, self.known_settings())
        self.match, self.overrides = m, dict(overrides)

    @classmethod
    def known_settings(cls) -> set:
        return set()


# ---------------------------------------------------------------------- faiss
def _faiss_metric(metric: str):
    import faiss

    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def seed_faiss(index, seed: int) -> tuple[list[str], list]:
    """Draw every random choice that faiss makes in training `index` from `seed`, in place,
    before `train`. faiss fixes its own seeds (k-means 1234, ITQ 123, rotations 12345, LSQ
    0x12345): one draw of the baseline, whatever the run's seed; seeding it from the run's seed
    lets a multi-seed run measure the baseline's spread from draw to draw as it does the
    networks'. Seeded: the k-means of PQ, IVF, RQ and of OPQ's PQ (ClusteringParameters.seed,
    which also draws their subsample), ITQ's rotation (ITQMatrix.seed), a random rotation
    (faiss's "RR", LSH's own: RandomRotationMatrix.init), OPQ's initial rotation (faiss draws
    it from 1234; here the orthonormal factor of a N(0, 1) matrix from numpy's generator at the
    seed), LSQ's codes (random_seed). Not seeded: HNSW's level draws (its generator cannot be
    assigned from Python); PCA, SQ, Flat and LSH without rotation draw nothing.

    Returns the names of what was seeded (empty: the index draws nothing) and the faiss objects
    that must live as long as the index (OPQ's PQ, which the OPQMatrix only points to)."""
    import faiss

    seed = int(seed)
    names: list[str] = []
    keep: list = []

    def transform(vt) -> None:
        vt = faiss.downcast_VectorTransform(vt)
        if isinstance(vt, faiss.ITQTransform):
            vt.itq.seed = seed
            names.append("ITQ rotation")
        elif isinstance(vt, faiss.RandomRotationMatrix):
            vt.init(seed)
            names.append("random rotation")
        elif isinstance(vt, faiss.OPQMatrix):
            d, d2 = max(vt.d_in, vt.d_out), vt.d_out  # faiss pads the input to d_out when wider
            q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
            faiss.copy_array_to_vector(np.ascontiguousarray(q[:, :d2].T, np.float32).ravel(), vt.A)
            pq = faiss.ProductQuantizer(d2, vt.M, 8)  # OPQMatrix's own default PQ, seeded
            pq.cp.seed = seed
            vt.pq = pq
            keep.append(pq)
            names.append("OPQ rotation")

    def walk(ix) -> None:
        ix = faiss.downcast_index(ix)
        if isinstance(ix, faiss.IndexPreTransform):
            for i in range(ix.chain.size()):
                transform(ix.chain.at(i))
            walk(ix.index)
            return
        if isinstance(ix, faiss.IndexIVF):
            ix.cp.seed = seed
            names.append("IVF k-means")
        if isinstance(ix, faiss.IndexLSH) and ix.rotate_data:
            ix.rrot.init(seed)
            names.append("LSH rotation")
        pq = getattr(ix, "pq", None)
        if isinstance(pq, faiss.ProductQuantizer):
            pq.cp.seed = seed
            names.append("PQ k-means")
        rq = getattr(ix, "rq", None)
        if isinstance(rq, faiss.ResidualQuantizer):
            rq.cp.seed = seed
            names.append("RQ k-means")
        lsq = getattr(ix, "lsq", None)
        if isinstance(lsq, faiss.LocalSearchQuantizer):
            lsq.random_seed = seed
            names.append("LSQ codes")
        storage = getattr(ix, "storage", None)  # a graph index's storage (HNSW32,PQ8)
        if storage is not None:
            walk(storage)

    walk(index)
    return names, keep


class FaissStage:
    """A faiss index made by `faiss.index_factory(d, factory, metric)`: train / add / search /
    code size / bytes, for a whole method or as the stage after a learned transform.

    seed: when given, faiss's training draws from it (`seed_faiss`); None keeps faiss's own
    fixed seeds."""

    def __init__(self, factory: str, metric: str, seed: int | None = None):
        self.factory, self.metric = factory, metric
        self.seed = None if seed is None else int(seed)
        self.index = None
        self.seeded: list[str] = []  # what seed_faiss seeded
        self._keep: list = []

    def build(self, d: int):
        import faiss

        try:
            self.index = faiss.index_factory(int(d), self.factory, _faiss_metric(self.metric))
        except RuntimeError as e:
            why = " ".join(str(e).split())
            why = why.split("Error: ")[-1][:160] if "Error: " in why else why[-160:]
            raise SettingError(f"faiss factory string {self.factory!r} on d={d}: {why}") from None
        if self.seed is not None:
            self.seeded, self._keep = seed_faiss(self.index, self.seed)
        return self.index

    @staticmethod
    def draws(factory: str, metric: str, d: int) -> list[str]:
        """What faiss's training of this factory string on d dimensions draws at random (the
        names `seed_faiss` gives; empty: its result does not depend on a seed)."""
        stage = FaissStage(factory, metric, seed=0)
        stage.build(d)
        return list(stage.seeded)

    def train(self, xt: np.ndarray) -> None:
        index = self.build(xt.shape[1])
        if not index.is_trained:
            try:
                index.train(xt)
            except RuntimeError as e:  # e.g. a PCA / ITQ wider than the data
                why = " ".join(str(e).split())
                why = why.split("Error: ")[-1][:200] if "Error: " in why else why[-200:]
                raise SettingError(
                    f"faiss {self.factory!r} cannot train on {xt.shape[0]} x {xt.shape[1]} "
                    f"vectors: {why}"
                ) from None

    def add(self, x: np.ndarray, chunk: int = 1 << 18) -> None:
        for i0 in range(0, len(x), chunk):
            self.index.add(np.ascontiguousarray(x[i0 : i0 + chunk]))

    def search(self, xq: np.ndarray, k: int):
        return self.index.search(np.ascontiguousarray(xq), k)

    def code_bytes(self) -> int:
        """Code size of one vector: faiss's sa_code_size, or that of a graph index's storage."""
        import faiss

        index = faiss.downcast_index(self.index)
        if isinstance(index, faiss.IndexPreTransform):
            index = faiss.downcast_index(index.index)
        if hasattr(index, "storage") and index.storage is not None:  # HNSW / NSG
            index = faiss.downcast_index(index.storage)
        return int(index.sa_code_size())

    def to_array(self) -> np.ndarray:
        import faiss

        return faiss.serialize_index(self.index)

    @classmethod
    def from_array(cls, factory: str, metric: str, blob: np.ndarray) -> FaissStage:
        import faiss

        stage = cls(factory, metric)
        stage.index = faiss.deserialize_index(np.ascontiguousarray(blob, dtype=np.uint8))
        return stage


class FaissMethod(Method):
    """Any faiss factory string, trained, filled and searched by faiss itself; `seed` (the one
    setting it takes) draws its training's random choices (`seed_faiss`), else faiss's own."""

    def __init__(self, spec: str, metric: str = "l2", seed: int | None = None):
        super().__init__(spec, metric)
        self.stage = FaissStage(spec, metric, seed=seed)

    def _fit(self, xt, xb):
        self.stage.train(xt)

    def _add(self, xb):
        self.stage.add(xb)

    def _search(self, xq, k):
        return self.stage.search(xq, k)

    def _code_bytes(self):
        return self.stage.code_bytes()

    def _state(self):
        return {}, {"faiss_index": self.stage.to_array()}

    @classmethod
    def _from_state(cls, meta, arrays):
        m = cls(meta["spec"], meta["metric"])
        m.stage = FaissStage.from_array(meta["spec"], meta["metric"], arrays["faiss_index"])
        return m

    def describe(self) -> dict:
        return {**super().describe(), "what": f"faiss.index_factory({self.spec!r})"}


# ---------------------------------------------------------------------- helpers for plugins
def torch_to_array(obj) -> np.ndarray:
    """A torch-serialisable object as uint8 bytes (for `_state`)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8).copy()


def array_to_torch(a: np.ndarray):
    import torch

    return torch.load(io.BytesIO(np.asarray(a, dtype=np.uint8).tobytes()), weights_only=True)


def parse_overrides(items) -> dict[str, dict]:
    """CLI `--set PLUGIN.KEY=VALUE` items -> {plugin: {key: value}} (values parsed as JSON when
    they parse, e.g. 8, 0.02, true, else kept as text)."""
    out: dict[str, dict] = {}
    for item in items or ():
        key, eq, value = item.partition("=")
        plugin, dot, name = key.partition(".")
        if not eq or not dot or not plugin or not name:
            raise SettingError(
                f"--set {item!r}: expected PLUGIN.KEY=VALUE, e.g. catalyzer.epochs=8"
            )
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(plugin, {})[name] = parsed
    return out


def check_settings(spec: str, given, allowed) -> None:
    """SettingError naming the settings of `given` that the method of `spec` does not know."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise SettingError(
            f"method {spec!r}: unknown setting(s) {unknown}; known: {', '.join(sorted(allowed))}"
        )


def plugin_name(spec: str) -> str:
    """The plugin a spec string goes to ("faiss" for a factory string)."""
    name, _ = _plugin_for(split_spec(spec)[0])
    return name or "faiss"
