"""Concept tables from real UMLS RRF excerpts and a ROCOv2-style CSV; malformed rows name file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from brainvlm.data.umls import ConceptTableError, load_concept_table, load_umls, read_cui_csv, read_mrconso

# MRCONSO columns: CUI,LAT,TS,LUI,STT,SUI,ISPREF,AUI,SAUI,SCUI,SDUI,SAB,TTY,CODE,STR,SRL,SUPPRESS,CVF
ROW = "{cui}|{lat}|{ts}|L1|{stt}|S1|{ispref}|A1||M1|D1|MSH|{tty}|D1|{name}|0|{suppress}|256|"


def _row(cui="C0000001", name="a name", lat="ENG", ts="P", stt="PF", ispref="Y", tty="MH", suppress="N"):
    return ROW.format(cui=cui, lat=lat, ts=ts, stt=stt, ispref=ispref, tty=tty, name=name, suppress=suppress)


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tables(test_data) -> Path:
    return test_data / "umls_concept_tables"


# --------------------------------------------------------------------------------------- RRF files
def test_the_real_rrf_excerpt_gives_names_synonyms_and_semantic_types(tables):
    table = load_umls(tables / "META")
    assert sorted(table.concepts) == ["C0000005", "C0000039"]
    albumin = table["C0000005"]
    assert albumin.name == "(131)I-Macroaggregated Albumin"           # TS=P, STT=PF, ISPREF=Y
    assert albumin.synonyms == ("(131)I-MAA",)                         # the TS=S row
    assert albumin.semantic_types == ("Amino Acid, Peptide, or Protein",)
    lecithin = table["C0000039"]
    assert lecithin.name == "1,2-Dipalmitoylphosphatidylcholine"      # its only row (ISPREF=N)
    assert lecithin.semantic_types == ("Organic Chemical", "Pharmacologic Substance")
    assert load_concept_table(tables / "META" / "MRCONSO.RRF").concepts == table.concepts


def test_only_english_non_suppressed_names_count_and_the_vocabulary_limits_the_table(tmp_path):
    mrconso = _write(tmp_path / "META" / "MRCONSO.RRF", [
        _row("C0000001", "synonym first", ts="S", stt="VO", ispref="N"),
        _row("C0000001", "preferred name"),
        _row("C0000001", "nom francais", lat="FRE"),
        _row("C0000001", "obsolete name", suppress="O"),
        _row("C0000001", "suppressible name", suppress="E"),
        _row("C0000002", "other concept"),
    ])
    table = load_umls(mrconso.parent)
    assert table["C0000001"].name == "preferred name"
    assert table["C0000001"].synonyms == ("synonym first",)
    assert table["C0000001"].semantic_types == ()                      # no MRSTY.RRF beside it
    assert list(load_umls(mrconso, cuis=["c0000002"]).concepts) == ["C0000002"]
    assert read_mrconso(mrconso, cuis=[]) == {}


@pytest.mark.parametrize(("line", "says"), [
    (_row().removesuffix("|256|") + "|", "expected 18 '|'-separated fields"),   # one field too few
    (_row().removesuffix("|"), "no trailing |"),
    (_row(cui="C12"), "CUI field 'C12' is not C and 7 digits"),
    (_row(name=" "), "STR (the name, field 15) is empty"),
])
def test_a_malformed_mrconso_row_names_the_file_the_line_and_the_fix(tmp_path, line, says):
    mrconso = _write(tmp_path / "MRCONSO.RRF", [_row(), line])
    with pytest.raises(ConceptTableError, match=r"MRCONSO\.RRF:2: ") as info:
        load_umls(mrconso)
    assert says in str(info.value)


def test_a_malformed_mrsty_row_is_an_error_too(tmp_path):
    _write(tmp_path / "MRCONSO.RRF", [_row()])
    _write(tmp_path / "MRSTY.RRF", ["C0000001|T109|A1.4.1.2.1|Organic Chemical|AT1|256|", "C0000001|T109|"])
    with pytest.raises(ConceptTableError, match=r"MRSTY\.RRF:2: expected 6 '\|'-separated fields"):
        load_umls(tmp_path)
    with pytest.raises(FileNotFoundError, match="no MRCONSO.RRF"):
        load_umls(tmp_path / "nothing")


NO_ROW = "give the MRCONSO.RRF of a UMLS release (was the copy or download cut short?)"


@pytest.mark.parametrize(("content", "says"), [
    (b"", f"MRCONSO.RRF: the file holds no row (0 bytes); {NO_ROW}"),
    (b"\n\n", f"MRCONSO.RRF: the file holds no row (2 bytes); {NO_ROW}"),
    (_row(lat="FRE").encode() + b"\n",
     ("MRCONSO.RRF: no English (LAT=ENG), non-suppressed (SUPPRESS=N) row; give an MRCONSO.RRF with "
      "English names")),
    (_row().encode() + b"\n" + _row(name="caf\u00e9").encode("latin-1") + b"\n",
     ("MRCONSO.RRF:2: byte 50 of the line (0xe9) is not UTF-8 (invalid continuation byte); the file must be "
      "UTF-8, as UMLS release files are: save it as UTF-8")),
])
def test_an_mrconso_without_concepts_or_not_in_utf8_is_an_error_not_an_empty_table(tmp_path, content, says):
    mrconso = tmp_path / "MRCONSO.RRF"
    mrconso.write_bytes(content)
    with pytest.raises(ConceptTableError) as info:
        load_umls(tmp_path)
    assert str(info.value) == f"{tmp_path}/{says}"


# --------------------------------------------------------------------------------------------- CSV
def test_the_cui_mapping_csv_reads_names_and_synonyms(tables):
    table = read_cui_csv(tables / "cui_mapping.csv")
    assert len(table) == 11
    assert table["C0000096"].name == "1-Methyl-3-isobutylxanthine"
    assert "IBMX" in table["C0000096"].synonyms
    assert table["C0000015"].synonyms == ()
    assert table["C0000039"].name == "1,2-Dipalmitoylphosphatidylcholine"   # a quoted name with a comma
    limited = load_concept_table(tables / "cui_mapping.csv", cuis=["C0000096", "C0040405"])
    assert list(limited.concepts) == ["C0000096"]
    assert limited.missing(["C0000096", "c0040405"]) == ["C0040405"]
    frame = limited.to_frame()
    assert list(frame.columns) == ["cui", "name", "synonyms", "semantic_types"] and len(frame) == 1


def test_a_two_column_csv_with_a_bom_is_read(tmp_path):
    path = tmp_path / "names.csv"
    path.write_text("\ufeffCUI,Canonical name\nC0040405,X-Ray Computed Tomography\n\nc0817096,Chest\n",
                    encoding="utf-8")
    table = read_cui_csv(path)
    assert {cui: c.name for cui, c in table.concepts.items()} == {"C0040405": "X-Ray Computed Tomography",
                                                                   "C0817096": "Chest"}


@pytest.mark.parametrize(("text", "where", "says"), [
    ("", ":1:", "the file is empty"),
    ("ID,name\nC0817096,Chest\n", ":1:", "is not CUI,name[,synonyms]"),
    ("CUI,name\nC0817096\n", ":2:", "1 fields; expected CUI,name[,synonyms]"),
    ("CUI,name\nC0817096,Chest,thorax,extra\n", ":2:", "4 fields"),
    ("CUI,name\nC081709,Chest\n", ":2:", "is not C followed by 7 digits"),
    ("CUI,name\nC0817096, \n", ":2:", "has an empty name"),
    ("CUI,name,synonyms\nC0817096,Chest,thorax;\n", ":2:", "empty synonym"),
    ("CUI,name\nC0817096,Chest\nC0000726,Abdomen\nC0817096,Thorax\n", ":4:", "again (first on line 2)"),
])
def test_a_malformed_csv_row_names_the_file_the_line_and_the_fix(tmp_path, text, where, says):
    path = tmp_path / "cui_mapping.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConceptTableError) as info:
        read_cui_csv(path)
    assert f"cui_mapping.csv{where}" in str(info.value) and says in str(info.value)


@pytest.mark.parametrize(("content", "says"), [
    ("CUI,name\nC0817096,Poumon \u00e9largi\n".encode("latin-1"),
     ("cui_mapping.csv line 2: byte 25 (0xe9) is not UTF-8 (invalid continuation byte); the file must be "
      "UTF-8 (is it Latin-1 or Windows-1252?): save it as UTF-8")),
    ("CUI,name\nC0817096,Chest\n".encode("utf-16"),
     ("cui_mapping.csv: the file is UTF-16 (it starts with a UTF-16 byte-order mark), not UTF-8; save it "
      "as UTF-8")),
    (b"CUI,name\n", "cui_mapping.csv: no concept below the header; give one CUI,name row per concept"),
])
def test_a_csv_not_in_utf8_or_without_concepts_names_the_file(tmp_path, content, says):
    path = tmp_path / "cui_mapping.csv"
    path.write_bytes(content)
    with pytest.raises(ConceptTableError) as info:
        read_cui_csv(path)
    assert str(info.value) == f"{tmp_path}/{says}"
