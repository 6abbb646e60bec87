"""The one JSON writer and reader: deterministic bytes, strict numbers, one byte-order-mark policy."""

import math

import numpy as np
import pytest

from brainvlm.core import jsonio
from brainvlm.core.jsonio import JsonError


def test_jsonl_is_compact_sorted_utf8_with_trailing_newline(tmp_path):
    sample = {"id": "x", "metadata": {"target": "männlich", "split": "train"}, "task": "vqa"}
    path = jsonio.write_jsonl([sample, sample], tmp_path / "deep" / "train.jsonl")
    raw = path.read_bytes()
    assert raw == ('{"id":"x","metadata":{"split":"train","target":"männlich"},"task":"vqa"}\n' * 2).encode()
    assert jsonio.read_jsonl(path) == [sample, sample]
    path.write_text('{"id": 1}\n\n{"id": \n')
    with pytest.raises(JsonError, match=r"train\.jsonl:3: invalid JSON"):
        jsonio.read_jsonl(path)


def test_json_files_are_indented_sorted_and_numpy_scalars_are_numbers(tmp_path):
    path = jsonio.write_json({"b": np.float32(0.5), "a": [np.int64(2)], "c": tmp_path / "x"}, tmp_path / "m.json")
    assert path.read_text(encoding="utf-8") == f'{{\n  "a": [\n    2\n  ],\n  "b": 0.5,\n  "c": "{(tmp_path / "x").as_posix()}"\n}}\n'
    assert jsonio.read_json(path)["b"] == 0.5


@pytest.mark.parametrize("bad, where", [(math.nan, "$.metrics.mae"), (math.inf, "$.metrics.mae"),
                                        (np.float64("nan"), "$.metrics.mae")])
def test_non_finite_numbers_are_refused_with_their_json_path(tmp_path, bad, where):
    with pytest.raises(ValueError, match=rf"^\{where}: NaN or infinity is not valid JSON"):
        jsonio.write_json({"metrics": {"mae": bad}}, tmp_path / "m.json")
    with pytest.raises(ValueError, match=r"^row 2: \$\.x: NaN"):
        jsonio.write_jsonl([{"x": 1.0}, {"x": bad}], tmp_path / "r.jsonl")
    assert not (tmp_path / "m.json").exists()


def test_a_leading_byte_order_mark_is_dropped_by_every_reader(tmp_path):
    (tmp_path / "a.jsonl").write_bytes('\ufeff{"id": "x"}\n'.encode())
    (tmp_path / "a.json").write_bytes('\ufeff{"id": "x"}'.encode())
    assert jsonio.read_jsonl(tmp_path / "a.jsonl") == [{"id": "x"}]
    assert jsonio.read_json(tmp_path / "a.json") == {"id": "x"}
    assert not jsonio.jsonl_bytes([{"id": "x"}]).startswith(b"\xef\xbb\xbf")


def test_unicode_line_separators_inside_strings_stay_in_their_line(tmp_path):
    rows = [{"text": "a\u2028b\u0085c"}, {"text": "d"}]
    path = jsonio.write_jsonl(rows, tmp_path / "u.jsonl")
    assert [n for n, _ in jsonio.read_jsonl_numbered(path)] == [1, 2]
    assert jsonio.read_jsonl(path) == rows


def test_append_adds_whole_lines(tmp_path):
    path = tmp_path / "p.jsonl"
    jsonio.append_jsonl(path, [{"id": "a", "prediction": "x"}])
    jsonio.append_jsonl(path, [{"id": "b", "prediction": "y"}, {"id": "c", "prediction": "z"}])
    assert path.read_bytes() == jsonio.jsonl_bytes([{"id": k, "prediction": v} for k, v in zip("abc", "xyz")])
