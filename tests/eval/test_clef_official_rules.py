"""``check_submission`` decides as the official ImageCLEFmedical checkers decide: one hand-made file per rule
and file shape, each with the decision of ``caption_prediction/submission_check.py`` or
``concept_detection/submission_check.py`` (with the concept evaluator's 100-concept limit) of
taubsity/clef-caption-evaluation-2026 at commit 9966c13, and the exact violations brainvlm reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from brainvlm.eval.clef_check import check_submission
from brainvlm.eval.clef_csv import read_ids

IDS = ["1", "2", "3"]
ACCEPT, REFUSE = "accept", "refuse"


def captions(*rows: str, end: str = "\n", header: str = "ID,Caption") -> str:
    """A caption file: the header and ``rows``, each followed by ``end``."""
    return "".join(f"{row}{end}" for row in (header, *rows))


def concepts(*rows: str, end: str = "\n", header: str = "ID,CUIs") -> str:
    """A concept file: the header and ``rows``, each followed by ``end``."""
    return "".join(f"{row}{end}" for row in (header, *rows))


LONG = "x" * 140_000  # over csv.field_size_limit() (131,072 characters)
BLANK = "blank line; remove it (none anywhere, also not at the end)"
UNCLOSED = ("the caption opens a double quote that is never closed, so the rest of the file reads as part of "
            "it; close the quote")
TEXT_AFTER = ("text follows the closing double quote of the caption ({!r}); put the whole caption inside the "
              "quotes")
NOT_CUI = "{} are not CUIs: C (upper case) followed by digits"


def missing(*ids: str) -> tuple[str, None, str]:
    """The file-level violation of ids without a row."""
    listed = f"{len(ids)} ids of the ids file have no row (first ten: {list(ids)})"
    return ("missing-id", None, f"file: {listed}; write one row per image")


def v(rule: str, row: int, message: str) -> tuple[str, int, str]:
    """A violation as ``check_submission`` reports it: its rule, row and printed line."""
    return (rule, row, f"row {row}: {message}")


CAPTION_CASES = [  # (name, file, official decision, violations)
    ("crlf, quotes and whitespace around captions",
     captions('1, CT of the chest ', '2,"MRI, axial\u00a0"', "3,\u2003Ultrasound", end="\r\n"), ACCEPT, []),
    ("cr line ends", captions("1,a", "2,b", "3,c", end="\r"), ACCEPT, []),
    ("no line end after the last row", captions("1,a", "2,b", "3,c").rstrip("\n"), ACCEPT, []),
    ("an empty caption", captions("1,", "2,b", "3,c"), ACCEPT, []),
    ("a caption of spaces", captions('1,"   "', "2,b", "3,c"), ACCEPT, []),
    ("a line break in a quoted caption", captions('1,"CT of the\nchest"', "2,b", "3,c"), ACCEPT, []),
    ("a crlf in a quoted caption", captions('1,"CT of the\r\nchest"', "2,b", "3,c", end="\r\n"), ACCEPT, []),
    ("a quoted header", captions("1,a", "2,b", "3,c", header='"ID","Caption"'), ACCEPT, []),
    ("an inner quote without a comma", captions('1,"CT of "the" chest"', "2,b", "3,c"), ACCEPT, []),
    ("an unclosed quote on the last row, no comma", captions("1,a", "2,b", '3,"CT of the chest'), ACCEPT, []),
    ("a comma on the first line of a multi-line caption",
     captions('1,"CT, axial\nof the chest"', "2,b", "3,c"), REFUSE,
     [v("line-break", 2, "the caption holds a line break and its first line, '1,\"CT, axial', holds a "
                         "comma outside closed quotes (the official checker checks each line alone); write "
                         "the caption on one line")]),
    ("a multi-line caption shifts the lines of later rows",
     captions('1,"CT of\nthe chest, axial, enhanced"', "2,b", "3,c"), REFUSE,
     [v("line-break", 3, "the official checker checks this row's quoting on line 3 ('the chest, axial, "
                         "enhanced\"'), shifted by the line break in the field of row 2, and that line holds "
                         "a comma outside closed quotes; write the field of row 2 on one line")]),
    ("a blank line in a quoted caption", captions('1,"CT\n\nchest"', "2,b", "3,c"), REFUSE,
     [v("blank", 2, "the row's field holds a blank line (line 3); the official checker refuses any blank "
                    "line, also inside quotes: write the field on one line")]),
    ("a blank line between rows", captions("1,a", "", "2,b", "3,c"), REFUSE, [v("blank", 3, BLANK)]),
    ("a line of spaces", captions("1,a", "2,b", "3,c", "  "), REFUSE, [v("blank", 5, BLANK)]),
    ("a blank line at the end", captions("1,a", "2,b", "3,c") + "\n", REFUSE, [v("blank", 5, BLANK)]),
    ("an unclosed quote before other rows", captions('1,"CT of the chest', "2,b", "3,c"), REFUSE,
     [v("unclosed-quote", 2, UNCLOSED), missing("2", "3")]),
    ("an unclosed quote on the last row, with a comma", captions("1,a", "2,b", '3,"CT, axial'), REFUSE,
     [v("unclosed-quote", 4, UNCLOSED)]),
    ("an inner quote not doubled", captions('1,"CT of "the" chest, axial"', "2,b", "3,c"), REFUSE,
     [v("inner-quote", 2, "a double quote inside the quoted caption is not doubled, so the caption ends "
                          "there; write a quote inside quotes as \"\"")]),
    ("a comma outside quotes", captions("1,CT of the chest, axial", "2,b", "3,c"), REFUSE,
     [v("unquoted-comma", 2, "the caption holds a comma but is not in double quotes; write "
                             "ID,\"text, with commas\"")]),
    ("text after the closing quote", captions('1,"CT, axial" chest', "2,b", "3,c"), REFUSE,
     [v("text-after-quote", 2, TEXT_AFTER.format(" chest"))]),
    ("a space after the closing quote", captions('1,"CT, axial" ', "2,b", "3,c"), REFUSE,
     [v("text-after-quote", 2, TEXT_AFTER.format(" "))]),
    ("a field over the csv limit", captions("1,a", f'2,"{LONG}"', "3,c"), REFUSE,
     [v("field-limit", 3, "a field is longer than the CSV field limit of 131,072 characters (the official "
                          "checker cannot read the file past it); shorten it")]),
    ("an unclosed quote over the csv limit", captions("1,a", f'2,"{LONG}', "3,c"), REFUSE,
     [v("unclosed-quote", 3, "the caption opens a double quote that is never closed, so the rest of the "
                             "file reads as one field, longer than the CSV field limit of 131,072 "
                             "characters; close the quote")]),
    ("another header", captions("1,a", "2,b", "3,c", header="ID,Captions"), REFUSE,
     [v("header", 1, "the header is 'ID,Captions'; it must be exactly 'ID,Caption'")]),
    ("a space after the header", captions("1,a", "2,b", "3,c", header="ID,Caption "), REFUSE,
     [v("header", 1, "the header is 'ID,Caption '; it must be exactly 'ID,Caption'")]),
    ("an empty file", "", REFUSE,
     [v("header", 1, "the file is empty; the first row must be 'ID,Caption'"), missing("1", "2", "3")]),
    ("a space before an id", captions("1,a", " 2,b", "3,c"), REFUSE,
     [v("whitespace", 3, "the id ' 2' has whitespace at an end; remove it"),
      v("unknown-id", 3, "the id ' 2' is not in the ids file"), missing("2")]),
    ("a row without a comma", captions("1,a", "2", "3,c"), REFUSE,
     [v("comma", 3, "no comma after the id '2'; write '2,' for an image without a caption")]),
    ("an id twice", captions("1,a", "2,b", "2,c"), REFUSE,
     [v("duplicate-id", 4, "the id '2' repeats row 3; keep one row per image"), missing("3")]),
    ("ids sorted as text", captions("1,a", "3,c", "2,b"), REFUSE,
     [v("order", 4, "the id '2' comes before '3' in the ids file; keep the ids file's order (never sort ids "
                    "as text)")]),
    ("an unknown id", captions("1,a", "2,b", "4,c"), REFUSE,
     [v("unknown-id", 4, "the id '4' is not in the ids file"), missing("3")]),
]

HUNDRED_AND_ONE = ";".join(f"C{i}" for i in range(101))
CONCEPT_CASES = [
    ("crlf line ends", concepts("1,C0040405;C0817096", "2,", "3,C1", end="\r\n"), ACCEPT, []),
    ("cr line ends", concepts("1,C0040405", "2,", "3,C1", end="\r"), ACCEPT, []),
    ("spaces around a CUI inside the field", concepts("1,C0040405 ; C0817096", "2,", "3,C1"), ACCEPT, []),
    ("a quoted CUIs field", concepts('1,"C0040405;C0817096"', "2,", "3,C1"), ACCEPT, []),
    ("100 concepts", concepts("1," + ";".join(f"C{i}" for i in range(100)), "2,", "3,C1"), ACCEPT, []),
    ("101 concepts (the evaluator refuses)", concepts(f"1,{HUNDRED_AND_ONE}", "2,", "3,C1"), REFUSE,
     [v("too-many", 2, "101 concepts; at most 100 per image (the evaluator refuses more)")]),
    ("a space around the field", concepts("1,C0040405 ", "2,", "3,C1"), REFUSE,
     [v("whitespace", 2, "the CUIs 'C0040405 ' has whitespace at an end; remove it")]),
    ("a trailing semicolon", concepts("1,C0040405;", "2,", "3,C1"), REFUSE,
     [v("empty-cui", 2, "an empty CUI token (a trailing ';' or ';;'); remove it")]),
    ("a lower-case CUI", concepts("1,c0040405", "2,", "3,C1"), REFUSE,
     [v("cui-format", 2, NOT_CUI.format(["c0040405"]))]),
    ("a name instead of a CUI", concepts("1,X-ray CT", "2,", "3,C1"), REFUSE,
     [v("cui-format", 2, NOT_CUI.format(["X-ray CT"]))]),
    ("a CUI twice, spaced", concepts("1,C0040405; C0040405", "2,", "3,C1"), REFUSE,
     [v("duplicate-cui", 2, "CUIs ['C0040405'] appear more than once; keep each once")]),
    ("CUIs separated by commas", concepts("1,C0040405,C0817096", "2,", "3,C1"), REFUSE,
     [v("columns", 2, "3 fields; expected 2 (ID and CUIs): separate CUIs with ;")]),
    ("a row without a comma", concepts("1,C1", "2", "3,C1"), REFUSE,
     [v("comma", 3, "no comma after the id '2'; write '2,' for an image without concepts")]),
    ("a blank line", concepts("1,C1", "2,", "", "3,C1"), REFUSE, [v("blank", 4, BLANK)]),
    ("another header", concepts("1,C1", "2,", "3,C1", header="ID,CUI"), REFUSE,
     [v("header", 1, "the header is 'ID,CUI'; it must be exactly 'ID,CUIs'")]),
]

NOT_UTF8 = "the file must be UTF-8 (is it Latin-1 or Windows-1252?): save it as UTF-8"
ENCODING_CASES = [  # (name, kind, bytes, official decision, violations)
    ("a UTF-8 byte-order mark", "concepts", b"\xef\xbb\xbf" + concepts("1,C1", "2,", "3,C1").encode(), REFUSE,
     [v("bom", 1, "the file starts with a UTF-8 byte-order mark; save it as UTF-8 without BOM")]),
    ("UTF-16", "captions", captions("1,a", "2,b", "3,c").encode("utf-16"), REFUSE,
     [("encoding", None, ("file: the file is UTF-16 (it starts with a UTF-16 byte-order mark), not UTF-8; "
                          "save it as UTF-8"))]),
    ("Latin-1", "captions", captions("1,a", "2,caf\xe9", "3,c").encode("latin-1"), REFUSE,
     [v("encoding", 3, f"byte 20 (0xe9) is not UTF-8 (invalid continuation byte); {NOT_UTF8}")]),
]


def _check(tmp_path: Path, kind: str, content: str | bytes) -> list[tuple[str, int | None, str]]:
    path = tmp_path / "submission.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return [(v.rule, v.row, str(v)) for v in check_submission(path, IDS, kind)]


@pytest.mark.parametrize(("name", "content", "official", "expected"), CAPTION_CASES,
                         ids=[case[0] for case in CAPTION_CASES])
def test_a_caption_file_is_accepted_or_refused_as_the_official_checker_decides(tmp_path, name, content,
                                                                               official, expected):
    found = _check(tmp_path, "captions", content)
    assert found == expected
    assert (found == []) == (official == ACCEPT)


@pytest.mark.parametrize(("name", "content", "official", "expected"), CONCEPT_CASES,
                         ids=[case[0] for case in CONCEPT_CASES])
def test_a_concept_file_is_accepted_or_refused_as_the_official_checker_decides(tmp_path, name, content,
                                                                               official, expected):
    found = _check(tmp_path, "concepts", content)
    assert found == expected
    assert (found == []) == (official == ACCEPT)


@pytest.mark.parametrize(("name", "kind", "content", "official", "expected"), ENCODING_CASES,
                         ids=[case[0] for case in ENCODING_CASES])
def test_a_file_that_is_not_plain_utf8_is_refused_naming_why(tmp_path, name, kind, content, official,
                                                              expected):
    found = _check(tmp_path, kind, content)
    assert found == expected
    assert (found == []) == (official == ACCEPT)


def caption_2024(number: int) -> str:
    """A caption as the real 2024 file holds them: every third of the first 8,988 with a comma (quoted),
    and one in twenty of the first 9,440 with a space, a no-break space or an em space at one end."""
    text = f"CT of the chest showing a mass in segment {number}"
    if number % 3 == 0 and number < 3 * 2_996:
        text += ", with contrast"
    if number % 20 == 1 and number < 20 * 472:
        pad = [" ", "\u00a0", "\u2003"][number // 20 % 3]
        text = text + pad if number // 20 % 2 else pad + text
    return f'"{text}"' if "," in text else text


def test_a_file_shaped_as_the_real_2024_caption_submission_passes(tmp_path):
    """9,972 rows with CRLF line ends, 2,996 quoted captions and 472 captions with whitespace at an end: the
    official checker accepts this shape (the real 2024 file passes it)."""
    ids = [f"ImageCLEFmedical_Caption_2024_test_{i}" for i in range(1, 9_973)]
    rows = [f"{image_id},{caption_2024(number)}" for number, image_id in enumerate(ids)]
    fields = [row.split(",", 1)[1] for row in rows]
    assert sum(f.startswith('"') for f in fields) == 2_996
    assert sum(f.strip('"') != f.strip('"').strip() for f in fields) == 472
    path = tmp_path / "submission.csv"
    path.write_bytes(captions(*rows, end="\r\n").encode("utf-8"))
    assert check_submission(path, ids, "captions") == []


@pytest.mark.parametrize(("content", "says"), [
    ("ID\n1\n2\n1\n", "ids.csv row 4: duplicate id '1' (first on row 2); an ids file lists each image once"),
    ("image\n1\n", ("ids.csv row 1: the header ['image'] does not start with ID; an ids file is a CSV "
                    "whose first column is ID (the gold file will do)")),
    ("ID\n\n", "ids.csv: no ids below the header"),
])
def test_an_ids_file_that_cannot_give_the_order_is_an_error(tmp_path, content, says):
    path = tmp_path / "ids.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as info:
        read_ids(path)
    assert str(info.value) == f"{tmp_path}/{says}"


def test_an_ids_file_in_utf16_names_the_file_and_asks_for_utf8(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_bytes("ID\n1\n".encode("utf-16"))
    with pytest.raises(ValueError) as info:
        check_submission(path, path, "concepts")
    assert str(info.value) == (f"{path}: the file is UTF-16 (it starts with a UTF-16 byte-order mark), not "
                               "UTF-8; save it as UTF-8")
