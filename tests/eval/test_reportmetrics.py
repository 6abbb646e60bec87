"""Report label metrics from per-sample counts: by hand, intervals over patients, paired differences."""

import math

import pytest

from brainvlm.eval import reportmetrics


def sample(i: int, patient: str, target: str) -> dict:
    return {"id": f"s{i}", "task": "report", "metadata": {"patient_id": patient},
            "conversations": [{"role": "user", "content": [{"type": "text", "text": "Report."}]},
                              {"role": "assistant", "content": [{"type": "text", "text": target}]}]}


REFS = ['Impression: Cardiomegaly. Small pleural effusion.\nCheXpert: {"Cardiomegaly": 1, "Pleural Effusion": 1}'
        '\nICD: ["E11.9", "I51.7"]',
        'Impression: Possible consolidation.\nCheXpert: {"Consolidation": -1, "Cardiomegaly": 0}\nICD: ["I10"]',
        'Impression: Normal.\nCheXpert: {"No Finding": 1}\nICD: []']
SAMPLES = [sample(i, p, t) for i, (p, t) in enumerate(zip(["p1", "p1", "p2"], REFS))]
GROUPS = {"icd_image": ["I51.7"], "icd_ehr": ["E11.9", "I10"]}


def test_counts_by_hand():
    answers = ['Impression: Cardiomegaly.\nCheXpert: {"Cardiomegaly": 1, "Edema": 1}\nICD: ["I51.7"]',
               'Impression: Consolidation.\nCheXpert: {"Consolidation": 1}\nICD: ["I10", "J90"]',
               "Impression: Normal. no blocks at all"]
    table = reportmetrics.count_table(SAMPLES, answers, GROUPS)
    got = reportmetrics.headline(table, list(GROUPS))
    # CheXpert u0: truth {Card, PlEff} {} {NoF}; guess {Card, Edema} {Consol} {} -> TP 1, FP 2, FN 2
    assert got["chexpert14_micro_f1_u0"] == pytest.approx(2 / (2 + 2 + 2))
    # ICD all codes: truth {E11.9, I51.7} {I10} {}; guess {I51.7} {I10, J90} unparseable -> TP 2, FP 1, FN 1
    assert got["icd_micro_f1"] == pytest.approx(4 / (4 + 1 + 1))
    assert got["icd_image_micro_f1"] == 1.0 and got["icd_ehr_micro_f1"] == pytest.approx(2 / 3)
    assert got["chexpert_parse_rate"] == pytest.approx(2 / 3) and got["both_parse_rate"] == pytest.approx(2 / 3)
    per = reportmetrics.per_label(table, "chexpert", ["Cardiomegaly", "Edema", "Atelectasis"])
    assert per.loc["Cardiomegaly", "f1"] == 1.0 and per.loc["Edema", "f1"] == 0.0
    assert math.isnan(per.loc["Atelectasis", "f1"])  # nothing to count is undefined, not zero
    # macro over observations with any count: Card 1, PlEff 0, Edema 0, Consol 0, NoF 0
    assert got["chexpert14_macro_f1_u0"] == pytest.approx(1 / 5)


def test_intervals_resample_patients_and_contain_the_point():
    answers = [REFS[0], REFS[1], "Impression: x\nCheXpert: {}\nICD: []"]
    table = reportmetrics.count_table(SAMPLES, answers, GROUPS)
    ci = reportmetrics.intervals(table, list(GROUPS), n_boot=200, seed=0)
    assert ci["chexpert14_micro_f1_u0"]["n_units"] == 2 and ci["chexpert14_micro_f1_u0"]["unit"] == "patient"
    for value in ci.values():
        assert value["lo"] <= value["point"] + 1e-12 and value["point"] <= value["hi"] + 1e-12 or math.isnan(
            value["point"])


def test_paired_difference_is_zero_for_the_same_answers_and_signed_otherwise():
    good = reportmetrics.count_table(SAMPLES, REFS, GROUPS)
    empty = reportmetrics.count_table(SAMPLES, ["Impression: x\nCheXpert: {}\nICD: []"] * 3, GROUPS)
    same = reportmetrics.difference(good, good, "icd_ehr_micro_f1", list(GROUPS), n_boot=50)
    assert same["point"] == 0 and same["lo"] == 0 and same["hi"] == 0
    better = reportmetrics.difference(good, empty, "icd_ehr_micro_f1", list(GROUPS), n_boot=50)
    assert better["point"] == 1.0 and better["lo"] == 1.0 and better["n_units"] == 2
    with pytest.raises(ValueError, match="different samples"):
        reportmetrics.difference(good, empty.iloc[::-1], "icd_micro_f1", list(GROUPS), n_boot=5)


def test_impressions_leave_the_blocks_out_and_the_labeler_reads_them():
    hypotheses, references = reportmetrics.impression_pairs(SAMPLES, REFS)
    assert hypotheses[0] == "Cardiomegaly. Small pleural effusion." and references[1] == ["Possible consolidation."]
    agreement = reportmetrics.labeler_agreement(SAMPLES).set_index("observation")
    assert agreement.loc["Consolidation", "agreement"] == pytest.approx(1.0)  # "possible" -> -1 both ways
    assert agreement.loc["Cardiomegaly", "labeler blank, block set"] == 1  # the block states 0, the text is silent
