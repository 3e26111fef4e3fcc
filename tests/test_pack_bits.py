"""Bit packing refuses values its width cannot hold (they would wrap into other codes silently)."""

from __future__ import annotations

import numpy as np
import pytest

from nas import packing


@pytest.mark.parametrize("bits", [2, 4, 7])
def test_pack_bits_refuses_values_outside_its_range(bits: int) -> None:
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    for bad in (hi + 1, lo - 1):
        with pytest.raises(ValueError, match="outside"):
            packing.pack_bits(np.array([0, bad, 1]), bits)
    packing.pack_bits(np.array([lo, hi]), bits)  # the edges themselves fit
