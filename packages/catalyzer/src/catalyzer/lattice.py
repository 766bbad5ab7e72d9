"""Spherical Zn lattice quantizer (Sablayrolles et al., ICLR 2019, Sec. 4.2 and Appendix B).

The codebook is `S_d^r`, the integer points of `Z^d` on the sphere of squared radius `r2`:
`{z in Z^d : sum_i z_i^2 = r2}`. A vector `y` is quantized to the point of `S_d^r` with the
largest inner product `y . z` (Eq. 5), which does not depend on the norm of `y`. Codes are the
rank of the point in faiss's enumeration of `S_d^r` (atoms, then permutations in a combinatorial
number system, then signs: Appendix B). Search is asymmetric (Sec. 4.2): base codes are decoded
to unit vectors `q(f(x)) / r` and compared with the unquantized query by exact L2 distance.

faiss does the work (`ZnSphereSearch` for the nearest point, `ZnSphereCodec` for codes); this
module wraps it with numpy arrays, exact point counts and code sizes. faiss's codec stores codes in
a uint64, so `encode` / `decode` need `code_size_bits <= 64`; `quantize` works for any size.
Known faiss 1.15 traps (../shared/PITFALLS.md): `decode` returns integer points of norm
`sqrt(r2)`, not unit vectors; `ZnSphereCodec.find_nn` returned id 0 for every query in our tests
(wrong results), so search decodes the codes and calls `faiss.knn` instead.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from functools import cache

import numpy as np

__all__ = [
    "ZnSphereLattice",
    "count_sphere_points",
    "count_atoms",
    "atom_permutations",
    "atom_sign_bits",
    "atom_points",
]

log = logging.getLogger(__name__)


@cache
def _representation_counts(d: int, r2: int) -> tuple[int, ...]:
    """Number of z in Z^d with |z|^2 = s, for s = 0..r2 (exact python ints)."""
    counts = [1] + [0] * r2  # Z^0: only the empty vector, of squared norm 0
    squares = [z * z for z in range(math.isqrt(r2) + 1)]
    for _ in range(d):
        nxt = [0] * (r2 + 1)
        for s, c in enumerate(counts):
            if c == 0:
                continue
            for z, z2 in enumerate(squares):
                if s + z2 > r2:
                    break
                nxt[s + z2] += c * (1 if z == 0 else 2)  # +z and -z
        counts = nxt
    return tuple(counts)


def count_sphere_points(d: int, r2: int) -> int:
    """|S_d^r|: number of integer points of Z^d with squared norm r2 (exact; Appendix B, Fig. 6).

    `count_sphere_points(24, 79) == 17319684851070915840` (63.91 bits).
    """
    if d < 1 or r2 < 0:
        raise ValueError(f"need d >= 1 and r2 >= 0, got d={d}, r2={r2}")
    return _representation_counts(d, r2)[r2]


def count_atoms(d: int, r2: int) -> int:
    """Number of atoms of S_d^r: non-increasing non-negative integer vectors of squared norm r2
    with at most d non-zero entries (Appendix B, "Atoms"; Figure 6)."""

    @cache
    def parts(rest: int, max_part: int, slots: int) -> int:
        if rest == 0:
            return 1
        if slots == 0:
            return 0
        return sum(
            parts(rest - z * z, z, slots - 1) for z in range(min(max_part, math.isqrt(rest)), 0, -1)
        )

    return parts(r2, math.isqrt(r2), d)


def atom_permutations(atom) -> int:
    """Distinct permutations of an atom: d! / prod(multiplicity!) (Appendix B, step 2).

    For the paper's example atom (2, 2, 1, 1, 0, 0, 0, 0): 8! / (2! 2! 4!) = 420 (the paper
    prints 240).
    """
    atom = [abs(int(a)) for a in atom]
    n = math.factorial(len(atom))
    for m in Counter(atom).values():
        n //= math.factorial(m)
    return n


def atom_sign_bits(atom) -> int:
    """Sign bits of an atom: one per non-zero coordinate (Appendix B, step 3)."""
    return sum(1 for a in atom if int(a) != 0)


def atom_points(atom) -> int:
    """Points of S_d^r whose normalised form is this atom: permutations x 2^(sign bits)."""
    return atom_permutations(atom) << atom_sign_bits(atom)


class ZnSphereLattice:
    """The spherical lattice quantizer `S_d^r` with squared radius `r2` (Sec. 4.2, Appendix B).

    Args:
        d: dimension (the catalyzer's d_out; 24 for 64-bit codes in Table 1).
        r2: squared radius (79 for 64 bits in 24-d, Appendix B).
    """

    def __init__(self, d: int, r2: int):
        import faiss
        from annrepro.errors import InputError

        self.d = int(d)
        self.r2 = int(r2)
        if not 1 <= self.d <= 64:  # faiss's ZnSphereSearch; the paper's lattices are 8-24-d
            raise InputError(
                f"the spherical lattice S_{self.d}: faiss's ZnSphereSearch needs 1 <= d <= 64 (for "
                "a wider catalyzer use sign codes, or validate with val_quantizer 'sign' / 'none')"
            )
        self.r = math.sqrt(self.r2)
        self.nv = count_sphere_points(self.d, self.r2)
        if self.nv == 0:
            raise ValueError(f"S_{d}^r with r2={r2} is empty")
        self._search = faiss.ZnSphereSearch(self.d, self.r2)
        self._codec = faiss.ZnSphereCodec(self.d, self.r2) if self.nv < 2**64 else None
        if self._codec is not None and int(self._codec.nv) != self.nv:
            raise RuntimeError(f"faiss counts {self._codec.nv} points, expected {self.nv}")

    def __repr__(self) -> str:
        return f"ZnSphereLattice(d={self.d}, r2={self.r2}, {self.code_bits:.2f} bits)"

    @property
    def code_bits(self) -> float:
        """log2 of the number of lattice points: the information content of a code."""
        return math.log2(self.nv)

    @property
    def code_size_bits(self) -> int:
        """Bits of a code: ceil(log2(#points)) (64 for d=24, r2=79)."""
        return max(1, (self.nv - 1).bit_length())

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.d:
            raise ValueError(f"expected a float32 (n, {self.d}) array, got shape {x.shape}")
        return x

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Nearest lattice points (Eq. 5).

        Args:
            x: float32 (n, d), any norm (the point maximising the inner product is returned).
        Returns:
            float32 (n, d) integer-valued points of squared norm r2.
        """
        import faiss

        x = self._prepare(x)
        n = x.shape[0]
        z = np.empty((n, self.d), dtype=np.float32)
        dp = np.empty(n, dtype=np.float32)
        if n:
            self._search.search_multi(n, faiss.swig_ptr(x), faiss.swig_ptr(z), faiss.swig_ptr(dp))
        return z

    def _need_codec(self):
        if self._codec is None:
            raise ValueError(
                f"{self!r} needs {self.code_size_bits} bits; faiss's codec stores codes in 64 bits"
            )
        return self._codec

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Codes of the nearest lattice points of x.

        Args:
            x: float32 (n, d), any norm.
        Returns:
            uint64 (n,) codes in [0, nv).
        """
        import faiss

        codec = self._need_codec()
        x = self._prepare(x)
        codes = np.empty(x.shape[0], dtype=np.uint64)
        if x.shape[0]:
            codec.encode_multi(x.shape[0], faiss.swig_ptr(x), faiss.swig_ptr(codes))
        return codes

    def decode_points(self, codes: np.ndarray) -> np.ndarray:
        """Lattice points of codes: float32 (n, d) integer-valued, squared norm r2."""
        import faiss

        codec = self._need_codec()
        codes = np.ascontiguousarray(codes, dtype=np.uint64).ravel()
        z = np.empty((codes.shape[0], self.d), dtype=np.float32)
        if codes.shape[0]:
            codec.decode_multi(codes.shape[0], faiss.swig_ptr(codes), faiss.swig_ptr(z))
        return z

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Unit-norm reconstructions q(f(x)) / r of codes (Sec. 4.2): float32 (n, d)."""
        z = self.decode_points(codes)
        z *= np.float32(1.0 / self.r)
        return z

    def search(self, xq: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Asymmetric k-NN search (Sec. 4.2): unquantized queries against decoded base codes.

        Args:
            xq: float32 (nq, d) queries (unit norm in the paper's setting).
            codes: uint64 (nb,) base codes from `encode`.
            k: number of neighbours.
        Returns:
            D float32 (nq, k) squared L2 distances ||xq - q(x)/r||^2, I int64 (nq, k).
        """
        import faiss

        xq = self._prepare(xq)
        xb = self.decode(codes)
        return faiss.knn(xq, xb, k)
