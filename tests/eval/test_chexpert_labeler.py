"""The rule-based CheXpert-14 labeler on hand-labelled report sentences and on each aggregation rule.

The sentences were written and labelled by hand in the style of chest radiograph impressions; none comes
from a synthetic template. Labels follow the CheXpert convention: 1 positive, 0 negative, -1 uncertain,
observations not mentioned left out; No Finding is 1 when no observation other than Support Devices is
positive or uncertain.
"""

import pytest

from brainvlm.eval import chexpert_labeler
from brainvlm.eval.chexpert_labeler import aggregate, label_report

NF = {"No Finding": 1}

SENTENCES = [
    # negation
    ("No pleural effusion or pneumothorax.", {"Pleural Effusion": 0, "Pneumothorax": 0, **NF}),
    ("No pneumothorax.", {"Pneumothorax": 0, **NF}),
    ("There is no focal consolidation.", {"Consolidation": 0, **NF}),
    ("No evidence of pneumonia.", {"Pneumonia": 0, **NF}),
    ("Negative for acute fracture.", {"Fracture": 0, **NF}),
    ("Lungs are clear without effusion or edema.", {"Lung Opacity": 0, "Pleural Effusion": 0, "Edema": 0, **NF}),
    ("The heart is not enlarged.", {"Cardiomegaly": 0, **NF}),
    ("Heart size is normal.", {"Cardiomegaly": 0, **NF}),
    ("Interval resolution of the left pleural effusion.", {"Pleural Effusion": 0, **NF}),
    ("The previously seen pneumothorax has resolved.", {"Pneumothorax": 0, **NF}),
    ("A nodule is not seen on this study.", {"Lung Lesion": 0, **NF}),
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
    ("Subtle nodular opacity is suspicious for a neoplasm.", {"Lung Lesion": 1}),  # CheXpert: a lesion mention
    ("Mild bibasilar opacities, likely atelectasis, although infection is not excluded.",
     {"Lung Opacity": 1, "Atelectasis": 1, "Pneumonia": -1}),
    ("Without evidence of pneumothorax, there is a small left apical cap.", {"Pneumothorax": 0, **NF}),
    ("Enteric tube has been removed. Lungs are hyperinflated.", {"Support Devices": 0, **NF}),
    ("Dense consolidation in the left lower lobe with air bronchograms.", {"Consolidation": 1}),
    ("There are no new nodules or masses.", {"Lung Lesion": 0, **NF}),
    # positives
    ("Moderate cardiomegaly.", {"Cardiomegaly": 1}),
    ("Large left pleural effusion.", {"Pleural Effusion": 1}),
    ("Right upper lobe consolidation.", {"Consolidation": 1}),
    ("Mild pulmonary vascular congestion.", {"Edema": 1}),
    ("Small right apical pneumothorax.", {"Pneumothorax": 1}),
    ("Displaced fracture of the left seventh rib.", {"Fracture": 1}),
    ("A 1.5 cm nodule in the right upper lobe.", {"Lung Lesion": 1}),
    ("Widened mediastinum.", {"Enlarged Cardiomediastinum": 1}),
    ("Bibasilar atelectasis.", {"Atelectasis": 1}),
    ("Patchy airspace disease in the left lower lobe.", {"Lung Opacity": 1}),
    ("Right pleural thickening is unchanged.", {"Pleural Other": 1}),
    ("Multifocal pneumonia.", {"Pneumonia": 1}),
    ("Endotracheal tube terminates 4 cm above the carina.", {"Support Devices": 1, **NF}),
    ("Right PICC line tip in the SVC.", {"Support Devices": 1, **NF}),
    ("Left chest wall pacemaker with leads in the right atrium and ventricle.", {"Support Devices": 1, **NF}),
    ("Median sternotomy wires are intact.", {"Support Devices": 1, **NF}),
    # mixed mentions in one report
    ("Cardiomegaly with mild pulmonary edema. No pleural effusion.",
     {"Cardiomegaly": 1, "Edema": 1, "Pleural Effusion": 0}),
    ("Heart size is normal. Left lower lobe consolidation, concerning for pneumonia.",
     {"Cardiomegaly": 0, "Consolidation": 1, "Pneumonia": -1}),
    ("No pneumothorax. Small left effusion.", {"Pneumothorax": 0, "Pleural Effusion": 1}),
    ("Possible pneumonia. No effusion.", {"Pneumonia": -1, "Pleural Effusion": 0}),
    ("Nasogastric tube in the stomach. No acute cardiopulmonary process.", {"Support Devices": 1, **NF}),
    ("No pneumothorax after chest tube removal; small residual effusion.",
     {"Pneumothorax": 0, "Support Devices": 0, "Pleural Effusion": 1}),
    ("Lungs are clear. Heart size is normal. No acute osseous abnormality.",
     {"Lung Opacity": 0, "Cardiomegaly": 0, **NF}),
    ("Stable cardiomegaly, but no edema.", {"Cardiomegaly": 1, "Edema": 0}),
    ("Increased opacity at the right base, which may represent pneumonia.",
     {"Lung Opacity": 1, "Pneumonia": -1}),
    # aggregation across sentences and the CHF rule
    ("Small left effusion. No effusion on the right.", {"Pleural Effusion": 1}),             # 0 with 1 -> 1
    ("No consolidation. Possible consolidation at the left base.", {"Consolidation": -1}),   # 0 with -1 -> -1
    ("Possible atelectasis. Definite atelectasis at the right base.", {"Atelectasis": 1}),    # -1 with 1 -> 1
    ("Findings consistent with congestive heart failure.", {"Cardiomegaly": -1}),
    ("Possible CHF.", {"Cardiomegaly": -1}),
    ("No evidence of CHF.", NF),
    ("Heart size is normal. Findings compatible with heart failure.", {"Cardiomegaly": -1}),
    ("No acute cardiopulmonary abnormality.", NF),
]


@pytest.mark.parametrize("sentence, labels", SENTENCES, ids=[s for s, _ in SENTENCES])
def test_hand_labelled_sentences(sentence, labels):
    expected = {name: labels[name] for name in chexpert_labeler.CHEXPERT_14 if name in labels}
    assert label_report(sentence) == expected


def test_there_are_at_least_fifty_hand_labelled_sentences():
    assert len(SENTENCES) >= 50


@pytest.mark.parametrize("values, label", [([0, -1], -1), ([0, 1], 1), ([-1, 1], 1), ([0, 0], 0), ([], None),
                                           ([-1], -1)])
def test_aggregation_follows_the_chexpert_labeler(values, label):
    assert aggregate(values) == label


def test_no_finding_is_never_zero_and_support_devices_do_not_count():
    assert "No Finding" not in label_report("Large right pleural effusion.")
    assert label_report("Chest tube in place.")["No Finding"] == 1
    assert label_report("Possible small pneumothorax.").get("No Finding") is None
    assert all(v != 0 for k, v in label_report("Normal study.").items() if k == "No Finding")


def test_agreement_with_reference_labels():
    table = chexpert_labeler.agreement(["No effusion.", "Large effusion."],
                                       [{"Pleural Effusion": 0}, {"Pleural Effusion": 0}])
    assert table["Pleural Effusion"] == {"agreement": 0.5, "n": 2}
