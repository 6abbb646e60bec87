"""Names to CUIs: each step of the cascade, abbreviations, ambiguity, unmapped names, per-method precision."""

from __future__ import annotations

import pytest

from brainvlm.data.concept_map import (
    ConceptMapper,
    is_abbreviation,
    map_names,
    method_precision,
    normalise,
    read_labelled_names,
)
from brainvlm.data.umls import Concept, ConceptTable, read_cui_csv
from brainvlm.eval.answers import parse_concepts


@pytest.fixture(scope="module")
def mapper(test_data) -> ConceptMapper:
    return ConceptMapper(read_cui_csv(test_data / "umls_concept_tables" / "cui_mapping.csv"))


@pytest.fixture(scope="module")
def labelled(test_data):
    return read_labelled_names(test_data / "umls_concept_tables" / "labelled_names.csv")


def test_normalise_folds_case_punctuation_whitespace_and_plurals():
    assert normalise("  Pleural   Effusions ") == "pleural effusion"
    assert normalise("Opacities of the VERTEBRAE") == "opacity of the vertebra"
    assert normalise("1,2-Dipalmitoyl-Glycerophosphocholine") == "1 2 dipalmitoyl glycerophosphocholine"
    assert normalise("abscesses") == "abscess" and normalise("pelvis") == "pelvis"
    assert normalise("Sinuses") == normalise("sinus") == "sinus"


def test_each_step_of_the_cascade(mapper):
    cases = {"Cyperquat": ("C0000098", "exact"),
             "NAPHTHALIDINE": ("C0000102", "normalised"),
             "branching enzymes": ("C0000052", "normalised"),
             "Naphthylamine alpha": ("C0000102", "word_order"),
             "Naphtalidine": ("C0000102", "fuzzy")}
    for name, (cui, method) in cases.items():
        match = mapper.map(name)
        assert (match.cui, match.method) == (cui, method), name
        assert match.score == 100.0 or (method == "fuzzy" and 90.0 <= match.score < 100.0)


def test_the_fuzzy_threshold_is_a_parameter(mapper, test_data):
    assert mapper.map("Cyperquatt").cui == "C0000098"                  # token_sort_ratio 94.7
    strict = ConceptMapper(mapper.table, threshold=95.0)
    assert strict.map("Cyperquatt").method == "unmapped"
    with pytest.raises(ValueError, match="threshold=0"):
        ConceptMapper(mapper.table, threshold=0)


def test_short_all_capitals_abbreviations_match_only_exactly():
    assert is_abbreviation("CTS") and is_abbreviation("T1") and not is_abbreviation("Cts")
    assert not is_abbreviation("COVID-19 pneumonia") and not is_abbreviation("X")
    names = ConceptMapper.from_names({"CT": "C0040405", "X-Ray Computed Tomography": "C0040405",
                                      "MRI": "C0024485", "Chest": "C0817096"})
    assert names.map("CT").cui == "C0040405"
    assert names.map("CTS").method == "unmapped"                      # never a fuzzy neighbour of CT
    assert names.map("ct").method == "unmapped"                       # CT matches case-sensitively only
    assert names.map("MRIs").method == "unmapped"
    assert names.map("x-ray computed tomographies").cui == "C0040405"


def test_a_name_of_several_concepts_is_ambiguous_unless_one_prefers_it():
    table = ConceptTable({"C0000001": Concept("C0000001", "cold", ("common cold",)),
                          "C0000002": Concept("C0000002", "cold temperature", ("cold",)),
                          "C0000003": Concept("C0000003", "chill", ("shiver",)),
                          "C0000004": Concept("C0000004", "shivering", ("shiver",))})
    mapper = ConceptMapper(table)
    assert mapper.map("Cold").cui == "C0000001"                       # the preferred name of one of them
    shiver = mapper.map("shiver")
    assert (shiver.cui, shiver.method, shiver.candidates) == (None, "ambiguous", ("C0000003", "C0000004"))


def test_unmapped_names_are_returned_never_dropped(mapper):
    names = ["IBMX", "CTS", "pneumonia", "IBMX", ""]
    table = map_names(names, mapper)
    assert list(table["name"]) == names
    assert list(table["method"]) == ["exact", "unmapped", "unmapped", "exact", "unmapped"]
    assert table["cui"].isna().sum() == 3
    assert list(table.columns) == ["name", "cui", "score", "method", "candidates"]


def test_the_labelled_list_maps_by_the_expected_method(mapper, labelled):
    table = map_names(labelled["name"], mapper)
    method_of_kind = {"synonym": "exact", "abbreviation": "exact", "case": "normalised",
                      "punctuation": "normalised", "whitespace": "normalised", "plural": "normalised",
                      "singular": "normalised", "word_order": "word_order", "typo": "fuzzy"}
    rows = zip(labelled["kind"], labelled["expected_cui"], table["method"], table["name"])
    for kind, cui, method, name in rows:
        if cui and kind in method_of_kind:
            assert method == method_of_kind[kind], name
        elif not cui and kind in ("abbreviation", "unrelated"):
            assert method == "unmapped", name


def test_per_method_precision_on_the_labelled_list(mapper, labelled):
    summary = method_precision(labelled, mapper).set_index("method")
    assert summary["n_names"].to_dict() == {"exact": 7, "normalised": 10, "word_order": 3, "fuzzy": 8,
                                            "unmapped": 8, "all": 36}
    assert summary.loc[["exact", "normalised", "word_order", "unmapped"], "precision"].eq(1.0).all()
    assert summary.loc["fuzzy", "n_correct"] == 6                     # two near misses are other chemicals
    assert summary.loc["all", "precision"] == pytest.approx(34 / 36)


def test_a_labelled_list_without_its_columns_is_an_error(tmp_path):
    path = tmp_path / "names.csv"
    path.write_text("name,cui\nchest,C0817096\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"columns \['expected_cui', 'kind'\] are missing"):
        read_labelled_names(path)
    path.write_text("name,expected_cui,kind\nchest,C08,synonym\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"expected_cui on lines \[2\]"):
        read_labelled_names(path)
    path.write_bytes("name,expected_cui,kind\nthorax \u00e9largi,C0817096,synonym\n".encode("latin-1"))
    with pytest.raises(ValueError) as info:
        read_labelled_names(path)
    assert str(info.value) == (f"{path} line 2: byte 30 (0xe9) is not UTF-8 (invalid continuation byte); the "
                               "file must be UTF-8 (is it Latin-1 or Windows-1252?): save it as UTF-8")


def test_parse_concepts_maps_names_through_the_same_mapper(mapper):
    text = "Concepts: C0000005; naphtalidine; IBMX; CTS;"
    assert parse_concepts(text, mapper) == {"C0000005", "C0000102", "C0000096", "cts"}
    assert parse_concepts("Concepts: Pleural Effusions", {"pleural effusion": "C0032227"}) == {"C0032227"}
