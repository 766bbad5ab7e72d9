"""annrepro.validate.as_f32: the bare float32 cast (as_float32 is the checking one)."""

import numpy as np
import pytest
from annrepro.errors import InputError
from annrepro.validate import as_f32, as_float32


def test_as_f32_copies_only_when_needed():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert as_f32(x) is x
    y = as_f32(x[:, ::2])  # a strided view becomes a contiguous copy
    assert y.flags.c_contiguous and y.dtype == np.float32
    np.testing.assert_array_equal(y, x[:, ::2])
    z = as_f32(np.arange(4, dtype=np.float64))
    assert z.dtype == np.float32 and z.tolist() == [0, 1, 2, 3]


def test_as_f32_does_not_validate_but_as_float32_does():
    x = np.array([[1.0, np.nan]])
    assert np.isnan(as_f32(x)).any()
    with pytest.raises(InputError, match="NaN"):
        as_float32(x)
