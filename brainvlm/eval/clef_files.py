"""ImageCLEFmedical Caption submission files: writing them, and (re-exported) checking and reading them.

- Writers: ``ID,CUIs`` (CUIs joined by ``;``) and ``ID,Caption`` files in the order of the ids given
  (never sorted: ids are not zero-padded), UTF-8 without BOM, ``\\n`` line ends. They are stricter than the
  challenge: no empty caption, no line break in a caption, only CUIs.
- :func:`check_submission` (``eval.clef_check``): every violation of the format rules with its row (the
  header is row 1), decided as the official checkers decide (``brainvlm check-submission``);
  :func:`read_ids` (``eval.clef_csv``): the ids of an ids or gold file, in order.

Scoring a concept file as the challenge does is :mod:`brainvlm.eval.clef` (``docs/concepts.md``).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

from brainvlm.eval.clef_check import Violation, check_submission
from brainvlm.eval.clef_csv import HEADERS, MAX_CONCEPTS, MAX_LISTED, SUBMISSION_CUI, read_ids

__all__ = ["HEADERS", "MAX_CONCEPTS", "MAX_LISTED", "SUBMISSION_CUI", "Violation", "check_submission",
           "clean_caption", "concepts_field", "read_ids", "write_captions", "write_concepts"]


# ------------------------------------------------------------------------------------------- writing
def _check_ids(ids: Sequence[str], given: Collection[str], what: str) -> None:
    bad = [i for i in ids if not i or i != i.strip() or any(ch in i for ch in ',"\r\n')]
    if bad:
        raise ValueError(f"ids {bad[:MAX_LISTED]} are empty or hold whitespace at an end, a comma, a quote "
                         "or a line break; a submission id is the image file name without its extension")
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if repeated:
        raise ValueError(f"ids {repeated[:MAX_LISTED]} are listed more than once; give each image once")
    known = set(ids)
    missing, extra = [i for i in ids if i not in given], [i for i in given if i not in known]
    if missing or extra:
        raise ValueError(f"{len(missing)} ids have no {what} (first ten: {missing[:MAX_LISTED]}) and "
                         f"{len(extra)} {what} belong to no id ({extra[:MAX_LISTED]}); give every image a "
                         "value (a fallback for failed images), and only those images")


def concepts_field(image_id: str, cuis: Iterable[str]) -> str:
    """The CUIs field of one row: upper-cased, first occurrence kept, ``;``-joined (empty: no concepts)."""
    cleaned = list(dict.fromkeys(str(c).strip().upper() for c in cuis))
    bad = [c for c in cleaned if not SUBMISSION_CUI.fullmatch(c)]
    if bad:
        raise ValueError(f"image {image_id!r}: {bad[:MAX_LISTED]} are not CUIs (C followed by digits); map "
                         "names to CUIs first (brainvlm.data.concept_map) and leave unmapped names out")
    if len(cleaned) > MAX_CONCEPTS:
        raise ValueError(f"image {image_id!r}: {len(cleaned)} concepts; the challenge allows at most "
                         f"{MAX_CONCEPTS}: keep the most confident {MAX_CONCEPTS}")
    return ";".join(cleaned)


def clean_caption(text: str) -> str:
    """A caption on one line: line breaks and runs of whitespace collapsed to one space, ends stripped."""
    return " ".join(str(text).split())


def _write(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def write_concepts(path: str | Path, ids: Sequence[str], concepts: Mapping[str, Iterable[str]]) -> Path:
    """Write an ``ID,CUIs`` file: one row per id of ``ids``, in that order.

    Raises:
        ValueError: an id without concepts (give ``[]``), concepts of an unknown id, a token that is not
            a CUI, or more than 100 concepts for an image.
    """
    ids = [str(i) for i in ids]
    _check_ids(ids, concepts, "concepts")
    lines = [HEADERS["concepts"], *(f"{i},{concepts_field(i, concepts[i])}" for i in ids)]
    return _write(path, "\n".join(lines) + "\n")


def write_captions(path: str | Path, ids: Sequence[str], captions: Mapping[str, str]) -> Path:
    """Write an ``ID,Caption`` file: one row per id, in that order; captions on one line, quoted when
    they hold a comma or a quote.

    Raises:
        ValueError: an id without a caption, a caption of an unknown id, or an empty caption (give a
            fallback caption for images that failed).
    """
    ids = [str(i) for i in ids]
    _check_ids(ids, captions, "captions")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADERS["captions"].split(","))
    for image_id in ids:
        caption = clean_caption(captions[image_id])
        if not caption:
            raise ValueError(f"image {image_id!r}: the caption is empty; write a fallback caption")
        writer.writerow([image_id, caption])
    return _write(path, buffer.getvalue())
