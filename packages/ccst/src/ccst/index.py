"""Public API: faiss indexes over CCST-compressed vectors, the paper's main use (Sec. 4.2).

    model = CCST.load("ccst4x.pt")                        # or CCST(compression_factor=4).fit(xt)
    index = build_index(model, xb, "HNSW32")              # graph on model.transform(xb)
    write_index(index, "idx.faiss")                       # atomic
    D, I = search_index(read_index("idx.faiss"), xq, 10)  # full-dimensional queries

search_at="full" (the default) is Sec. 4.2's protocol: "full-dimensional vectors are used to
search nearest neighbors. Full-dimensional vectors, feature vectors compressed with a factor of 2
and 4 are respectively used in indexing". The graph (HNSW or NSG) is built over the compressed
vectors model.transform(xb): float32 (nb, d / f), which is cheaper than over xb, and copied
unchanged into a faiss index of xb's dimension whose storage holds the full vectors xb (Flat) or
their 8-bit scalar-quantized codes (SQ8, Table 4 'CSST+HNSW+SQ8'). The result is an ordinary
faiss IndexHNSWFlat / IndexHNSWSQ / IndexNSGFlat: it is searched with the raw queries, needs no
model at search time, and is saved and read with faiss's own format.

search_at="compressed": the whole index lives in the compressed space (Tables 3 and 5: 'CSST+PQ',
'CSST+HNSW'); the queries are compressed by the same model before the search (`search_index`
with `model=`). Besides the graph kinds, any faiss `index_factory` string is accepted here
("IVF8,PQ16", "PQ16", "SQ8", ...), trained on the compressed xt (default the compressed xb).

Kinds (faiss factory spelling): "HNSW<M>" = "HNSW<M>,Flat", "HNSW<M>,SQ8", "NSG<R>" =
"NSG<R>,Flat". Construction parameters default to faiss's (efConstruction 40; NSG L = R + 32,
C = R + 100, a k-NN graph of GK = 64 by NN-descent); the paper's Sec. 4.2 settings are HNSW48
with efConstruction 512, and NSG60 with L 70, C 500.

The builders behind this module are `ccst._indexes.build_*` (the table producers use them
directly): the index returned here is the one they return, graph for graph.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from annrepro.atomic import atomic_path
from annrepro.errors import InputError
from annrepro.validate import check_metric, check_same_dim

from ccst import _indexes
from ccst.errors import DataError, first_line

__all__ = [
    "GraphKind",
    "SEARCH_AT",
    "build_index",
    "build_on_compressed",
    "parse_kind",
    "read_index",
    "search_index",
    "write_index",
]

log = logging.getLogger(__name__)

SEARCH_AT = ("full", "compressed")
_FAISS_ERROR = re.compile(r"^Error in .*? at \S+:\d+: (?:Error: )?(.+)$")
_KIND = re.compile(r"^(HNSW|NSG)([0-9]+)(?:,(Flat|SQ8))?$")


@dataclass(frozen=True)
class GraphKind:
    """A graph index kind: family "HNSW" (degree = M) or "NSG" (degree = R), storage "Flat" or
    "SQ8" (HNSW only)."""

    family: str
    degree: int
    storage: str = "Flat"

    def __str__(self) -> str:
        return f"{self.family}{self.degree},{self.storage}"


def parse_kind(kind: str) -> GraphKind | None:
    """The GraphKind of "HNSW32", "HNSW32,Flat", "HNSW32,SQ8", "NSG32" or "NSG32,Flat"; None for
    any other string (a faiss factory string, only valid with search_at="compressed").

    Raises InputError for a graph kind that cannot be built (degree 0, NSG with SQ8)."""
    m = _KIND.match(kind.strip())
    if m is None:
        return None
    family, degree, storage = m.group(1), int(m.group(2)), m.group(3) or "Flat"
    if degree < 2:
        raise InputError(f"index kind {kind!r}: the graph degree must be >= 2")
    if family == "NSG" and storage != "Flat":
        raise InputError(
            f"index kind {kind!r}: NSG stores its vectors flat (NSG<R> or NSG<R>,Flat)"
        )
    return GraphKind(family, degree, storage)


def _check_search_at(search_at: str) -> None:
    if search_at not in SEARCH_AT:
        raise InputError(f"search_at {search_at!r}: expected one of {', '.join(SEARCH_AT)}")


def _nndescent(knn: str, GK: int) -> _indexes.NNDescentParams | None:
    """faiss IndexNSG's own NN-descent settings (L = GK + 50, 10 iterations, S 10, R 100), or
    None (brute-force k-NN graph) for knn="brute"."""
    if knn == "brute":
        return None
    if knn != "nndescent":
        raise InputError(f"NSG k-NN graph {knn!r}: expected 'nndescent' or 'brute'")
    return _indexes.NNDescentParams(L=GK + 50, iter=10, S=10, R=100)


def build_on_compressed(
    xg: np.ndarray,
    xb: np.ndarray | None,
    kind: str = "HNSW32",
    metric: str = "l2",
    xtg: np.ndarray | None = None,
    xt: np.ndarray | None = None,
    ef_construction: int = 40,
    nsg_L: int | None = None,
    nsg_C: int | None = None,
    nsg_GK: int = 64,
    nsg_knn: str = "nndescent",
):
    """The index of `build_index` from vectors already compressed (no model here).

    Args:
        xg: float32 (nb, d_c), the compressed database the graph is built on.
        xb: (nb, d) float32 (or a uint8 memory map) full vectors the index searches
            (search_at="full"); None builds the index in the compressed space.
        kind: see the module docstring; a faiss factory string when xb is None.
        metric: "l2" or "ip".
        xtg: float32 (nt, d_c), compressed training vectors of the SQ8 ranges / a factory
            index's training (default xg); xt: (nt, d), the same for the full-dimensional SQ8
            storage (default xb).
        ef_construction: HNSW efConstruction.
        nsg_L, nsg_C, nsg_GK, nsg_knn: NSG construction pool, pruning candidates (defaults R + 32
            and R + 100), k of the k-NN graph, and how that graph is built ("nndescent" or
            "brute").

    Returns:
        a trained and filled faiss index: of dimension d (xb given) or d_c.

    Raises:
        InputError: an unknown kind or metric, xg and xb of other row counts, or a graph faiss
            refuses to build (e.g. NSG on fewer vectors than NN-descent needs), in one line.
    """
    check_metric(metric, "index metric")
    g = parse_kind(kind)
    if xb is not None and g is None:
        raise InputError(
            f"index kind {kind!r}: searched at full dimension, the index must be a graph "
            "(HNSW<M>, HNSW<M>,SQ8 or NSG<R>); other faiss kinds only with search_at='compressed'"
        )
    if xb is not None and (xb.ndim != 2 or xb.shape[0] != xg.shape[0]):
        raise InputError(
            f"compressed vectors {xg.shape} and full vectors {xb.shape}: expected the same "
            "number of rows (row i of both is database vector i)"
        )
    xtg = xg if xtg is None else xtg
    xt = xb if xt is None else xt
    nb = xg.shape[0]
    try:
        if g is None:
            index = faiss.index_factory(xg.shape[1], kind, _indexes.faiss_metric(metric))
            index.train(np.ascontiguousarray(xtg, dtype=np.float32))
            _indexes.add_in_chunks(index, xg)
        elif g.family == "HNSW" and g.storage == "Flat":
            if xb is None:
                index = _indexes.build_hnsw_flat(xg, g.degree, ef_construction, metric)
            else:
                index = _indexes.build_hnsw_flat_built_on(xg, xb, g.degree, ef_construction, metric)
        elif g.family == "HNSW":
            if xb is None:
                index = _indexes.build_hnsw_sq8(xtg, xg, g.degree, ef_construction, metric)
            else:
                index = _indexes.build_hnsw_sq8_built_on(
                    xtg, xg, xt, xb, g.degree, ef_construction, metric
                )
        else:
            kw = dict(
                R=g.degree,
                L=g.degree + 32 if nsg_L is None else nsg_L,
                C=g.degree + 100 if nsg_C is None else nsg_C,
                GK=nsg_GK,
                nndescent=_nndescent(nsg_knn, nsg_GK),
                metric=metric,
            )
            if xb is None:
                index = _indexes.build_nsg_flat(xg, **kw)
            else:
                index = _indexes.build_nsg_flat_built_on(xg, xb, **kw)
    except RuntimeError as e:  # faiss's C++ errors: several lines with its source location
        raise InputError(
            f"index kind {kind!r} on {nb} vectors: faiss refused it ({_faiss_reason(e)})"
        ) from None
    return index


def _faiss_reason(e: BaseException) -> str:
    """The useful part of a faiss error ('Error in <function> at <file>:<line>: Error: ...')."""
    line = first_line(e)
    m = _FAISS_ERROR.match(line)
    return m.group(1) if m else line


def build_index(
    model,
    xb: np.ndarray,
    kind: str = "HNSW32",
    search_at: str = "full",
    metric: str = "l2",
    xt: np.ndarray | None = None,
    ef_construction: int = 40,
    nsg_L: int | None = None,
    nsg_C: int | None = None,
    nsg_GK: int = 64,
    nsg_knn: str = "nndescent",
    max_memory_mb: float = 256.0,
):
    """A faiss index whose graph is built on the CCST-compressed database (Sec. 4.2).

    Args:
        model: a fitted `ccst.CCST` (anything with d_in, d_out and transform(x, max_memory_mb)).
        xb: (nb, d_in) float32 (or a uint8 memory map, read in chunks) database vectors.
        kind: "HNSW<M>", "HNSW<M>,SQ8", "NSG<R>", or with search_at="compressed" any faiss
            factory string (see the module docstring).
        search_at: "full": the index stores xb (or its SQ8 codes) and is searched with
            full-dimensional queries; "compressed": it stores the compressed vectors and its
            queries must be compressed by `model` (`search_index(..., model=model)`).
        metric: "l2" or "ip".
        xt: (nt, d_in) training vectors of the SQ8 ranges / a factory index (default xb).
        ef_construction, nsg_L, nsg_C, nsg_GK, nsg_knn: see `build_on_compressed`.
        max_memory_mb: bound on the activation memory of one CCST forward pass.

    Returns:
        a trained, filled faiss index of dimension d_in (search_at="full") or model.d_out.

    Raises:
        InputError: xb or xt of another dimension than the model, an unknown kind, metric or
            search_at, or a graph faiss refuses to build; DataError ("database vectors" or
            "learn vectors"): a vector CCST cannot compress (NaN / inf).
    """
    _check_search_at(search_at)
    check_metric(metric, "index metric")
    parse_kind(kind)  # a malformed graph kind fails before the compression
    check_same_dim(model=model.d_in, base=xb, learn=xt)
    xg = _compress(model, xb, max_memory_mb, "database vectors")
    xtg = None if xt is None else _compress(model, xt, max_memory_mb, "learn vectors")
    log.info("compressed %d x %d -> %d for %s", xb.shape[0], model.d_in, model.d_out, kind)
    return build_on_compressed(
        xg,
        xb if search_at == "full" else None,
        kind,
        metric,
        xtg=xtg,
        xt=xt,
        ef_construction=ef_construction,
        nsg_L=nsg_L,
        nsg_C=nsg_C,
        nsg_GK=nsg_GK,
        nsg_knn=nsg_knn,
    )


def _compress(model, x: np.ndarray, max_memory_mb: float, what: str) -> np.ndarray:
    """model.transform(x); a DataError (a row CCST cannot compress) names `what`."""
    try:
        return model.transform(x, max_memory_mb=max_memory_mb)
    except DataError as e:
        raise DataError(what, e.problem) from None


def search_index(
    index,
    xq: np.ndarray,
    k: int,
    model=None,
    ef_search: int | None = None,
    search_L: int | None = None,
    nprobe: int | None = None,
    max_memory_mb: float = 256.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Search a `build_index` index: D float32 (nq, k), I int64 (nq, k).

    xq: (nq, d) queries. If d equals the index's dimension they are searched as they are (an
    index searched at full dimension, or queries already compressed); otherwise `model` must
    compress d = model.d_in to the index's dimension model.d_out (search_at="compressed").
    ef_search / search_L / nprobe: the HNSW / NSG / IVF search knob (None keeps the index's).

    Raises:
        InputError: queries of a dimension neither the index nor the model takes, k < 1, or a
            knob the index does not have.
    """
    if k < 1:
        raise InputError(f"k={k}: expected a positive number of neighbours")
    if xq.ndim != 2:
        raise InputError(f"queries: expected a 2-d array (nq, d), got shape {xq.shape}")
    if xq.shape[1] != index.d:
        if model is None:
            raise InputError(
                f"queries of dimension {xq.shape[1]} but the index has dimension {index.d} "
                "(an index built with search_at='compressed' needs the model to compress them)"
            )
        check_same_dim(model=model.d_in, query=xq)
        if model.d_out != index.d:
            raise InputError(
                f"the model compresses to dimension {model.d_out} but the index has dimension "
                f"{index.d}: an index of another model"
            )
        xq = model.transform(xq, max_memory_mb=max_memory_mb)
    knobs = {"ef_search": ef_search, "search_L": search_L, "nprobe": nprobe}
    try:
        _indexes.set_search_params(index, **knobs)
    except (AttributeError, RuntimeError):
        given = ", ".join(f"{n}={v}" for n, v in knobs.items() if v is not None)
        raise InputError(f"{given}: not a search parameter of a {type(index).__name__}") from None
    return index.search(np.ascontiguousarray(xq, dtype=np.float32), k)


def write_index(index, path) -> Path:
    """faiss.write_index through a unique temporary and an atomic rename (annrepro.atomic): a
    reader sees the previous file or the whole new one. InputError naming `path` if it cannot
    be written."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; expected the path of an index file to write")
    try:
        with atomic_path(path) as tmp:
            faiss.write_index(index, str(tmp))
    except (OSError, RuntimeError) as e:
        raise InputError(f"{path}: cannot write the index ({_faiss_reason(e)})") from None
    return path


def read_index(path):
    """faiss.read_index, or InputError naming `path` in one line (missing, empty, not a faiss
    index file, truncated)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {'no such file' if not path.exists() else 'not a file'}")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes), not a faiss index")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as e:
        raise InputError(
            f"{path}: not a readable faiss index (truncated or another format? {_faiss_reason(e)})"
        ) from None
