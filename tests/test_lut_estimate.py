"""The per-layer table's estimate of a unit it lacks: a log-linear fit per kind in log MACs and whether
weights and inputs are quantised, exact when the table's times follow such a law."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nas.lut import LatencyTable
from supernets.costs import LutUnit


def _law(macs: int, bits: int, a_bits: int) -> float:
    """ms = 0.01 * (1 + macs)^0.8, 1.5x with quantised weights, 0.7x with quantised inputs."""
    return float(np.exp(np.log(0.01) + 0.8 * np.log1p(macs) + np.log(1.5) * (bits < 32) + np.log(0.7) * (a_bits < 32)))


def test_a_missing_unit_is_estimated_from_its_kinds_entries_by_macs_and_both_bit_widths() -> None:
    entries = {}
    for (i, o), (bits, a_bits) in itertools.product([(8, 8), (8, 16), (16, 16), (16, 32), (32, 32)],
                                                    [(32, 32), (8, 32), (8, 8), (32, 8)]):
        unit = LutUnit("hidden.0", "dense", (i, o), bits, a_bits, i * o)
        entries[unit.key] = _law(unit.macs, bits, a_bits)
    table = LatencyTable(entries)
    for bits, a_bits in [(8, 8), (32, 8), (8, 32), (32, 32)]:
        missing = LutUnit("hidden.1", "dense", (64, 7), bits, a_bits, 64 * 7)
        assert missing.key not in entries
        assert table.time_ms(missing) == pytest.approx(_law(64 * 7, bits, a_bits), rel=1e-9)
