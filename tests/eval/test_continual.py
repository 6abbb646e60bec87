"""Continual-learning measures of an accuracy matrix, by hand."""

import math

import pytest

from brainvlm.eval.continual import continual_metrics, matrix_table

MATRIX = [[0.5, 0.5, 0.5],   # zero-shot
          [0.9, 0.6, 0.4],   # after task 0
          [0.7, 0.8, 0.5],   # after task 1
          [0.6, 0.7, 0.9]]   # after task 2


def test_average_accuracy_bwt_forgetting_and_forward_transfer():
    got = continual_metrics(MATRIX, zero_shot=True)
    assert got["average_accuracy"] == pytest.approx((0.6 + 0.7 + 0.9) / 3)
    assert got["bwt"] == pytest.approx(((0.6 - 0.9) + (0.7 - 0.8)) / 2)
    assert got["forgetting"] == pytest.approx(((0.9 - 0.6) + (0.8 - 0.7)) / 2)
    assert got["forward_transfer"] == pytest.approx(((0.6 - 0.5) + (0.5 - 0.5)) / 2)
    without = continual_metrics(MATRIX[1:])
    assert "forward_transfer" not in without and without["bwt"] == pytest.approx(got["bwt"])
    assert math.isnan(continual_metrics([[0.8]])["bwt"])


def test_a_matrix_of_the_wrong_shape_says_so():
    with pytest.raises(ValueError, match="3 trained rows for 2 tasks"):
        continual_metrics([[1, 0], [1, 0], [1, 1]])
    assert list(matrix_table(MATRIX, ["abdomen", "chest", "head"], zero_shot=True).index) == [
        "zero-shot", "after abdomen", "after chest", "after head"]
