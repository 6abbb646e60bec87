"""A multi-label linear probe on frozen features: one-vs-rest logistic regression with per-label thresholds.

The approach that wins ImageCLEFmedical concept detection year after year is a multi-label classifier on
image features, not text generation. This is its plain form on the frozen base model's pooled image
features (``model.features``): scikit-learn ``LogisticRegression`` per label (standardised features,
balanced class weights), then a decision threshold per label chosen on the validation set to maximise that
label's F1. A label with fewer than ``min_val_positives`` validation positives keeps the floor threshold
(``floor``, 0.5): a threshold tuned on one or two positives is noise. A label that is always present or
always absent in training is predicted as it was seen (no classifier can be fitted to one class).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)  # candidate thresholds


@dataclass
class LinearProbe:
    """Fitted per-label classifiers (or constants), thresholds and how each threshold was chosen."""

    labels: list[str]
    models: dict = field(default_factory=dict)  # label -> fitted pipeline, or a float (constant probability)
    thresholds: dict = field(default_factory=dict)
    threshold_source: dict = field(default_factory=dict)  # label -> "validation F1" | "floor" | "constant"

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """(n, labels) probability of each label."""
        columns = []
        for label in self.labels:
            model = self.models[label]
            columns.append(np.full(len(x), model) if isinstance(model, float) else model.predict_proba(x)[:, 1])
        return np.stack(columns, axis=1) if columns else np.zeros((len(x), 0))

    def predict(self, x: np.ndarray) -> list[frozenset[str]]:
        """The label set of each row: the labels whose probability reaches their threshold."""
        chosen = self.probabilities(x) >= np.array([self.thresholds[label] for label in self.labels])
        return [frozenset(label for label, keep in zip(self.labels, row) if keep) for row in chosen]


def indicator(sets: Sequence[frozenset[str]], labels: Sequence[str]) -> np.ndarray:
    """(n, labels) 0/1 matrix of label sets."""
    return np.array([[label in s for label in labels] for s in sets], dtype=int).reshape(len(sets), len(labels))


def fit_probe(x_train: np.ndarray, train_sets: Sequence[frozenset[str]], x_val: np.ndarray,
              val_sets: Sequence[frozenset[str]], labels: Sequence[str] | None = None, c: float = 1.0,
              min_val_positives: int = 3, floor: float = 0.5, seed: int = 0) -> LinearProbe:
    """Fit one logistic regression per label and choose each label's threshold on validation F1."""
    labels = sorted(set().union(*train_sets)) if labels is None else list(labels)
    y_train, y_val = indicator(train_sets, labels), indicator(val_sets, labels)
    probe = LinearProbe(labels)
    for k, label in enumerate(labels):
        if y_train[:, k].min() == y_train[:, k].max():
            probe.models[label] = float(y_train[0, k]) if len(y_train) else 0.0
            probe.thresholds[label], probe.threshold_source[label] = 0.5, "constant"
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000,
                                                                   random_state=seed))
        probe.models[label] = model.fit(x_train, y_train[:, k])
        if y_val[:, k].sum() < min_val_positives:
            probe.thresholds[label], probe.threshold_source[label] = floor, "floor"
            continue
        scores = model.predict_proba(x_val)[:, 1]
        f1 = [f1_score(y_val[:, k], scores >= t, zero_division=0.0) for t in GRID]
        probe.thresholds[label] = float(GRID[int(np.argmax(f1))])  # the lowest threshold of the best F1
        probe.threshold_source[label] = "validation F1"
    return probe
