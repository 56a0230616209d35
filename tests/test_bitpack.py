"""The bit convention (docs/binary-format.md): bit 1 = −1, channel c = bit c % 64 of word c // 64."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bitfx.format import pack_signs, packed_words, unpack_signs


def test_documented_layout() -> None:
    values = np.ones(70, dtype=np.float32)
    values[[0, 5, 63, 64, 69]] = -1
    words = pack_signs(values)
    assert words.dtype == np.uint64 and words.shape == (2,)
    assert int(words[0]) == (1 << 0) | (1 << 5) | (1 << 63)
    assert int(words[1]) == (1 << 0) | (1 << 5)  # channels 64 and 69; bits past channel 69 stay 0


def test_sign_of_zero_is_plus_one() -> None:
    assert int(pack_signs(np.array([0.0, -0.0, 1e-30, -1e-30]))[0]) == 0b1000


@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 200)), elements=st.floats(-4, 4, width=32)))
def test_round_trip(values: np.ndarray) -> None:
    words = pack_signs(values)
    assert words.shape == (values.shape[0], packed_words(values.shape[1]))
    np.testing.assert_array_equal(unpack_signs(words, values.shape[1]), np.where(values < 0, -1.0, 1.0))


def test_unpack_rejects_too_many_values() -> None:
    with pytest.raises(ValueError, match="64"):
        unpack_signs(np.zeros(1, np.uint64), 65)
