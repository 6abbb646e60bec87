"""Continual-learning measures of an accuracy matrix, on matrices worked by hand."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brainvlm.eval.continual import continual_metrics, matrix_table

THREE = [[10, 10, 10],   # zero-shot
         [80, 30, 20],   # after task 1
         [60, 85, 25],   # after task 2
         [50, 70, 90]]   # after task 3


def test_three_tasks_with_a_zero_shot_row():
    got = continual_metrics(THREE, zero_shot=True)
    assert got["final_average"] == pytest.approx(70.0)
    assert got["average_over_time"] == pytest.approx((80 + 72.5 + 70) / 3)
    assert round(got["average_over_time"], 2) == 74.17
    assert got["mft"] == pytest.approx(85.0)
    assert got["bwt"] == pytest.approx(-22.5)
    assert got["forgetting"] == pytest.approx(22.5)
    assert got["fwt"] == pytest.approx(17.5)
    assert got["bwt_gem"] == pytest.approx(-15.0)
    without = continual_metrics(THREE[1:])
    assert "fwt" not in without and without["bwt"] == pytest.approx(got["bwt"])


def test_two_tasks_forget_where_a_three_task_library_would_say_zero():
    got = continual_metrics([[0.5, 0.5], [0.9, 0.5], [0.6, 0.95]], zero_shot=True)
    assert got["bwt"] == pytest.approx(-0.30)
    assert got["forgetting"] == pytest.approx(0.30)


def test_forgetting_counts_only_rows_after_the_task_was_learned():
    # task 2 scored 0.9 before it was trained (row 1); its forgetting starts from row 2
    got = continual_metrics([[0.5, 0.9], [0.4, 0.6]])
    assert got["forgetting"] == pytest.approx(0.1) and got["bwt"] == pytest.approx(-0.1)
    assert math.isnan(continual_metrics([[0.8]])["bwt"])


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 5).flatmap(lambda t: st.lists(st.lists(st.floats(0, 1), min_size=t, max_size=t),
                                                    min_size=t, max_size=t)))
def test_forgetting_is_at_least_minus_bwt(matrix):
    got = continual_metrics(matrix)
    assert got["forgetting"] >= -got["bwt"] - 1e-12


@given(st.lists(st.floats(0, 1), min_size=2, max_size=5))
def test_a_model_that_never_changes_a_task_has_bwt_zero(accuracies):
    # oracle routing: task j's answers come from its own adapter, untouched after task j
    t = len(accuracies)
    matrix = np.tril(np.tile(accuracies, (t, 1)))
    assert continual_metrics(matrix)["bwt"] == 0.0
    assert continual_metrics(matrix)["forgetting"] == 0.0


def test_a_matrix_of_the_wrong_shape_says_so():
    with pytest.raises(ValueError, match="3 trained rows for 2 tasks"):
        continual_metrics([[1, 0], [1, 0], [1, 1]])
    assert list(matrix_table(THREE, ["abdomen", "chest", "head"], zero_shot=True).index) == [
        "zero-shot", "after abdomen", "after chest", "after head"]
