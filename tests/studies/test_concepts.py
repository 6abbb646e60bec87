"""The concepts study's pieces: settings, data in the ROCOv2 layout, the tuned baseline, challenge scores."""

import math

import pytest

from brainvlm.data.adapters.roco import PromptOptions
from brainvlm.studies import concepts
from brainvlm.studies.base import SettingsError


def test_settings_name_what_is_missing():
    with pytest.raises(SettingsError, match=r"concepts settings missing: \['concepts_lr'\]; notebook 08"):
        concepts.settings_for({k: 1 for k in concepts.setting_keys() if k != "concepts_lr"})


def test_prepare_data_writes_both_tasks_per_split_with_gold(tmp_path):
    manifest = concepts.prepare_data(tmp_path, "", PromptOptions(concept_target="names"), 0, (12, 6, 6), 32)
    assert set(manifest["tasks"]) == {"concepts", "caption"}
    assert set(manifest["tasks"]["concepts"]) == {"train", "val", "test"}
    gold = concepts.gold_sets(manifest["gold"]["test"])
    assert len(gold) == 6 and all(all(c.startswith("C") for c in s) for s in gold.values())
    assert concepts.read_manifest(tmp_path) == manifest


def test_most_frequent_k_is_chosen_on_validation():
    train = {"1": frozenset({"C1", "C2"}), "2": frozenset({"C1"}), "3": frozenset({"C1", "C3"})}
    val = {"4": frozenset({"C1"}), "5": frozenset({"C1"})}
    chosen, table = concepts.most_frequent(train, val)
    assert chosen == ["C1"] and table.loc[table["k"] == 1, "validation_primary_f1"].item() == 1.0


def test_per_image_scores_read_the_written_rows_and_leave_out_images_without_allowed_gold():
    gold = {"1": frozenset({"C1", "C2"}), "2": frozenset(), "3": frozenset({"C9"})}
    predicted = {"1": frozenset({"C1"}), "2": frozenset(), "3": frozenset({"C1"})}
    primary = concepts.per_image(gold, predicted)
    assert primary.tolist() == pytest.approx([2 / 3, 1.0, 0.0])  # an empty row against an empty gold is right
    secondary = concepts.per_image(gold, predicted, {"C1", "C2"})
    assert secondary[0] == pytest.approx(2 / 3) and math.isnan(secondary[1]) and math.isnan(secondary[2])
    assert concepts.label_f1(gold, predicted, ["C1", "C9"]) == pytest.approx(2 * 1 / (2 + 1 + 1))
