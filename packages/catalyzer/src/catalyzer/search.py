"""Search in the catalyzed, quantized space (Sablayrolles et al., Sec. 4.1, 4.2).

One module for every quantized search of the package:

- `quantized_search`: float outputs on both sides, the base quantized on the fly. The training
  loop's validation score (`train.validate`) and Table 2's Catalyzer+sign rows search this way;
  Figure 5's lattice curves are the same "zn_<r2>" search.
- `encode_outputs`, `check_codes`, `search_codes`: stored codes, as `Catalyzer.encode` /
  `Catalyzer.search` and the command line use them.
  - "zn_<r2>": uint64 (n,) codes of the spherical lattice S_d^r, searched asymmetrically. The
    query is not quantized; D is the squared L2 distance to q(y) / r (Sec. 4.2).
  - "sign": uint8 (n, ceil(d / 8)) packed sign bits. The query is binarised too; D is the
    Hamming distance (Sec. 4.1).

Both routes give the same neighbours for the same outputs. For a lattice, decode(encode(y)) is
quantize(y) / r.
"""

from __future__ import annotations

import numpy as np
from annrepro.errors import InputError  # a ValueError: bad input, one CLI line

__all__ = ["check_codes", "code_lattice", "encode_outputs", "quantized_search", "search_codes"]


def _f32(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def quantized_search(yq: np.ndarray, yb: np.ndarray, k: int, quantizer: str) -> np.ndarray:
    """Search catalyzed queries in a catalyzed base quantized on the fly.

    Args:
        yq: float32 (nq, d) unit-norm outputs; yb: float32 (nb, d).
        quantizer: "zn_<r2>" (base quantized to S_d^r / r, asymmetric search, Sec. 4.2),
            "sign" (both binarised, Hamming search, Sec. 4.1) or "none" (exact search).
    Returns:
        I int64 (nq, k).
    """
    import faiss

    from .binary import hamming_knn, sign_index

    yq, yb = _f32(yq), _f32(yb)
    if quantizer == "none":
        return faiss.knn(yq, yb, k)[1]
    if quantizer == "sign":
        return hamming_knn(sign_index(yb.shape[1]), yb, yb, yq, k)
    if quantizer.startswith("zn_"):
        from .lattice import ZnSphereLattice

        lat = ZnSphereLattice(yb.shape[1], int(quantizer[3:]))
        return faiss.knn(yq, lat.quantize(yb) * np.float32(1 / lat.r), k)[1]
    raise InputError(f"unknown quantizer {quantizer!r} (zn_<r2>, sign or none)")


def code_lattice(d_out: int, quantizer: str):
    """The `ZnSphereLattice` of a "zn_<r2>" quantizer whose codes fit faiss's 64-bit codec."""
    from .lattice import ZnSphereLattice

    if not quantizer.startswith("zn_"):
        raise InputError(f"unknown quantizer {quantizer!r}: 'zn_<r2>' or 'sign'")
    lat = ZnSphereLattice(d_out, int(quantizer[3:]))
    if lat.code_size_bits > 64:
        raise InputError(
            f"{lat!r}: {lat.code_size_bits}-bit codes exceed the 64 bits of faiss's codec"
        )
    return lat


def encode_outputs(y: np.ndarray, quantizer: str) -> np.ndarray:
    """Codes of outputs y float32 (n, d): uint64 (n,) for "zn_<r2>"; uint8 (n, ceil(d / 8))
    for "sign"."""
    if quantizer == "sign":
        return np.packbits(y > 0, axis=1)
    return code_lattice(y.shape[1], quantizer).encode(y)


def check_codes(codes: np.ndarray, quantizer: str, d_out: int):
    """InputError unless codes are what `encode_outputs` gives for d_out-dimensional outputs.

    Returns:
        the lattice of a "zn_<r2>" quantizer, None for "sign".
    """
    codes = np.asarray(codes)
    if quantizer == "sign":
        width = (d_out + 7) // 8
        if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != width:
            raise InputError(
                f"sign codes of this catalyzer (d_out {d_out}) are uint8 (n, {width}); got "
                f"{codes.dtype} {codes.shape}"
            )
        return None
    lat = code_lattice(d_out, quantizer)
    if codes.dtype != np.uint64 or codes.ndim != 1:
        raise InputError(
            f"{quantizer} codes are uint64 (n,) (from encode(x, {quantizer!r})); got "
            f"{codes.dtype} {codes.shape}"
        )
    return lat


def search_codes(yq: np.ndarray, codes: np.ndarray, k: int, lattice=None):
    """k-NN of outputs yq float32 (nq, d) among stored codes: (D, I), I int64 (nq, k).

    lattice: what `check_codes` returned. A lattice gives the asymmetric search of Sec. 4.2
    (D: squared L2). None gives sign codes and D as Hamming distances (Sec. 4.1).
    """
    import faiss

    if lattice is not None:
        return lattice.search(yq, codes, k)
    codes = np.ascontiguousarray(codes)
    index = faiss.IndexBinaryFlat(8 * codes.shape[1])
    index.add(codes)
    return index.search(np.packbits(yq > 0, axis=1), k)
