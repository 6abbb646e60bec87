"""The synthetic chest-radiograph default: planted findings, reports table for the curriculum builder."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from brainvlm.data import images2d, synthetic_cxr
from brainvlm.data.curriculum import build_records
from brainvlm.eval import chexpert_labeler


def test_the_default_is_deterministic_and_goes_through_the_builder(tmp_path):
    first = synthetic_cxr.make_synthetic_cxr(tmp_path / "a", n_patients=30, seed=3, progress=False)
    again = synthetic_cxr.make_synthetic_cxr(tmp_path / "b", n_patients=30, seed=3, progress=False)
    assert first.read_bytes() == again.read_bytes()
    table = pd.read_csv(first, dtype=str, keep_default_na=False)
    for rel in table["image_path"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert table["patient_id"].nunique() == 30 and len(table) > 30  # some patients have two studies
    records = build_records(table, list(synthetic_cxr.EHR_COLUMNS))
    assert len(records) == 2 * len(table)
    assert all(r["target"].count("\nICD: ") == (r["stage"] == "B") for r in records)


def test_planted_findings_change_the_image_where_they_should(tmp_path):
    none = {"Cardiomegaly": 0, "Pleural Effusion": 0, "Consolidation": 0, "Support Devices": 0}
    base = synthetic_cxr.draw(none, 64, np.random.default_rng(1))
    heart = synthetic_cxr.draw({**none, "Cardiomegaly": 1}, 64, np.random.default_rng(1))
    device = synthetic_cxr.draw({**none, "Support Devices": 1}, 64, np.random.default_rng(1))
    above_diaphragm = slice(0, 50)
    assert (heart[above_diaphragm] > 0.66).sum() > 1.4 * (base[above_diaphragm] > 0.66).sum()  # wider silhouette
    assert device[:10, 28:36].max() > 0.85 > base[:10, 28:36].max()  # a bright line at the neck


def test_impressions_agree_with_the_labels_through_the_rule_labeler(tmp_path):
    path = synthetic_cxr.make_synthetic_cxr(tmp_path, n_patients=40, seed=0, progress=False)
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    for row in table.to_dict("records"):
        labels = chexpert_labeler.label_report(row["impression"])
        for name in ("Cardiomegaly", "Pleural Effusion", "Consolidation"):
            assert labels.get(name) == int(row[name]), (row["impression"], name)


def test_png_writing_is_deterministic_and_greyscale(tmp_path):
    image = images2d.ellipse(16, 0.5, 0.5, 0.3, 0.2)
    a, b = images2d.write_png(image, tmp_path / "a.png"), images2d.write_png(image, tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes() and Image.open(a).mode == "L"
