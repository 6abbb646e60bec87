"""The parameters cells are the embedded default: params/default.yaml only repeats them, their expectations are
the default's (as they stood when they were last agreed, two restated), and other params files say none hold."""

from __future__ import annotations

import pytest

from brainvlm.app.params import declared_parameters, discover_notebooks, effective_expectations, read_params
from brainvlm.core.paths import PARAMS_DIR

NOTEBOOKS = discover_notebooks()
DEFAULT = read_params(PARAMS_DIR / "default.yaml")

# params/default.yaml's `expect` at 49738e8, rule for rule. Every rule stays; two are restated (RESTATED).
AGREED = {
    "brain.n_test": ">= 100", "brain.test_accuracy": ">= 0.90", "brain.blank_image_accuracy": "<= 0.65",
    "brain.mean_image_accuracy": "<= 0.65", "brain.shuffled_images_accuracy": "<= 0.65",
    "brain.query_as_reference_agreement": ">= 0.90", "brain.test_minus_shuffled_images_accuracy_lo": ">= 0.20",
    "brain.bmi_mae_ratio": "<= 0.75",
    "report.ehr_off_icd_parse_rate": ">= 0.95", "report.ehr_on_minus_off_icd_ehr_micro_f1_lo": ">= 0.2",
    "report.ehr_on_minus_off_icd_image_micro_f1_abs": "<= 0.1",
    "report.curriculum_minus_constant_chexpert14_micro_f1_u0_lo": ">= 0.15",
    "report.f1_cardiomegaly": ">= 0.6", "report.f1_pleural_effusion": ">= 0.6",
    "report.f1_consolidation": ">= 0.6", "report.f1_support_devices": ">= 0.6",
    "report.mean_image_minus_constant_chexpert14_micro_f1_u0_abs": "<= 0.05",
    "report.mean_image_parse_rate": ">= 0.9",
    "cl.mft_min": ">= 0.85", "cl.zero_shot_minus_chance_max": "<= 0.1", "cl.sequential_bwt": "<= -0.15",
    "cl.keys_bwt": ">= -0.03", "cl.routing_accuracy": ">= 0.95", "cl.question_routing_accuracy": "<= 0.5",
    "cl.keys_minus_joint_final_average_lo": ">= -0.05", "cl.keys_minus_random_final_average_lo": ">= 0.2",
    "cl.mean_image_minus_majority_accuracy": "<= 0.1",
    "concepts.n_test": ">= 60", "concepts.generative_minus_baseline_primary_f1_lo": ">= 0.15",
    "concepts.classifier_minus_baseline_primary_f1_lo": ">= 0.15", "concepts.better_detector_findings_f1": ">= 0.6",
    "concepts.mean_image_minus_baseline_primary_f1_abs": "<= 0.05", "concepts.caption_minus_baseline_rouge1_lo": "> 0",
    "concepts.submission_violations": "== 0",
}
# A mean-image control claims "without the image, no better than the prior": the upper end of the paired
# interval, not a two-sided bound (a model worse than the prior without the image shows no leak).
RESTATED = {
    "report.mean_image_minus_constant_chexpert14_micro_f1_u0_abs":
        ("report.mean_image_minus_constant_chexpert14_micro_f1_u0_hi", "<= 0.05"),
    "concepts.mean_image_minus_baseline_primary_f1_abs": ("concepts.mean_image_minus_baseline_primary_f1_hi", "<= 0.05"),
}


def test_default_yaml_sets_only_the_cells_own_defaults():
    for key, value in DEFAULT.items():
        owners = [nb for nb in NOTEBOOKS if key in declared_parameters(nb.path)]
        assert owners, f"params/default.yaml: {key} is declared by no notebook"
        for nb in owners:
            assert declared_parameters(nb.path)[key] == value, (
                f"params/default.yaml sets {key} = {value!r}, but {nb.name}'s parameters cell says "
                f"{declared_parameters(nb.path)[key]!r}: the cell is the embedded default")


def test_the_cells_hold_every_agreed_expectation():
    embedded = effective_expectations({}, NOTEBOOKS)
    for key, rule in AGREED.items():
        key, rule = RESTATED.get(key, (key, rule))
        assert embedded.get(key) == rule, f"{key}: the cells say {embedded.get(key)!r}, agreed {rule!r}"
    assert effective_expectations(DEFAULT, NOTEBOOKS) == embedded


@pytest.mark.parametrize("params", sorted(p for p in PARAMS_DIR.glob("*.yaml") if p.name != "default.yaml"),
                         ids=lambda p: p.name)
def test_other_params_files_claim_no_default_expectation(params):
    values = read_params(params)
    runs = values.get("notebooks") or [nb.number for nb in NOTEBOOKS]
    if any("expect" in declared_parameters(nb.path) for nb in NOTEBOOKS if nb.number in runs):
        assert "expect" in values, f"{params.name}: set expect: {{}} (or its own) — the cells hold the default's"
