"""ImageCLEF submission files: an invalid file per format rule, every violation with its row, the writers."""

from __future__ import annotations

from pathlib import Path

import pytest

from brainvlm.eval import clef_files

IDS = [str(i) for i in range(1, 13)]  # not zero-padded: sorted as text they read 1, 10, 11, 12, 2, ...


def _file(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


# ---------------------------------------------------------------------------------- the format check
VALID_CONCEPTS = "ID,CUIs\n" + "".join(f"{i},C0040405;C0817096\n" for i in IDS)


def _rest(start: int) -> str:
    """Valid caption rows for the images from ``IDS[start]`` on."""
    return "".join(f"{i},x\n" for i in IDS[start:])


INVALID = [  # a hand-written file per rule, each refused by the official checker: (kind, content, rule, row)
    ("concepts", "ID,CUI\n" + VALID_CONCEPTS.split("\n", 1)[1], "header", 1),
    ("concepts", b"\xef\xbb\xbf" + VALID_CONCEPTS.encode(), "bom", 1),
    ("concepts", VALID_CONCEPTS.encode().replace(b"3,C0040405", b"3,C004\xe9405"), "encoding", 4),
    ("concepts", VALID_CONCEPTS.replace("\n5,", "\n\n5,"), "blank", 6),
    ("concepts", VALID_CONCEPTS + "\n", "blank", 14),
    ("concepts", VALID_CONCEPTS.replace("4,C0040405;C0817096", "4"), "comma", 5),
    ("concepts", VALID_CONCEPTS.replace("4,C0040405;C0817096", "4,C0040405,C0817096"), "columns", 5),
    ("concepts", VALID_CONCEPTS.replace("\n4,", "\n4 ,"), "whitespace", 5),
    ("concepts", VALID_CONCEPTS.replace("C0817096\n4", "C0817096 \n4"), "whitespace", 4),
    ("concepts", VALID_CONCEPTS.replace("\n4,C0040405;", "\n3,C0040405;"), "duplicate-id", 5),
    ("concepts", VALID_CONCEPTS.replace("\n12,", "\n13,"), "unknown-id", 13),
    ("concepts", "ID,CUIs\n" + "".join(f"{i},C0040405\n" for i in sorted(IDS)), "order", 6),
    ("concepts", VALID_CONCEPTS.replace("12,C0040405;C0817096\n", ""), "missing-id", None),
    ("concepts", VALID_CONCEPTS.replace("7,C0040405;C0817096", "7,C0040405;C0817096;"), "empty-cui", 8),
    ("concepts", VALID_CONCEPTS.replace("7,C0040405;C0817096", "7,C0040405;;C0817096"), "empty-cui", 8),
    ("concepts", VALID_CONCEPTS.replace("7,C0040405", "7,c0040405"), "cui-format", 8),
    ("concepts", VALID_CONCEPTS.replace("7,C0040405", "7,X-ray CT"), "cui-format", 8),
    ("concepts", VALID_CONCEPTS.replace("7,C0040405;C0817096", "7,C0040405;C0040405"), "duplicate-cui", 8),
    ("concepts", VALID_CONCEPTS.replace("7,C0040405;C0817096", "7," + ";".join(f"C{i}" for i in range(101))),
     "too-many", 8),
    ("captions", 'ID,Caption\n1,"CT, axial\nof the chest"\n' + _rest(1), "line-break", 2),
    ("captions", "ID,Caption\n1,CT of the chest, axial\n" + _rest(1), "unquoted-comma", 2),
    ("captions", 'ID,Caption\n1,"CT, axial" chest\n' + _rest(1), "text-after-quote", 2),
    ("captions", 'ID,Caption\n1,"CT of "the" chest, axial"\n' + _rest(1), "inner-quote", 2),
    ("captions", 'ID,Caption\n1,"CT of the chest\n' + _rest(1), "unclosed-quote", 2),
]


@pytest.mark.parametrize(("kind", "content", "rule", "row"), INVALID)
def test_each_rule_has_an_invalid_file_that_breaks_it(tmp_path, kind, content, rule, row):
    violations = clef_files.check_submission(_file(tmp_path / "S.csv", content), IDS, kind)
    assert (rule, row) in {(v.rule, v.row) for v in violations}, [str(v) for v in violations]


def test_every_violation_is_reported_with_its_row(tmp_path):
    content = "ID,CUIs \n1,C0040405;\n2\n2,c1\n13,C1;C1\n"
    violations = clef_files.check_submission(_file(tmp_path / "S.csv", content), IDS[:3])
    assert [(v.rule, v.row) for v in violations] == [
        ("header", 1), ("empty-cui", 2), ("comma", 3), ("duplicate-id", 4), ("cui-format", 4),
        ("unknown-id", 5), ("duplicate-cui", 5), ("missing-id", None)]
    assert str(violations[0]) == "row 1: the header is 'ID,CUIs '; it must be exactly 'ID,CUIs'"
    assert str(violations[-1]).startswith("file: 1 ids of the ids file have no row (first ten: ['3'])")


def test_the_writers_write_files_that_pass_the_check(tmp_path):
    concepts = {i: ["c0040405", "C0817096", "C0040405"] if i != "2" else [] for i in IDS}
    path = clef_files.write_concepts(tmp_path / "concepts.csv", IDS, concepts)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[:4] == ["ID,CUIs", "1,C0040405;C0817096", "2,", "3,C0040405;C0817096"]
    assert [line.split(",")[0] for line in lines[1:]] == IDS                 # the ids' order, not sorted
    assert clef_files.check_submission(path, IDS) == []
    captions = {i: f"CT of the chest,\n  slice {i}" for i in IDS} | {"1": 'a "quoted" word'}
    path = clef_files.write_captions(tmp_path / "captions.csv", IDS, captions)
    assert path.read_bytes().startswith(b'ID,Caption\n1,"a ""quoted"" word"\n2,"CT of the chest, slice 2"\n')
    assert clef_files.check_submission(path, IDS, "captions") == []
    ids_file = _file(tmp_path / "ids.csv", "ID,CUIs\n" + "".join(f"{i},\n" for i in IDS))
    assert clef_files.read_ids(ids_file) == IDS
    assert clef_files.check_submission(path, ids_file, "captions") == []


@pytest.mark.parametrize(("call", "says"), [
    (lambda p: clef_files.write_concepts(p, IDS[:2], {"1": ["C1"]}), "1 ids have no concepts"),
    (lambda p: clef_files.write_concepts(p, ["1"], {"1": ["C1"], "2": []}), "1 concepts belong to no id"),
    (lambda p: clef_files.write_concepts(p, ["1", "1"], {"1": ["C1"]}), "listed more than once"),
    (lambda p: clef_files.write_concepts(p, ["1 "], {"1 ": ["C1"]}), "whitespace at an end"),
    (lambda p: clef_files.write_concepts(p, ["1"], {"1": ["chest"]}), "['CHEST'] are not CUIs"),
    (lambda p: clef_files.write_concepts(p, ["1"], {"1": [f"C{i}" for i in range(101)]}), "101 concepts"),
    (lambda p: clef_files.write_captions(p, ["1"], {"1": " \n "}), "the caption is empty"),
])
def test_the_writers_refuse_what_the_challenge_would(tmp_path, call, says):
    with pytest.raises(ValueError, match=None) as info:
        call(tmp_path / "S.csv")
    assert says in str(info.value)


def test_the_check_takes_an_ids_file_whose_first_column_is_id(tmp_path):
    with pytest.raises(ValueError, match="does not start with ID"):
        clef_files.read_ids(_file(tmp_path / "ids.csv", "image\n1\n"))
    with pytest.raises(ValueError, match="kind='caption'"):
        clef_files.check_submission(_file(tmp_path / "S.csv", VALID_CONCEPTS), IDS, "caption")
