"""hv_improvements with a front that reaches past the reference point: such points bound nothing inside
the reference box, so they change no candidate's gain."""

from __future__ import annotations

import numpy as np
import pytest

from nas.hypervolume import hv_improvements


@pytest.mark.parametrize("outside", [[2.0, 0.5], [0.5, 2.0], [1.0, 0.5]])
def test_front_points_outside_the_reference_box_change_no_gain_in_2d(outside: list[float]) -> None:
    ref = np.array([1.0, 1.0])
    candidates = np.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]])
    alone = hv_improvements(candidates, np.zeros((0, 2)), ref)
    np.testing.assert_allclose(alone, [0.25, 0.16, 0.09])
    np.testing.assert_allclose(hv_improvements(candidates, np.array([outside]), ref), alone)


def test_front_points_outside_the_reference_box_change_no_gain_in_3d() -> None:
    ref = np.array([1.0, 1.0, 1.0])
    candidates = np.array([[0.5, 0.5, 0.5], [0.2, 0.8, 0.4]])
    front = np.array([[0.6, 0.6, 0.6], [2.0, 0.1, 0.1], [0.1, 0.1, 3.0]])
    np.testing.assert_allclose(hv_improvements(candidates, front, ref), hv_improvements(candidates, front[:1], ref))
