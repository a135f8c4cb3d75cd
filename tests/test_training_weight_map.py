"""The paper's weight map (Ronneberger et al. 2015, sec. 3, eq. 2) against values worked out by hand.

w(x) = w_c(x) + w0 · exp(−(d1 + d2)² / 2σ²), w0 = 10, σ = 5: on background pixels the border term, everywhere the
class balance w_c(l) = N / (K · n_l).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from unetgen.training.weight_map import border_weights, cells, class_weights, weight_map


def term(d1: float, d2: float) -> float:
    return 10.0 * math.exp(-((d1 + d2) ** 2) / (2 * 5.0**2))


def test_two_one_pixel_cells_in_a_row():
    # pixels 0..6; cells at 1 and 5 (given as instances). 5 background pixels, 2 cell pixels, 7 in all.
    labels = np.array([[0, 1, 0, 0, 0, 1, 0]])
    instances = np.array([[0, 1, 0, 0, 0, 2, 0]])
    w = weight_map(labels, instances)
    background, cell = 7 / (2 * 5), 7 / (2 * 2)  # w_c = N / (K n_l): 0.7 and 1.75
    expected = [background + term(1, 5), cell, background + term(1, 3), background + term(2, 2),
                background + term(3, 1), cell, background + term(1, 5)]
    np.testing.assert_allclose(w[0], expected, rtol=1e-6)
    assert w.dtype == np.float32


def test_two_squares_with_a_gap_from_connected_components():
    # two 3×3 cells in a 5×9 image, one background column between them (column 4): no instances given
    labels = np.zeros((5, 9), np.uint8)
    labels[1:4, 1:4] = 1
    labels[1:4, 5:8] = 1
    assert cells(labels).max() == 2
    w = weight_map(labels)
    n_background, n_cell = 45 - 18, 18
    background = 45 / (2 * n_background)
    assert w[2, 4] == pytest.approx(background + term(1, 1), rel=1e-6)           # the gap: one pixel from each
    assert w[0, 4] == pytest.approx(background + term(math.sqrt(2), math.sqrt(2)), rel=1e-6)  # diagonal to both
    assert w[2, 0] == pytest.approx(background + term(1, 5), rel=1e-6)           # left edge: 1 to A, 5 to B
    assert w[2, 2] == pytest.approx(45 / (2 * n_cell), rel=1e-6)                 # inside a cell: w_c only


def test_one_cell_or_none_has_no_border_term():
    labels = np.zeros((6, 6), np.uint8)
    np.testing.assert_array_equal(weight_map(labels), np.ones((6, 6), np.float32))  # one class: w_c = 1
    labels[2:4, 2:4] = 1
    w = weight_map(labels)
    assert set(np.unique(w).round(6)) == {round(36 / (2 * 32), 6), round(36 / (2 * 4), 6)}


def test_instances_separate_touching_cells_that_components_merge():
    # two cells touching along a face: one connected component, but two instances
    labels = np.zeros((5, 8), np.uint8)
    labels[1:4, 1:7] = 1
    instances = np.zeros((5, 8), np.int32)
    instances[1:4, 1:4] = 1
    instances[1:4, 4:7] = 2
    merged, separate = weight_map(labels), weight_map(labels, instances)
    assert (merged - class_weights(labels)).max() == 0
    # the background pixel above the junction: 1 from cell 1's pixel (1, 3), 1 from cell 2's (1, 4)... diagonal
    assert separate[0, 3] == pytest.approx(merged[0, 3] + term(1, math.sqrt(2)), rel=1e-6)


def test_class_weights_balance_the_classes_and_average_one():
    labels = np.array([0, 0, 0, 1, 2, 2])
    w = class_weights(labels)
    np.testing.assert_allclose(w, [6 / 9, 6 / 9, 6 / 9, 2, 1, 1])
    assert w.mean() == pytest.approx(1.0)
    assert [w[labels == k].sum() for k in range(3)] == pytest.approx([2, 2, 2])  # each class weighs as much


def test_three_dimensions():
    instances = np.zeros((3, 3, 5), np.int32)
    instances[1, 1, 0] = 1
    instances[1, 1, 4] = 2
    w = border_weights(instances, instances == 0)
    assert w[1, 1, 2] == pytest.approx(term(2, 2), rel=1e-6)
    assert w[0, 0, 2] == pytest.approx(term(math.sqrt(6), math.sqrt(6)), rel=1e-6)
    assert w[1, 1, 0] == 0  # cells get no border term


def test_far_cells_leave_the_term_out_below_a_millionth():
    # cells 40 pixels apart: d1 + d2 ≥ 40 everywhere, the term below 10 · exp(−32) — left out
    instances = np.zeros((1, 43), np.int32)
    instances[0, 0], instances[0, 42] = 1, 2
    assert border_weights(instances, instances == 0).max() == 0
