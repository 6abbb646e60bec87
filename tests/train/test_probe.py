"""The multi-label linear probe: per-label thresholds on validation F1, the floor, constant labels."""

import numpy as np

from brainvlm.train.probe import GRID, fit_probe, indicator


def data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6))
    sets = [frozenset(label for label, on in (("a", row[0] > 0), ("b", row[1] > 1.2), ("rare", row[2] > 2.6),
                                               ("always", True)) if on) for row in x]
    return x, sets


def test_thresholds_come_from_validation_where_there_are_positives_else_the_floor():
    x_train, train = data(400, 0)
    x_val, val = data(200, 1)
    probe = fit_probe(x_train, train, x_val, val, min_val_positives=3, floor=0.5)
    assert probe.labels == ["a", "always", "b", "rare"]
    assert probe.threshold_source["a"] == "validation F1" and probe.thresholds["a"] in GRID
    assert sum("rare" in s for s in val) < 3 and probe.threshold_source["rare"] == "floor"
    assert probe.thresholds["rare"] == 0.5
    assert probe.threshold_source["always"] == "constant"
    x_test, test = data(300, 2)
    guessed = probe.predict(x_test)
    assert all("always" in g for g in guessed)
    truth, guess = indicator(test, ["a"]), indicator(guessed, ["a"])
    assert (truth == guess).mean() > 0.9  # a linear label is learnt


def test_indicator_shape_for_no_rows():
    assert indicator([], ["a", "b"]).shape == (0, 2)
