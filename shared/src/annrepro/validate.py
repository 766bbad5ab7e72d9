"""The one validation layer: every reader, CLI and API of annrepro checks its input here.

Each check either returns normally or raises an `annrepro.errors.AnnreproError` subclass whose
message names the file (or role, option, variable) and the problem in one line.

- `real_dtype_problem`, `check_real`: only real integer / float arrays are vectors (complex would
  silently lose its imaginary part, bool / str / structured arrays are not vectors).
- `float32_problem`, `as_float32`: values must be finite *after* the cast to float32 that every
  consumer makes (a float64 1e39 passes `isfinite` and becomes inf).
- `as_f32`: the bare cast (C-contiguous float32, no check), for arrays already validated or
  computed inside the code (faiss and torch want exactly this layout).
- `content_problem`: cheap tests that a file's bytes are of the type its extension says (int32
  ids named `.fvecs` read as denormal floats; float bits named `.ivecs` read as huge integers).
- `transposed_problem`: a big-ann header whose n and d are swapped (same byte count).
- `check_same_dim`: roles that must share a dimension (learn / base / query, model / input,
  index / query), naming both roles, their files and dimensions.
- `check_ground_truth`, `read_ground_truth`: ids in range, integer dtype, one row per query,
  enough columns, no repeated id, and (where the vectors are at hand) nearest first.
- `check_metric`: "l2" or "ip".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import GroundTruthError, InputError

__all__ = [
    "METRICS",
    "FLOAT32_MAX",
    "real_dtype_problem",
    "check_real",
    "float32_problem",
    "as_float32",
    "as_f32",
    "content_problem",
    "transposed_problem",
    "check_same_dim",
    "check_ground_truth",
    "read_ground_truth",
    "check_metric",
]

METRICS = ("l2", "ip")
FLOAT32_MAX = float(np.finfo(np.float32).max)


# ----------------------------------------------------------------------------------- dtypes
def real_dtype_problem(dtype) -> str | None:
    """None if `dtype` is a real integer or float dtype, else what is wrong with it."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iuf" and dtype.fields is None:
        return None
    kind = {
        "c": "complex (its imaginary part would be lost)",
        "b": "bool",
        "U": "str",
        "S": "bytes",
        "V": "structured / void",
        "O": "object",
        "M": "datetime",
        "m": "timedelta",
    }.get(dtype.kind, dtype.kind)
    return f"dtype {dtype} is {kind}; expected a real integer or float array"


def check_real(x, what: str = "vectors") -> np.ndarray:
    """x as an array; raises InputError unless it has a real integer / float dtype."""
    x = np.asarray(x)
    problem = real_dtype_problem(x.dtype)
    if problem:
        raise InputError(f"{what}: {problem}")
    return x


# ----------------------------------------------------------------------------------- values
def _bad_rows(x: np.ndarray) -> np.ndarray:
    """Boolean per row (of a 2-d float array): NaN / inf now or after the cast to float32."""
    if x.dtype.itemsize <= 4:
        return ~np.isfinite(x).all(axis=1)
    with np.errstate(invalid="ignore"):
        return ~(np.isfinite(x) & (np.abs(x) <= FLOAT32_MAX)).all(axis=1)


def float32_problem(x: np.ndarray, offset: int = 0) -> str | None:
    """None if every value of x: (n, d) is finite as float32, else the first bad row and why.

    Integer arrays always pass (int64's range fits float32's). Rows are numbered from `offset`.
    """
    if x.dtype.kind != "f" or x.size == 0:
        return None
    x2 = x.reshape(len(x), -1) if x.ndim != 2 else x
    if x2.dtype.itemsize <= 4 and np.isfinite(x2).all():
        return None
    bad = _bad_rows(x2)
    if not bad.any():
        return None
    r = int(np.flatnonzero(bad)[0])
    row = x2[r]
    if np.isfinite(row).all():
        v = row[np.flatnonzero(np.abs(row) > FLOAT32_MAX)[0]]
        return (
            f"row {r + offset} contains {float(v):.4g}, beyond the float32 range "
            f"(+-{FLOAT32_MAX:.4g}): it would become inf"
        )
    return f"row {r + offset} contains NaN or inf"


def as_float32(x, what: str = "vectors", offset: int = 0) -> np.ndarray:
    """x as a C-contiguous float32 array, checked finite after the cast (InputError otherwise).

    x: any real array (n, d). Refuses complex / bool / str / structured dtypes.
    """
    x = check_real(x, what)
    problem = float32_problem(x, offset)
    if problem:
        raise InputError(f"{what}: {problem}")
    return np.ascontiguousarray(x, dtype=np.float32)


def as_f32(x) -> np.ndarray:
    """x as a C-contiguous float32 array, copying only when needed; no validation.

    For values the code made itself or already checked (`as_float32` is the checking cast for
    input). x: any array-like (n, d) or (n,).
    """
    return np.ascontiguousarray(x, dtype=np.float32)


# ------------------------------------------------------------------------- format confusions
# Thresholds of the content tests. A float32 vector file's values are not all tiny or huge,
# and an int32 file's values do not all read as ordinary floats: these hold in every real file
# of ../shared/data (MANIFEST.tsv), measured when this test was written.
_SNIFF_ROWS = 256  # rows sampled (evenly spaced): the test costs O(256 d) whatever the file size
_ROW_SHARE = 0.9  # share of sampled rows that must look wrong before a file is refused
_TINY, _HUGE = 1e-30, 1e30  # float32 magnitudes no real vector holds in every row
_PLAUSIBLE = (1e-6, 1e6)  # magnitudes of ordinary float data, for int32 bits read as float32


def _sample_rows(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    if n <= _SNIFF_ROWS:
        return np.asarray(x)
    return np.asarray(x[np.linspace(0, n - 1, _SNIFF_ROWS).astype(np.int64)])


def content_problem(x: np.ndarray, declared: np.dtype, ext: str) -> str | None:
    """Cheap test that the values of x (read as `declared`) really are of that type.

    - float32 file: in >= 90 % of the sampled rows some nonzero value has |x| < 1e-30 or
      > 1e30. Integers (ids, labels, uint8 pixels) stored as int32 read as such denormal /
      tiny floats; other dtypes' bytes give huge ones.
    - int32 file: in >= 90 % of the sampled rows every nonzero value, read as float32 bits, is an
      ordinary float (1e-6 <= |x| <= 1e6). Small ids never are (they read as denormals); float
      vectors always are.
    Returns the problem, or None. uint8 / int8 files have no such test.
    """
    declared = np.dtype(declared)
    s = _sample_rows(x)
    if s.size == 0:
        return None
    if declared.kind == "f" and declared.itemsize == 4:
        a = np.abs(s.astype(np.float32, copy=False))
        with np.errstate(invalid="ignore"):
            odd = ((a > 0) & (a < _TINY)) | ((a > _HUGE) & np.isfinite(a))
        share = odd.any(axis=1).mean()
        if share >= _ROW_SHARE:
            tiny = ((a > 0) & (a < _TINY)).any(axis=1).mean() >= 0.5
            what = (
                "denormal / tiny floats (|x| < 1e-30): integers (int32 ids or labels) stored "
                "in a float32 file? (rename it .ivecs / .ibin)"
                if tiny
                else "huge floats (|x| > 1e30): bytes of another dtype read as float32?"
            )
            return f"{share:.0%} of the sampled rows hold {what}; is this really a {ext} file?"
    if declared.kind == "i" and declared.itemsize == 4:
        i = np.ascontiguousarray(s, dtype="<i4")
        f = np.abs(i.view("<f4"))
        nz = i != 0
        with np.errstate(invalid="ignore"):
            plausible = (f >= _PLAUSIBLE[0]) & (f <= _PLAUSIBLE[1])
        rows = (plausible | ~nz).all(axis=1) & nz.any(axis=1)
        if rows.mean() >= _ROW_SHARE:
            r = int(np.flatnonzero(rows)[0])
            j = int(np.flatnonzero(nz[r])[0])
            v = int(i[r, j])
            as_float = float(np.array([v], dtype="<i4").view("<f4")[0])
            return (
                f"{rows.mean():.0%} of the sampled rows hold int32 values that are the bits of "
                f"ordinary floats (e.g. {v} = {as_float:.6g} as float32): float vectors stored "
                "in an int32 file? (rename it .fvecs / .fbin)"
            )
    return None


_STRUCT_MIN, _STRUCT_RATIO = 50.0, 10.0  # see transposed_problem
_STRUCT_CAP = 4096  # rows / columns used by the test


def _structure(x: np.ndarray) -> float:
    """Variance of the column means relative to what i.i.d. columns would give (about 1).

    Real vectors have dimensions with different means, so the right (n, d) scores far above 1;
    reading them with a wrong row length mixes the dimensions and scores near 1.
    """
    x = np.asarray(x, dtype=np.float64)
    r = x.shape[0]
    within = x.var(axis=0).mean() / r
    return float(x.mean(axis=0).var() / within) if within > 0 else 0.0


def transposed_problem(flat: np.ndarray, n: int, d: int) -> str | None:
    """For a big-ann file whose header declares more dimensions than vectors (d > n): whether
    the values are better explained as n and d swapped (same byte count).

    Measured on every file of ../shared/data: the true layout scores 17-34300, the swapped one
    0.6-15, so "swapped" needs the alternative to score >= 50 and 10x the declared one.
    """
    if d <= n or n * d < 64:
        return None
    rows = min(n, _STRUCT_CAP)
    cols = min(d, _STRUCT_CAP)
    declared = _structure(flat[: n * d].reshape(n, d)[:rows, :cols])
    alt_rows = min(d, _STRUCT_CAP)
    alt = _structure(flat[: alt_rows * n].reshape(alt_rows, n))
    if alt >= _STRUCT_MIN and alt >= _STRUCT_RATIO * max(declared, 1.0):
        return (
            f"header declares n={n}, d={d}, but the values look like {d} vectors of dimension "
            f"{n} (column structure {alt:.0f} against {declared:.1f}): n and d swapped in the "
            "header?"
        )
    return None


# ------------------------------------------------------------------------------- dimensions
def _shape_of(v):
    if isinstance(v, (int, np.integer)):
        return None, int(v)
    shape = tuple(getattr(v, "shape", v))
    if len(shape) != 2:
        raise InputError(f"expected a 2-d array (n, d), got shape {shape}")
    return shape, int(shape[1])


def check_same_dim(*, paths: dict | None = None, what: str | None = None, **roles) -> int:
    """Check that every role has the same dimension; return it.

    roles: role name -> array (n, d), shape tuple or dimension int (None values are skipped);
    paths: role name -> file the role came from (named in the message); what: a prefix (e.g.
    the data set's name). Raises InputError naming the two roles, their files and dimensions,
    with a hint when one shape looks transposed (a swapped big-ann header).
    """
    paths = paths or {}
    seen = [(role, *_shape_of(v)) for role, v in roles.items() if v is not None]
    if not seen:
        raise InputError("check_same_dim needs at least one role")
    role0, shape0, d0 = seen[0]
    for role, shape, d in seen[1:]:
        if d == d0:
            continue

        def name(r):
            return f"{r} ({paths[r]})" if r in paths else r

        msg = f"{name(role)} dimension {d} differs from {name(role0)} dimension {d0}"
        if shape is not None and shape[0] == d0:
            msg += f" (read as {shape[1]} x {shape[0]}, it would fit: n and d swapped?)"
        elif shape0 is not None and shape0[0] == d:
            msg += f" ({role0} read as {shape0[1]} x {shape0[0]} would fit: n and d swapped?)"
        raise InputError(f"{what}: {msg}" if what else msg)
    return d0


# ----------------------------------------------------------------------------- ground truth
def check_metric(metric: str, what: str = "metric") -> str:
    """The metric if it is 'l2' or 'ip', else a SettingError naming what."""
    if metric not in METRICS:
        raise InputError(f"{what}: unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    return metric


_ORDER_ROWS = 1000  # queries whose ordering is checked (evenly spaced): O(rows k d)


def check_ground_truth(
    gt,
    nb: int | None,
    nq: int | None,
    k: int | None = None,
    xb=None,
    xq=None,
    metric: str | None = None,
    path=None,
    what: str = "ground truth",
    rtol: float = 1e-4,
) -> np.ndarray:
    """Validate a ground truth `gt: int (nq, >=k)` of exact neighbour ids (nearest first).

    Checks: 2-d integer ids (a float array, e.g. a distances file, is refused), one row per
    query (`nq`), at least `k` columns, every id in [0, nb), no id twice in a row, and, when
    `xb`, `xq` (and `metric`, default "l2") are given, every row ordered nearest first (for a
    sample of 1000 queries, to a relative tolerance `rtol` of the row's distance scale).
    `nb` / `nq` None skip those checks. Raises GroundTruthError naming `path` (else `what`) and
    the first bad query; returns gt as int64.
    """
    who = str(path) if path is not None else what
    gt = np.asarray(gt)
    if gt.ndim != 2:
        raise GroundTruthError(f"{who}: expected a 2-d array (nq, k) of ids, got shape {gt.shape}")
    if gt.dtype.kind == "f":
        raise GroundTruthError(
            f"{who}: holds {gt.dtype} values, not integer ids: a distances file given as "
            "ground truth?"
        )
    if gt.dtype.kind not in "iu":
        raise GroundTruthError(f"{who}: dtype {gt.dtype}; expected integer neighbour ids")
    if nq is not None and gt.shape[0] != nq:
        fewer = "fewer" if gt.shape[0] < nq else "more"
        raise GroundTruthError(
            f"{who}: {gt.shape[0]} rows, {fewer} than the {nq} queries: ground truth of "
            "another query set"
        )
    if k is not None and gt.shape[1] < k:
        raise GroundTruthError(
            f"{who}: {gt.shape[1]} neighbours per query, fewer than the k={k} asked for"
        )
    if gt.size == 0:
        raise GroundTruthError(f"{who}: empty ground truth of shape {gt.shape}")
    gt = gt.astype(np.int64, copy=False)
    if gt.min() < 0:
        r = int(np.flatnonzero((gt < 0).any(axis=1))[0])
        raise GroundTruthError(
            f"{who}: query {r} lists id {int(gt[r].min())}: ids must be >= 0 (padding or "
            "another format?)"
        )
    if nb is not None and gt.max() >= nb:
        r = int(np.flatnonzero((gt >= nb).any(axis=1))[0])
        raise GroundTruthError(
            f"{who}: query {r} lists id {int(gt[r].max())}, outside [0, {nb}) of the base: "
            "ground truth from another data set or base size"
        )
    srt = np.sort(gt, axis=1)
    dup = (srt[:, 1:] == srt[:, :-1]).any(axis=1)
    if dup.any():
        r = int(np.flatnonzero(dup)[0])
        row = srt[r]
        v = int(row[1:][row[1:] == row[:-1]][0])
        raise GroundTruthError(f"{who}: query {r} lists id {v} twice: not an exact ground truth")
    if xb is not None and xq is not None:
        _check_order(gt, xb, xq, metric or "l2", who, rtol)
    return gt


def _check_order(gt, xb, xq, metric, who, rtol):
    check_metric(metric)
    nq = gt.shape[0]
    if xq.shape[0] != nq:
        raise GroundTruthError(f"{who}: {nq} rows but {xq.shape[0]} queries")
    check_same_dim(base=xb, query=xq, what=who)
    rows = np.arange(nq) if nq <= _ORDER_ROWS else np.linspace(0, nq - 1, _ORDER_ROWS)
    rows = rows.astype(np.int64)
    q = np.asarray(xq[rows], dtype=np.float64)
    ids = gt[rows]
    uniq, inv = np.unique(ids, return_inverse=True)
    vecs = np.asarray(xb[uniq], dtype=np.float64)[inv.reshape(ids.shape)]
    if metric == "l2":
        dist = ((q[:, None, :] - vecs) ** 2).sum(-1)
    else:
        dist = -np.einsum("qd,qkd->qk", q, vecs)  # larger inner product = nearer
    scale = np.maximum(np.abs(dist).max(axis=1, keepdims=True), 1e-30)
    wrong = dist[:, :-1] - dist[:, 1:] > rtol * scale
    if wrong.any():
        i = int(np.flatnonzero(wrong.any(axis=1))[0])
        j = int(np.flatnonzero(wrong[i])[0])
        far = wrong.mean() > 0.9
        sign = 1 if metric == "l2" else -1
        raise GroundTruthError(
            f"{who}: query {int(rows[i])} is not ordered nearest first ({metric}: neighbour {j} "
            f"at {sign * dist[i, j]:.6g}, neighbour {j + 1} at {sign * dist[i, j + 1]:.6g})"
            + (": rows ordered farthest first?" if far else ": another metric or base?")
        )


def read_ground_truth(
    path,
    nb: int | None,
    nq: int | None,
    k: int | None = None,
    xb=None,
    xq=None,
    metric: str | None = None,
) -> np.ndarray:
    """Read a ground-truth file (.ivecs, .ibin, .npy, ...) and validate it with
    `check_ground_truth`; returns int64 (nq, >=k). For the paper CLIs' `--gt` options."""
    from .vecio import read_vectors

    gt = read_vectors(Path(path))
    return check_ground_truth(gt, nb, nq, k, xb=xb, xq=xq, metric=metric, path=path)
