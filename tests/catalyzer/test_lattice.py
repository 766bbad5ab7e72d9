"""Spherical Zn lattice quantizer (catalyzer Sec. 4.2, Appendix B)."""

import math

import numpy as np
import pytest
from catalyzer.lattice import (
    ZnSphereLattice,
    atom_permutations,
    atom_points,
    atom_sign_bits,
    count_atoms,
    count_sphere_points,
)


@pytest.fixture(scope="module")
def lat24():
    return ZnSphereLattice(24, 79)


def _brute_count(d, r2):
    """Points of Z^d with squared norm r2, by enumeration (small d only)."""
    r = math.isqrt(r2)
    grids = np.meshgrid(*[np.arange(-r, r + 1)] * d, indexing="ij")
    return int(((sum(g * g for g in grids)) == r2).sum())


def test_code_size_24_79_is_64_bits(lat24):
    # Appendix B: "to extract a 64-bit representation in 24D we use r^2 = 79"
    assert lat24.nv == 17319684851070915840
    assert lat24.code_bits == pytest.approx(63.909, abs=1e-3)
    assert lat24.code_size_bits == 64


@pytest.mark.parametrize("d,r2", [(2, 5), (3, 9), (4, 6), (5, 10)])
def test_point_count_matches_enumeration(d, r2):
    assert count_sphere_points(d, r2) == _brute_count(d, r2)


def test_counts_agree_with_faiss():
    import faiss

    for d, r2 in [(8, 10), (16, 10), (24, 10), (32, 36), (40, 24)]:
        assert count_sphere_points(d, r2) == int(faiss.ZnSphereCodec(d, r2).nv)
    assert count_atoms(24, 79) == faiss.ZnSphereSearch(24, 79).natom


def test_readme_code_sizes():
    # the authors' README: r^2 for 16 / 32 / 64 bits in d = 24, 32, 40
    sizes = {24: (3, 10, 79), 32: (3, 8, 36), 40: (2, 7, 24)}
    for d, r2s in sizes.items():
        bits = [ZnSphereLattice(d, r2).code_size_bits for r2 in r2s]
        assert bits[0] <= 16 and bits[1] <= 32 and bits[2] <= 64, (d, bits)


def test_appendix_b_atom_arithmetic():
    atom = (2, 2, 1, 1, 0, 0, 0, 0)
    # the paper prints 8!/(2!2!4!) = 240; the quotient is 420
    assert atom_permutations(atom) == 420 == math.factorial(8) // (2 * 2 * 24)
    assert atom_sign_bits(atom) == 4
    assert atom_points(atom) == 420 * 16
    # the three atoms of S_8 with r^2 = 10 cover all its points
    atoms = [(3, 1, 0, 0, 0, 0, 0, 0), atom, (2, 1, 1, 1, 1, 1, 1, 0)]
    assert count_atoms(8, 10) == 3
    assert sum(atom_points(a) for a in atoms) == count_sphere_points(8, 10)


def test_encode_decode_gives_lattice_points(lat24):
    x = np.random.default_rng(0).standard_normal((200, 24)).astype(np.float32)
    codes = lat24.encode(x)
    assert codes.dtype == np.uint64 and codes.shape == (200,)
    z = lat24.decode_points(codes)
    np.testing.assert_array_equal(z, np.round(z))  # integer coordinates
    np.testing.assert_array_equal((z.astype(np.int64) ** 2).sum(axis=1), 79)
    np.testing.assert_array_equal(z, lat24.quantize(x))  # code = nearest point (Eq. 5)
    # unit-norm reconstructions q(x) / r (Sec. 4.2)
    np.testing.assert_allclose(np.linalg.norm(lat24.decode(codes), axis=1), 1.0, rtol=1e-6)


def test_quantize_is_scale_invariant_and_nearest(lat24):
    x = np.random.default_rng(1).standard_normal((100, 24)).astype(np.float32)
    z = lat24.quantize(x)
    np.testing.assert_array_equal(z, lat24.quantize(3.5 * x))
    # no lattice point of another vector is closer to r * x / |x| than its own (Eq. 5)
    y = lat24.r * x / np.linalg.norm(x, axis=1, keepdims=True)
    own = ((y - z) ** 2).sum(1)
    other = ((y[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    assert (own[:, None] <= other + 1e-4).all()


def test_nearest_point_of_a_lattice_point_is_itself(lat24):
    x = np.random.default_rng(2).standard_normal((100, 24)).astype(np.float32)
    z = lat24.quantize(x)
    np.testing.assert_array_equal(lat24.quantize(z), z)
    codes = lat24.encode(z)
    np.testing.assert_array_equal(lat24.encode(lat24.decode_points(codes)), codes)


def test_codes_are_distinct_for_distinct_points(lat24):
    x = np.random.default_rng(3).standard_normal((500, 24)).astype(np.float32)
    z = lat24.quantize(x)
    codes = lat24.encode(x)
    assert len(np.unique(codes)) == len(np.unique(z, axis=0))
    assert (codes < np.uint64(lat24.nv)).all()


def test_asymmetric_search_ranks_by_decoded_distance(lat24):
    rng = np.random.default_rng(4)
    xb = rng.standard_normal((300, 24)).astype(np.float32)
    xq = rng.standard_normal((5, 24)).astype(np.float32)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    codes = lat24.encode(xb)
    D, I = lat24.search(xq, codes, 10)
    rec = lat24.decode(codes)
    ref = ((xq[:, None, :] - rec[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(D, np.take_along_axis(ref, I, axis=1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(D[:, 0], ref.min(axis=1), rtol=1e-4, atol=1e-5)


def test_large_lattice_quantizes_but_cannot_encode():
    lat = ZnSphereLattice(24, 100)  # 67.65 bits: more than faiss's 64-bit codes
    assert lat.code_size_bits == 68
    x = np.random.default_rng(5).standard_normal((3, 24)).astype(np.float32)
    assert ((lat.quantize(x) ** 2).sum(1) == 100).all()
    with pytest.raises(ValueError, match="64 bits"):
        lat.encode(x)


def test_bad_shapes_raise(lat24):
    with pytest.raises(ValueError, match="float32"):
        lat24.quantize(np.zeros((3, 23), dtype=np.float32))
    with pytest.raises(ValueError):
        ZnSphereLattice(3, 7)  # 7 is not a sum of 3 squares (Legendre): empty sphere
