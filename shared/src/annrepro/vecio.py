"""Vector file IO: texmex (`.fvecs`, `.ivecs`, `.bvecs`), big-ann-benchmarks (`.fbin`, `.u8bin`,
`.ibin`) and `.npy`.

Every reader validates the file before it returns a single number: non-empty, size an exact
multiple of the record size (texmex) or equal to the header's n*d (big-ann), the same dimension
in every texmex row header, and plausible dimensions; `.npy` arrays must be real integer / float.
`read_vectors` then checks that float values stay finite after the cast to float32 (a float64
1e39 would become inf), and a cheap content test (`annrepro.validate.content_problem`) refuses
int32 ids named `.fvecs`, float vectors named `.ivecs` and a big-ann header with n and d swapped.
A bad file raises `VectorFileError` naming the file, the byte offset or row, and what was
expected. `write_vectors` refuses what the readers would refuse (NaN / inf, values beyond the
target dtype's range, non-real dtypes).

Formats:
- texmex: per row an int32 `d`, then `d` values (float32 for fvecs, uint8 for bvecs, int32 for
  ivecs).
- big-ann: a header of two uint32 (`n`, `d`), then `n*d` values (float32 / uint8 / int32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_path, atomic_write_bytes
from .errors import VectorFileError
from .validate import content_problem, float32_problem, real_dtype_problem, transposed_problem

__all__ = [
    "VectorFileError",
    "FORMATS",
    "read_vectors",
    "mmap_vectors",
    "vectors_shape",
    "write_vectors",
    "VectorWriter",
    "read_fvecs",
    "read_ivecs",
    "read_bvecs",
    "mmap_fvecs",
    "mmap_ivecs",
    "mmap_bvecs",
    "write_fvecs",
    "write_ivecs",
    "write_bvecs",
    "read_fbin",
    "read_u8bin",
    "read_ibin",
    "write_fbin",
    "write_u8bin",
    "write_ibin",
]

# Largest dimension we accept in a header: a guard against reading garbage (a float's bytes
# read as an int32 header give huge or negative values).
MAX_DIM = 1 << 20


# extension -> (layout, dtype)
FORMATS = {
    ".fvecs": ("texmex", np.dtype("<f4")),
    ".ivecs": ("texmex", np.dtype("<i4")),
    ".bvecs": ("texmex", np.dtype("u1")),
    ".fbin": ("bin", np.dtype("<f4")),
    ".u8bin": ("bin", np.dtype("u1")),
    ".i8bin": ("bin", np.dtype("i1")),
    ".ibin": ("bin", np.dtype("<i4")),
    ".npy": ("npy", None),
}


def _format(path: Path):
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise VectorFileError(
            path, f"unknown extension {ext!r}; expected one of {', '.join(sorted(FORMATS))}"
        )
    return FORMATS[ext]


def _check_file(path: Path) -> int:
    if not path.exists():
        raise VectorFileError(path, "no such file")
    if not path.is_file():
        raise VectorFileError(path, "not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise VectorFileError(path, "empty file (0 bytes)")
    return size


def _texmex_layout(path: Path, dtype: np.dtype, size: int):
    """Return (n, d) of a texmex file after checking its size and every row header."""
    if size < 4:
        raise VectorFileError(path, f"{size} bytes is shorter than one int32 dimension header")
    d = int(np.fromfile(path, dtype="<i4", count=1)[0])
    if d <= 0 or d > MAX_DIM:
        raise VectorFileError(
            path,
            f"row 0 (byte 0) declares dimension {d}; expected 1..{MAX_DIM}: "
            f"is this really a {path.suffix} file?",
        )
    rec = 4 + d * dtype.itemsize
    if size % rec:
        n_full = size // rec
        raise VectorFileError(
            path,
            f"file size {size} is not a multiple of the record size {rec} bytes "
            f"(int32 header + {d} x {dtype.name}): truncated after row {n_full - 1} "
            f"(byte {n_full * rec}) or written with another dtype",
        )
    n = size // rec
    # Every row must repeat the dimension: check all headers through a strided view.
    words = np.memmap(path, dtype="<i4", mode="r", shape=(size // 4,))
    heads = words[:: rec // 4] if rec % 4 == 0 else None
    if heads is None:  # bvecs with d % 4 != 0: records are not int32-aligned
        raw = np.memmap(path, dtype="u1", mode="r", shape=(n, rec))
        heads = np.ascontiguousarray(raw[:, :4]).view("<i4").ravel()
    bad = np.flatnonzero(np.asarray(heads[:n]) != d)
    if bad.size:
        r = int(bad[0])
        raise VectorFileError(
            path,
            f"row {r} (byte {r * rec}) declares dimension {int(heads[r])}, "
            f"but row 0 declares {d}: rows of different dimension or a corrupted file",
        )
    return n, d


def _bin_layout(path: Path, dtype: np.dtype, size: int):
    if size < 8:
        raise VectorFileError(path, f"{size} bytes is shorter than the 8-byte (n, d) header")
    n, d = (int(v) for v in np.fromfile(path, dtype="<u4", count=2))
    if n == 0 or d == 0:
        raise VectorFileError(path, f"header declares n={n}, d={d}: no vectors")
    if d > MAX_DIM:
        raise VectorFileError(path, f"header declares dimension {d} > {MAX_DIM}: corrupted?")
    expected = 8 + n * d * dtype.itemsize
    if size != expected:
        raise VectorFileError(
            path,
            f"header declares n={n}, d={d} ({dtype.name}) = {expected} bytes, "
            f"but the file has {size} bytes ("
            + ("truncated" if size < expected else "trailing bytes")
            + ")",
        )
    if d > n:  # fewer vectors than dimensions: rare for real data, the sign of a swapped header
        flat = np.memmap(path, dtype=dtype, mode="r", offset=8, shape=(n * d,))
        problem = transposed_problem(flat, n, d)
        if problem:
            raise VectorFileError(path, problem)
    return n, d


def vectors_shape(path) -> tuple[int, int]:
    """(n, d) of a vector file, validated, without reading its values."""
    path = Path(path)
    layout, dtype = _format(path)
    size = _check_file(path)
    if layout == "texmex":
        return _texmex_layout(path, dtype, size)
    if layout == "bin":
        return _bin_layout(path, dtype, size)
    arr = _load_npy(path, mmap=True)
    return arr.shape


def _load_npy(path: Path, mmap: bool):
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise VectorFileError(path, f"not a valid .npy file: {e}") from None
    problem = real_dtype_problem(arr.dtype)
    if problem:
        raise VectorFileError(path, problem)
    if arr.ndim != 2:
        raise VectorFileError(path, f"expected a 2-d array (n, d), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise VectorFileError(path, f"empty array of shape {arr.shape}")
    return arr


def mmap_vectors(path, start: int = 0, stop: int | None = None, sniff: bool = True) -> np.ndarray:
    """Memory-map rows [start, stop) of a vector file: only a sample of rows is read now.

    Returns a read-only (n, d) view (for texmex files a strided view that skips the row
    headers; copy with `np.ascontiguousarray` before handing it to faiss). `sniff`: test 256
    rows spread over the whole file for values of another type than the extension says
    (`annrepro.validate.content_problem`); pass False only for data known to be odd.
    """
    path = Path(path)
    layout, dtype = _format(path)
    n, d = vectors_shape(path)
    start, stop = _row_range(path, n, start, stop)
    if layout == "npy":
        return _load_npy(path, mmap=True)[start:stop]
    if layout == "texmex":
        rec_items = d + 4 // dtype.itemsize
        raw = np.memmap(path, dtype=dtype, mode="r", shape=(n, rec_items))
        arr = raw[:, 4 // dtype.itemsize :]
    else:
        arr = np.memmap(path, dtype=dtype, mode="r", offset=8, shape=(n, d))
    if sniff:
        problem = content_problem(arr, dtype, path.suffix)
        if problem:
            raise VectorFileError(path, problem)
    return arr[start:stop]


def _row_range(path, n, start, stop):
    stop = n if stop is None else stop
    if not (0 <= start <= stop <= n):
        raise VectorFileError(path, f"row range [{start}, {stop}) outside the file's {n} rows")
    if start == stop:
        raise VectorFileError(path, f"row range [{start}, {stop}) is empty")
    return start, stop


def read_vectors(
    path, start: int = 0, stop: int | None = None, check_finite: bool = True, sniff: bool = True
) -> np.ndarray:
    """Read rows [start, stop) of any supported vector file into memory (C-contiguous).

    Dispatches on the extension. Float data must be finite after the cast to float32 (the first
    bad row is named). Reads only the requested rows. `sniff`: see `mmap_vectors`.
    """
    path = Path(path)
    arr = np.ascontiguousarray(mmap_vectors(path, start, stop, sniff=sniff))
    if check_finite:
        check_finite_rows(arr, path, offset=start)
    return arr


def check_finite_rows(x: np.ndarray, what, offset: int = 0) -> None:
    """Raise VectorFileError naming the first row with NaN or inf, now or after the cast to
    float32 (what every consumer does)."""
    problem = float32_problem(np.asarray(x), offset)
    if problem:
        raise VectorFileError(what, problem)


def _texmex_bytes(x: np.ndarray, dtype: np.dtype) -> bytes:
    n, d = x.shape
    rec = np.empty((n, 4 + d * dtype.itemsize), dtype="u1")
    rec[:, :4] = np.frombuffer(np.int32(d).tobytes(), dtype="u1")
    rec[:, 4:] = np.ascontiguousarray(x, dtype=dtype).view("u1").reshape(n, -1)
    return rec.tobytes()


def _check_writable(path: Path, x: np.ndarray, dtype: np.dtype | None, offset: int = 0) -> None:
    """VectorFileError unless x: (n, d) reads back after being written as `dtype` (None: x's
    own, .npy): a real dtype, finite within float32 (readers cast to it), and for an integer
    `dtype` integral values in its range. Rows are numbered from `offset`."""
    problem = real_dtype_problem(x.dtype)
    if problem:
        raise VectorFileError(path, f"refusing to write: {problem}")
    problem = float32_problem(x, offset)
    if problem:
        raise VectorFileError(path, f"refusing to write: {problem}")
    if dtype is not None and dtype.kind in "iu":
        info = np.iinfo(dtype)
        integral = x.dtype.kind in "iu" or np.array_equal(x, np.round(x))
        if not integral or x.min() < info.min or x.max() > info.max:
            lo, hi = x.min(), x.max()
            raise VectorFileError(
                path,
                f"values do not fit {dtype.name} (range {lo:.6g}..{hi:.6g}"
                + ("" if integral else ", not all integers")
                + f"; {dtype.name} holds {info.min}..{info.max})",
            )


def write_vectors(path, x: np.ndarray) -> None:
    """Write x: (n, d) atomically (temporary file + rename) in the format of path's extension."""
    path = Path(path)
    layout, dtype = _format(path)
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise VectorFileError(path, f"refusing to write an array of shape {x.shape}")
    _check_writable(path, x, dtype)
    if layout == "npy":
        with atomic_path(path) as tmp:
            np.save(tmp, x)
        return
    if layout == "texmex":
        data = _texmex_bytes(x, dtype)
    else:
        header = np.array(x.shape, dtype="<u4").tobytes()
        data = header + np.ascontiguousarray(x, dtype=dtype).tobytes()
    atomic_write_bytes(path, data)


class VectorWriter:
    """Write an (n, d) vector file block by block, in the format of path's extension: the
    same file `write_vectors(path, x)` writes for the concatenated blocks, without x in memory.

        with VectorWriter("out.fvecs", n, d) as w:
            for i0 in range(0, n, rows):
                w.write(f(x[i0 : i0 + rows]))

    The file is written to a unique temporary beside `path` (opened once, each block appended)
    and renamed onto `path` when the block exits normally with exactly `n` rows written
    (`annrepro.atomic.atomic_path`): an exception, or a row count other than `n`, leaves the
    previous `path` (if any) untouched and no partial file. Each block is checked as
    `write_vectors` checks x (rows named from the start of the file). `n` is needed up front:
    the .npy and big-ann headers hold it.

    dtype: for .npy the array's dtype (default: the first block's); for the other formats the
    extension's (fvecs float32, ivecs int32, ...), which a given `dtype` must equal.
    Attributes `rows` and `blocks`: rows and blocks written so far.
    """

    def __init__(self, path, n: int, d: int, dtype=None):
        self.path = Path(path)
        self._layout, fmt_dtype = _format(self.path)
        if int(n) <= 0 or int(d) <= 0:
            raise VectorFileError(self.path, f"refusing to write an array of shape {(n, d)}")
        self.n, self.d = int(n), int(d)
        if self._layout == "npy":
            self.dtype = None if dtype is None else np.dtype(dtype)
            if self.dtype is not None:
                problem = real_dtype_problem(self.dtype)
                if problem:
                    raise VectorFileError(self.path, f"refusing to write: {problem}")
        else:
            if dtype is not None and np.dtype(dtype) != fmt_dtype:
                raise VectorFileError(
                    self.path,
                    f"{self.path.suffix} files hold {fmt_dtype.name}, not {np.dtype(dtype).name}",
                )
            self.dtype = fmt_dtype
        self.rows = self.blocks = 0
        self._f = None

    def __enter__(self) -> VectorWriter:
        import contextlib

        self._stack = contextlib.ExitStack()
        with self._stack:  # closed again if opening fails
            tmp = self._stack.enter_context(atomic_path(self.path))
            self._f = self._stack.enter_context(open(tmp, "wb"))
            if self._layout == "bin":
                self._f.write(np.array([self.n, self.d], dtype="<u4").tobytes())
            self._stack = self._stack.pop_all()
        return self

    def write(self, x: np.ndarray) -> None:
        """Append the rows of x: (m, d), the next m rows of the file."""
        if self._f is None:
            raise RuntimeError("VectorWriter.write outside its `with` block")
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.d:
            raise VectorFileError(
                self.path, f"refusing to write a block of shape {x.shape}: expected (m, {self.d})"
            )
        if self.rows + x.shape[0] > self.n:
            raise VectorFileError(
                self.path,
                f"a block of {x.shape[0]} rows after {self.rows} exceeds the {self.n} declared",
            )
        if x.shape[0] == 0:
            return
        _check_writable(self.path, x, self.dtype, offset=self.rows)
        if self._layout == "npy" and self.rows == 0:
            if self.dtype is None:
                self.dtype = x.dtype
            header = {
                "descr": np.lib.format.dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": (self.n, self.d),
            }
            np.lib.format.write_array_header_1_0(self._f, header)
        if self._layout == "texmex":
            self._f.write(_texmex_bytes(x, self.dtype))
        else:
            np.ascontiguousarray(x, dtype=self.dtype).tofile(self._f)
        self.rows += x.shape[0]
        self.blocks += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        stack, self._f = self._stack, None
        if exc_type is None and self.rows != self.n:
            err = VectorFileError(
                self.path, f"{self.rows} rows written, {self.n} declared: file not written"
            )
            stack.__exit__(type(err), err, None)  # removes the temporary
            raise err
        return stack.__exit__(exc_type, exc, tb)


# Named helpers, verb first (STYLE.md). Each checks the extension it is named for.
def _named(ext: str, fn):
    def f(path, *args, **kw):
        if Path(path).suffix.lower() != ext:
            raise VectorFileError(path, f"expected a {ext} file")
        return fn(path, *args, **kw)

    f.__name__ = f"{fn.__name__}_{ext[1:]}"
    f.__doc__ = f"{fn.__name__} for {ext} files (see `{fn.__name__}`)."
    return f


read_fvecs = _named(".fvecs", read_vectors)
read_ivecs = _named(".ivecs", read_vectors)
read_bvecs = _named(".bvecs", read_vectors)
read_fbin = _named(".fbin", read_vectors)
read_u8bin = _named(".u8bin", read_vectors)
read_ibin = _named(".ibin", read_vectors)
mmap_fvecs = _named(".fvecs", mmap_vectors)
mmap_ivecs = _named(".ivecs", mmap_vectors)
mmap_bvecs = _named(".bvecs", mmap_vectors)
write_fvecs = _named(".fvecs", write_vectors)
write_ivecs = _named(".ivecs", write_vectors)
write_bvecs = _named(".bvecs", write_vectors)
write_fbin = _named(".fbin", write_vectors)
write_u8bin = _named(".u8bin", write_vectors)
write_ibin = _named(".ibin", write_vectors)
