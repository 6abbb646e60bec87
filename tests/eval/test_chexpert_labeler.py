"""The rule-based CheXpert-14 labeler against the CheXpert labeler's own definitions and outputs.

Hand-labelled sentences follow the CheXpert labeler's conventions (1 positive, 0 negative, -1 uncertain,
not mentioned left out; No Finding 1 when no observation but Support Devices is positive or uncertain,
"other findings" included), not a radiologist's reading: where the two part, the comment says which
pattern of the labeler decides. The labeler's own sample input and output (``chexpert_sample/``) must come
out cell for cell, and so must an output a labeler maintainer posted.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from brainvlm.app.commands.label_reports import main as label_reports
from brainvlm.data.adapters import AdapterError
from brainvlm.data.adapters.curriculum import CHEXPERT_OBSERVATIONS, read_curriculum, read_joins
from brainvlm.data.curriculum import CHEXPERT_14
from brainvlm.eval import chexpert_labeler, chexpert_rules
from brainvlm.eval.chexpert_labeler import aggregate, label_report, mention_labels

SAMPLE = Path(__file__).parent / "chexpert_sample"
NF = {"No Finding": 1}

SENTENCES = [
    # negation
    ("No pleural effusion or pneumothorax.", {"Pleural Effusion": 0, "Pneumothorax": 0, **NF}),
    ("No pneumothorax.", {"Pneumothorax": 0, **NF}),
    ("There is no focal consolidation.", {"Consolidation": 0, **NF}),
    ("No evidence of pneumonia.", {"Pneumonia": 0, **NF}),
    ("Negative for acute fracture.", {"Fracture": 0, **NF}),
    ("Lungs are clear without effusion or edema.", {"Pleural Effusion": 0, "Edema": 0, **NF}),  # "lungs": no mention
    ("The heart is not enlarged.", {"Cardiomegaly": 0, **NF}),
    ("Heart size is normal.", {"Cardiomegaly": 0, **NF}),
    ("Interval resolution of the left pleural effusion.", {"Pleural Effusion": 0, **NF}),
    ("The previously seen pneumothorax has resolved.", {"Pneumothorax": 0, **NF}),
    ("A nodule is not seen on this study.", {"Lung Lesion": 1}),  # no pattern negates "X is not seen"
    ("Free of consolidation, effusion and pneumothorax.",
     {"Consolidation": 0, "Pleural Effusion": 0, "Pneumothorax": 0, **NF}),
    ("Normal cardiomediastinal silhouette.", {"Enlarged Cardiomediastinum": 0, **NF}),
    ("Interval removal of the endotracheal tube.", {"Support Devices": 0, **NF}),
    # uncertainty
    ("Possible consolidation.", {"Consolidation": -1}),
    ("Opacity at the left base may represent atelectasis.", {"Lung Opacity": 1, "Atelectasis": -1}),
    ("Pneumonia cannot be excluded.", {"Pneumonia": -1}),
    ("Findings are concerning for pneumonia.", {"Pneumonia": -1}),
    ("Questionable small right pleural effusion.", {"Pleural Effusion": -1}),
    ("Probable mild pulmonary edema.", {"Edema": -1}),
    ("Atelectasis versus consolidation in the right lower lobe.", {"Atelectasis": -1, "Consolidation": -1}),
    ("Cannot exclude a small pneumothorax.", {"Pneumothorax": -1}),
    ("Suspected left rib fracture.", {"Fracture": -1}),
    ("Retrocardiac opacity could reflect atelectasis or early pneumonia.",
     {"Lung Opacity": 1, "Atelectasis": -1, "Pneumonia": -1}),
    # "opaci" is a Lung Opacity mention inside "nodular opacity"; only the neoplasm is uncertain
    ("Subtle nodular opacity is suspicious for a neoplasm.", {"Lung Lesion": 1, "Lung Opacity": 1}),
    ("Mild bibasilar opacities, likely atelectasis, although infection is not excluded.",
     {"Lung Opacity": 1, "Atelectasis": 1, "Pneumonia": -1}),  # "likely" is no uncertainty cue
    ("Without evidence of pneumothorax, there is a small left apical cap.", {"Pneumothorax": 0, **NF}),
    ("Enteric tube has been removed. Lungs are hyperinflated.", {"Support Devices": 0}),  # an other finding
    ("Dense consolidation in the left lower lobe with air bronchograms.", {"Consolidation": 1}),
    ("There are no new nodules or masses.", {"Lung Lesion": -1}),  # "no new X" is uncertain
    ("Findings may be consistent with pneumonia.", {"Pneumonia": -1}),
    ("Findings consistent with pneumonia.", {"Pneumonia": 1}),  # "consistent with" needs a "may"
    # positives
    ("Moderate cardiomegaly.", {"Cardiomegaly": 1}),
    ("Large left pleural effusion.", {"Pleural Effusion": 1}),
    ("Right upper lobe consolidation.", {"Consolidation": 1}),
    ("Mild pulmonary vascular congestion.", {"Edema": -1}),  # vascular congestion is always uncertain
    ("Small right apical pneumothorax.", {"Pneumothorax": 1}),
    ("Displaced fracture of the left seventh rib.", {"Fracture": 1}),
    ("A 1.5 cm nodule in the right upper lobe.", {"Lung Lesion": 1}),
    ("Enlarged cardiomediastinum.", {"Enlarged Cardiomediastinum": 1}),
    ("Bibasilar atelectasis.", {"Atelectasis": 1}),
    ("Patchy airspace disease in the left lower lobe.", {"Lung Opacity": 1}),
    ("Right pleural thickening is unchanged.", {"Pleural Other": 1}),
    ("Multifocal pneumonia.", {"Pneumonia": 1}),
    ("Endotracheal tube terminates 4 cm above the carina.", {"Support Devices": 1, **NF}),
    ("Right PICC line tip in the SVC.", {"Support Devices": 1, **NF}),
    ("Left chest wall pacemaker with leads in the right atrium and ventricle.", {"Support Devices": 1, **NF}),
    ("Median sternotomy wires are intact.", NF),  # "wires" is no Support Devices phrase
    # mixed mentions in one report
    ("Cardiomegaly with mild pulmonary edema. No pleural effusion.",
     {"Cardiomegaly": 1, "Edema": 1, "Pleural Effusion": 0}),
    ("Heart size is normal. Left lower lobe consolidation, concerning for pneumonia.",
     {"Cardiomegaly": 0, "Consolidation": 1, "Pneumonia": -1}),
    ("No pneumothorax. Small left effusion.", {"Pneumothorax": 0, "Pleural Effusion": 1}),
    ("Possible pneumonia. No effusion.", {"Pneumonia": -1, "Pleural Effusion": 0}),
    ("Nasogastric tube in the stomach. No acute cardiopulmonary process.", {"Support Devices": 1, **NF}),
    # "chest tube removal": only "removal of X" and "X removed" negate
    ("No pneumothorax after chest tube removal; small residual effusion.",
     {"Pneumothorax": 0, "Support Devices": 1, "Pleural Effusion": 1}),
    ("Lungs are clear. Heart size is normal. No acute osseous abnormality.", {"Cardiomegaly": 0, **NF}),
    ("Stable cardiomegaly, but no edema.", {"Cardiomegaly": 1, "Edema": 0}),
    ("No effusion and the heart is enlarged.", {"Pleural Effusion": 0, "Cardiomegaly": 1}),  # "no" stops at "and the"
    ("Cardiomegaly is present and lungs are clear.", {"Cardiomegaly": 1}),  # "clear" is the lungs' verb
    ("Increased opacity at the right base, which may represent pneumonia.",
     {"Lung Opacity": 1, "Pneumonia": -1}),
    # aggregation across sentences and the CHF rule
    ("Small left effusion. No effusion on the right.", {"Pleural Effusion": 1}),             # 0 with 1 -> 1
    ("No consolidation. Possible consolidation at the left base.", {"Consolidation": -1}),   # 0 with -1 -> -1
    ("Possible atelectasis. Definite atelectasis at the right base.", {"Atelectasis": 1}),    # -1 with 1 -> 1
    ("Findings consistent with congestive heart failure.", {"Edema": 1, "Cardiomegaly": -1}),
    ("Possible CHF.", {"Edema": -1, "Cardiomegaly": -1}),
    ("No evidence of CHF.", {"Edema": 0, **NF}),
    ("Heart size is normal. Findings compatible with heart failure.", {"Edema": 1, "Cardiomegaly": -1}),
    ("No acute cardiopulmonary abnormality.", NF),
]


def in_order(labels: dict) -> dict:
    return {name: labels[name] for name in CHEXPERT_14 if name in labels}


@pytest.mark.parametrize("sentence, labels", SENTENCES, ids=[s for s, _ in SENTENCES])
def test_hand_labelled_sentences(sentence, labels):
    assert label_report(sentence) == in_order(labels)


def test_there_are_at_least_fifty_hand_labelled_sentences():
    assert len(SENTENCES) >= 50


# Answers the earlier labeler got wrong, as the CheXpert labeler gives them.
KNOWN_WRONG = [
    ("Lungs are hyperinflated.", {}),                       # "hyperinflat" is an other finding: No Finding blank
    ("Calcified granuloma in the right upper lobe.", {}),   # granuloma and "calcifi" are other findings
    ("Heart size normal.", {"Cardiomegaly": 0, **NF}),      # "heart size" is a Cardiomegaly mention
    ("Heart size is within normal limits.", {"Cardiomegaly": 0, **NF}),
    ("The cardiac silhouette is normal.", {"Cardiomegaly": 0, **NF}),
    ("There is no focal air space opacity to suggest a pneumonia.", {"Lung Opacity": 0, "Pneumonia": 0, **NF}),
    ("The bilateral infiltrates seen previously have resolved.", {"Lung Opacity": 0, **NF}),
    ("Heart size normal and lungs are clear.", {"Cardiomegaly": 0, **NF}),  # "lungs are clear": no mention
]


@pytest.mark.parametrize("report, labels", KNOWN_WRONG, ids=[r for r, _ in KNOWN_WRONG])
def test_the_answers_that_were_wrong(report, labels):
    assert label_report(report) == in_order(labels)


@pytest.mark.parametrize("report, rule", [
    ("Heart size normal.", "negation.txt:8-12,46,139"),
    ("Heart size is within normal limits.", "negation.txt:15,34-43,49"),
    ("No pneumothorax.", "negation.txt:2,5,29,66,72,84,91,101,113,154-155"),
    ("Cardiomegaly without edema.", "negation.txt:31,54,75,78,87,119,131,156"),
    ("Interval resolution of the effusion.", "negation.txt:60"),
    ("The infiltrates have resolved.", "negation.txt:69"),
    ("Chest tube removed.", "negation.txt:122-123"),
    ("There is no opacity to suggest a pneumonia.", "negation.txt:107,110"),
    ("Pneumonia cannot be excluded.", "pre_negation_uncertainty.txt:4,19"),
    ("No new consolidation.", "pre_negation_uncertainty.txt:10-16"),
    ("Possible consolidation.", "post_negation_uncertainty.txt:43,56,60"),
    ("Atelectasis or pneumonia.", "post_negation_uncertainty.txt:155-156"),
    ("Pulmonary vascular congestion.", "post_negation_uncertainty.txt:149-152"),
    ("Stable heart size.", "post_negation_uncertainty.txt:4,20"),
    ("Consolidation.", chexpert_rules.POSITIVE_SOURCE),
])
def test_each_mention_names_the_pattern_that_labelled_it(report, rule):
    assert mention_labels(report)[-1]["rule"] == rule


PATTERN_LINES = {"negation.txt": 156, "pre_negation_uncertainty.txt": 23, "post_negation_uncertainty.txt": 156}


def test_every_rule_cites_lines_of_a_pattern_file():
    rules = [*chexpert_rules.PRE_NEGATION_UNCERTAINTY, *chexpert_rules.NEGATION_AFTER,
             *chexpert_rules.NEGATION_BEFORE, *chexpert_rules.UNCERTAINTY_BEFORE, *chexpert_rules.UNCERTAINTY_AFTER]
    for rule in rules:
        name, lines = rule.source.split(":")
        numbers = [int(n) for n in re.findall(r"\d+", lines)]
        assert name in PATTERN_LINES and numbers and max(numbers) <= PATTERN_LINES[name], rule.source


def test_unmentions_remove_the_mention_they_contain():
    assert label_report("Calcified nodule in the left upper lobe.") == {}        # "calcified nodul"; "calcifi"
    assert label_report("Small pericardial effusion.") == NF                      # no Pleural Effusion
    assert label_report("Massive cardiomegaly.") == {"Cardiomegaly": 1}           # "massive" is no mass
    assert label_report("Pacer lead tip over the heart.") == {"Support Devices": 1, **NF}  # a position
    assert label_report("Pleural scarring at the apex.") == {"Pleural Other": 1}  # "pleural scar": not opacity
    assert label_report("Nodule in the left lower lobe.") == {"Lung Lesion": 1}


def test_mentions_are_the_labelers_substrings():
    assert label_report("Bibasilar atelectatic changes.") == {"Atelectasis": 1}   # "atelecta"
    assert label_report("Small bilateral effusions.") == {"Pleural Effusion": 1}
    assert label_report("Heart and mediastinum normal.") == {"Enlarged Cardiomediastinum": 0, **NF}  # " mediastinum"
    assert label_report("Greater tuberosity fracture.") == {"Fracture": 1, "Support Devices": 1}  # "tube", as there


@pytest.mark.parametrize("report", ["Emphysema.", "Degenerative changes of the thoracic spine.", "Mild scoliosis.",
                                    "Possible small hiatal hernia.", "Aortic atherosclerosis."])
def test_other_findings_leave_no_finding_blank_and_label_nothing(report):
    assert label_report(report) == {}


def test_a_negated_other_finding_or_a_device_leaves_no_finding_one():
    assert label_report("No emphysema.") == NF
    assert label_report("Chest tube in place.") == {"Support Devices": 1, **NF}
    assert label_report("") == NF and label_report(None) == NF            # nothing mentioned: 1
    assert "No Finding" not in label_report("Large right pleural effusion.")
    assert label_report("Possible small pneumothorax.") == {"Pneumothorax": -1}


@pytest.mark.parametrize("report, labels", [
    ("CHF.", {"Edema": 1, "Cardiomegaly": -1}),
    ("Congestive heart failure is possible.", {"Edema": -1, "Cardiomegaly": -1}),
    ("No CHF.", {"Edema": 0, **NF}),
    ("Cardiomegaly and CHF.", {"Edema": 1, "Cardiomegaly": 1}),               # 1 with the added -1 -> 1
    ("Heart size is normal. CHF.", {"Edema": 1, "Cardiomegaly": -1}),         # 0 with the added -1 -> -1
    ("Pulmonary edema.", {"Edema": 1}),                                        # only chf / heart failure add it
])
def test_chf_and_heart_failure_add_an_uncertain_cardiomegaly(report, labels):
    assert label_report(report) == in_order(labels)


@pytest.mark.parametrize("values, label", [([0, -1], -1), ([0, 1], 1), ([-1, 1], 1), ([0, -1, 1], -1),
                                           ([0, 0], 0), ([1], 1), ([-1], -1), ([], None)])
def test_aggregation_follows_the_labelers_order(values, label):
    assert aggregate(values) == label


def test_negative_uncertain_and_positive_mentions_of_one_observation_give_uncertain():
    report = "No consolidation on the right. Possible consolidation at the left base. Consolidation in the lingula."
    assert [row["label"] for row in mention_labels(report)] == [0, -1, 1]
    assert label_report(report) == {"Consolidation": -1}


def read_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def test_the_labelers_sample_reports_come_out_as_its_sample_output_cell_for_cell(tmp_path):
    out = tmp_path / "labels.csv"
    assert label_reports([str(SAMPLE / "sample_reports.csv"), "--out", str(out)]) == 0
    expected, got = read_rows(SAMPLE / "labeled_reports.csv"), read_rows(out)
    assert expected[0] == ["Reports", *chexpert_labeler.OBSERVATIONS]
    assert len(got) == len(expected) == 5 and all(len(row) == 15 for row in expected)
    differing = [(r, expected[0][c], expected[r][c], got[r][c]) for r in range(5) for c in range(15)
                 if got[r][c] != expected[r][c]]
    assert differing == []
    assert out.read_bytes() == (SAMPLE / "labeled_reports.csv").read_bytes()


def cells(report: str) -> list[str]:
    """A report's 14 labels as the labeler writes them."""
    labels = label_report(report)
    return ["" if labels.get(n) is None else f"{float(labels[n]):.1f}" for n in chexpert_labeler.OBSERVATIONS]


def test_a_report_a_labeler_maintainer_labelled():
    # https://github.com/stanfordmlgroup/chexpert-labeler/issues/15: the maintainer's output for this report
    report = ("The lungs are clear without evidence of focal airspace disease. There is no evidence of pneumothorax "
              "or large pleural effusion. The cardiac and mediastinal contours are within normal limits.")
    assert cells(report) == ["1.0", "0.0", "", "", "0.0", "", "", "", "", "0.0", "0.0", "", "", ""]


def test_a_report_where_the_parse_decides_differs_in_two_cells():
    # https://github.com/stanfordmlgroup/chexpert-labeler/issues/29: the labeler's output as posted there. A
    # missing comma ("consolidation large pleural effusion or pneumothorax") makes its parse join effusion and
    # pneumothorax by "or" outside the negation: -1 there, 0 here.
    report = ("PA and moderate loss of the chest demonstrate stable moderate cardiomediastinal silhouette with "
              "atherosclerotic calcifications of the aortic XXXX and mild aortic ectasia. Emphysematous changes with "
              "flattening of the hemidiaphragms. Blunting of the costophrenic XXXX, and XXXX secondary to "
              "scarring/emphysematous changes. No evidence of focal airspace consolidation large pleural effusion "
              "or pneumothorax. Visualized osseous structures appear intact")
    theirs = ["", "-1.0", "", "", "-1.0", "", "0.0", "", "", "-1.0", "-1.0", "", "", ""]
    ours = cells(report)
    differing = {name for name, a, b in zip(chexpert_labeler.OBSERVATIONS, theirs, ours) if a != b}
    assert differing == {"Pneumothorax", "Pleural Effusion"}
    assert ours[9:11] == ["0.0", "0.0"]


def test_the_phrase_lists_are_the_labelers():
    assert set(chexpert_rules.MENTIONS) == set(CHEXPERT_14)
    assert len(chexpert_rules.MENTIONS["No Finding"]) == 53
    assert {"hyperinflat", "calcifi", "granuloma", "emphysema", "degenera"} <= set(chexpert_rules.MENTIONS["No Finding"])
    assert " mediastinum" in chexpert_rules.MENTIONS["Enlarged Cardiomediastinum"]   # "_mediastinum"
    assert " line " in chexpert_rules.MENTIONS["Support Devices"]                    # "_line_"
    assert "calcified nodul" in chexpert_rules.UNMENTIONS["Lung Lesion"]
    assert "over the heart" in chexpert_rules.UNMENTIONS["Cardiomegaly"]
    assert "over the cardiomegaly" not in chexpert_rules.UNMENTIONS["Cardiomegaly"]


def test_the_labeler_imports_without_torch():
    code = ("import sys, brainvlm.eval.chexpert_labeler, brainvlm.eval.chexpert_files; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_label_reports_labels_quoted_multiline_and_crlf_reports(tmp_path, capsys):
    reports = tmp_path / "reports.csv"
    reports.write_bytes(b'No effusion.\r\n"Cardiomegaly,\r\nno edema."\r\n\r\nPossible pneumonia.\r\n')
    out = tmp_path / "labels.csv"
    assert label_reports([str(reports), "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"{out}: 3 reports labelled\n"
    rows = read_rows(out)
    assert [row[0] for row in rows] == ["Reports", "No effusion.", "Cardiomegaly,\r\nno edema.", "Possible pneumonia."]
    named = [dict(zip(rows[0], row)) for row in rows[1:]]
    assert named[0]["Pleural Effusion"] == "0.0" and named[0]["No Finding"] == "1.0"
    assert named[1]["Cardiomegaly"] == "1.0" and named[1]["Edema"] == "0.0" and named[1]["No Finding"] == ""
    assert named[2]["Pneumonia"] == "-1.0"


BAD_INPUTS = [
    ("missing", None, "{path}: no such file"),
    ("empty", b"", ("{path}: empty file; expected one report per row, no header (a report with a comma or a line "
                   "break in double quotes)")),
    ("blank lines", b"\n\n", ("{path}: empty file; expected one report per row, no header (a report with a comma "
                             "or a line break in double quotes)")),
    ("latin-1", "No effusion.\n\"Two\nlines\"\nLarge \xe9panchement.\n".encode("latin-1"),
     ("{path} row 3: byte 31 (0xe9) is not UTF-8 (invalid continuation byte); the file must be UTF-8 (is it "
     "Latin-1 or Windows-1252?): save it as UTF-8")),
    ("utf-16", "No effusion.\n".encode("utf-16"), ("{path}: the file is UTF-16 (it starts with a UTF-16 byte-order "
                                                  "mark), not UTF-8; save it as UTF-8")),
    ("comma", b"No effusion.\nCardiomegaly, no edema.\n", ("{path} row 2: 2 fields, expected 1; put a report that "
                                                          "holds a comma in double quotes")),
    ("empty report", b'No effusion.\n""\n', "{path} row 2: an empty report; remove the row or give its text"),
    ("header", b"Reports\nNo effusion.\n", "{path} row 1: a header ('Reports'); the reports file has none: remove it"),
    ("unclosed quote", b'No effusion.\n"Cardiomegaly\n', ("{path} row 2: not a CSV row (unexpected end of data); "
                                                         "expected one report per row, no header (a report with a "
                                                         "comma or a line break in double quotes)")),
]


@pytest.mark.parametrize("name, content, message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_label_reports_refuses_a_bad_file_in_one_line(tmp_path, capsys, name, content, message):
    path = tmp_path / "reports.csv"
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / "labels.csv"
    assert label_reports([str(path), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"brainvlm label-reports: {message.format(path=path)}\n" and captured.out == ""
    assert not out.exists()


def test_label_reports_refuses_to_overwrite_its_input_or_write_into_no_folder(tmp_path, capsys):
    reports = tmp_path / "reports.csv"
    reports.write_text("No effusion.\n")
    assert label_reports([str(reports), "--out", str(reports)]) == 2
    assert capsys.readouterr().err == (f"brainvlm label-reports: {reports}: the output is the reports file itself; "
                                       "write the labels elsewhere\n")
    missing = tmp_path / "no" / "labels.csv"
    assert label_reports([str(reports), "--out", str(missing)]) == 2
    assert capsys.readouterr().err == (f"brainvlm label-reports: {missing}: cannot write the labels (No such file "
                                       "or directory)\n")
    assert reports.read_text() == "No effusion.\n"


def test_agreement_with_reference_labels():
    table = chexpert_labeler.agreement(["No effusion.", "Large effusion."],
                                       [{"Pleural Effusion": 0}, {"Pleural Effusion": 0}])
    assert table["Pleural Effusion"] == {"agreement": 0.5, "n": 2}


# CheXpert label dictionaries (chexpert_dict.json: study id -> observation -> 1/0/-1/null), read by
# data.adapters.curriculum.


def test_the_label_dictionary_knows_the_14_observations():
    assert CHEXPERT_OBSERVATIONS == CHEXPERT_14


@pytest.mark.parametrize("labels, message", [
    ({"50414267": ["Edema", 1]}, ("study 50414267: the labels are a list, expected an object of observation -> 1, "
                                 '0, -1 or null, e.g. {"Cardiomegaly": 1, "Edema": 0}')),
    ({"50414267": {"Pleural Efusion": 1}}, ("study 50414267: 'Pleural Efusion' is not a CheXpert observation; "
                                           "did you mean 'Pleural Effusion'?")),
    ({"50414267": {"cardiomegaly": 1}}, ("study 50414267: 'cardiomegaly' is not a CheXpert observation; "
                                        "did you mean 'Cardiomegaly'?")),
    ({"50414267": {"Edema": 2}}, "study 50414267: labels must be 1, 0, -1 or null, got {'Edema': 2}"),
])
def test_a_bad_label_dictionary_names_the_file_and_study(tmp_path, labels, message):
    path = tmp_path / "chexpert_dict.json"
    path.write_text(json.dumps(labels))
    with pytest.raises(AdapterError) as caught:
        read_joins(None, path)
    assert isinstance(caught.value, ValueError) and str(caught.value) == f"{path}: {message}"


def test_labels_joined_in_memory_are_checked_too(tmp_path):
    record = {"image": "files/p10/p10000032/s50414267/x.jpg", "prompt": "Image:<image>\nAnswer Impression & CheXpert.",
              "target": "Impression: Normal.", "stage": "A"}
    path = tmp_path / "curriculum_train.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(AdapterError, match=re.escape("CheXpert labels of study 50414267: the labels are a list")):
        read_curriculum(path, "train", chexpert={"50414267": [["Edema", 1]]})
    sample = read_curriculum(path, "train", chexpert={"50414267": {"Edema": None}})[0]
    assert sample["metadata"]["chexpert"] == {"Edema": None}
