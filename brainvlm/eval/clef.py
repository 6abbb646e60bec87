"""ImageCLEFmedical Caption concept scores as the challenge computes them, from files or from concept sets.

The primary score is the mean over images of the binary F1 between the gold and the predicted CUI sets,
upper-cased on both sides, with a row's tokens read raw: ``C1;C2;`` holds the empty token ``""``, which
counts as a (wrong) concept, and a gold row ``ID,`` holds one token, ``""``, so it scores 1 only against a
prediction row that is also empty. A row with an id and no comma holds no token. The secondary score is
the same over the manually validated gold, both sides restricted to an allow-list of CUIs
(:data:`MANUAL_CUIS` for 2025 and 2026), leaving out submitted images whose restricted gold is empty; an
image of the manual file that the gold lacks is never submitted, so it counts with F1 0, as the official
evaluator (``concept_detection/evaluator.py``) counts it.

The evaluator scores files that the official pre-check (``submission_check.py``) refuses, such as
lower-case CUIs or tokens that are not CUIs; :func:`evaluate_clef_files` scores them as the evaluator
does and warns, one line per row, where the pre-check would refuse.

Model output is parsed leniently elsewhere (``eval.answers.parse_concepts``); here a file is read exactly
as the challenge reads it (``docs/concepts.md``), and a parsed concept set is scored as the row
``eval.clef_files.write_concepts`` writes for it (:func:`set_tokens`). Writing and checking submission
files is :mod:`brainvlm.eval.clef_files`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from brainvlm.core.jsonio import BOM, write_json
from brainvlm.core.textfiles import NotUtf8Error, decode_utf8
from brainvlm.data.clef_tasks import MANUAL_CUIS
from brainvlm.eval.clef_check import check_submission
from brainvlm.eval.clef_csv import MAX_CONCEPTS, MAX_LISTED, SUBMISSION_CUI, Record, read_records


class SubmissionError(ValueError):
    """A concept file the challenge's evaluator would refuse; the message names the file and row."""


def concept_tokens(field: str | None) -> tuple[str, ...]:
    """A CUIs field's tokens as the challenge reads them: split on ``;``, each stripped, empty tokens kept.

    ``None`` (a row with no comma after the id) has no token; ``""`` (``ID,``) has one, the empty token.
    """
    return () if field is None else tuple(token.strip() for token in field.split(";"))


def image_f1(gold: Iterable[str], predicted: Iterable[str]) -> float:
    """Binary F1 between two token sets, upper-cased (the empty token is a concept like any other)."""
    gold_set, predicted_set = {t.upper() for t in gold}, {t.upper() for t in predicted}
    hits = len(gold_set & predicted_set)
    return 0.0 if hits == 0 else 2 * hits / (len(gold_set) + len(predicted_set))


def set_tokens(concepts: Iterable[str]) -> tuple[str, ...]:
    """The tokens the challenge reads from the row ``write_concepts`` writes for a parsed concept set.

    The set's CUIs, upper-cased and sorted (names that are not CUIs are left out, as the CUI file leaves
    unmapped names out); a set with no CUI (or an unparseable answer, written as the fallback ``ID,``) gives
    the empty token, so it scores 1 against a gold row without concepts.
    """
    cuis = sorted({str(c).strip().upper() for c in concepts} - {""})
    return concept_tokens(";".join(c for c in cuis if SUBMISSION_CUI.fullmatch(c)))


def _restricted(tokens: Iterable[str], allowed: Collection[str] | None) -> tuple[str, ...]:
    upper = tuple(t.upper() for t in tokens)
    return upper if allowed is None else tuple(t for t in upper if t in allowed)


def image_score(gold: Sequence[str], predicted: Sequence[str],
                allowed: Collection[str] | None = None) -> float:
    """One image's F1 of predicted against gold tokens; with ``allowed`` (upper-cased CUIs) both sides are
    restricted to them and an image whose restricted gold is empty is left out (NaN)."""
    truth = _restricted(gold, allowed)
    return image_f1(truth, _restricted(predicted, allowed)) if truth else math.nan


def score_concepts(gold: Mapping[str, Sequence[str]], predicted: Mapping[str, Sequence[str]],
                   allowed: Collection[str] | None = None) -> dict[str, float]:
    """Per-image F1 of predicted against gold tokens (:func:`concept_tokens`), as the challenge scores them.

    Args:
        gold: image id -> gold tokens; every gold image is scored (a missing prediction has no token).
        predicted: image id -> predicted tokens.
        allowed: restrict both sides to these CUIs (the secondary score); an image whose restricted gold
            is empty is left out (NaN), as an image whose gold has no token.

    Returns:
        Image id -> F1, in gold order. The score is their :func:`mean_score`; the per-image values are what
        a paired bootstrap resamples to compare two systems.
    """
    allowed = None if allowed is None else {c.strip().upper() for c in allowed}
    return {image_id: image_score(tokens, predicted.get(image_id, ()), allowed)
            for image_id, tokens in gold.items()}


def mean_score(f1: Iterable[float]) -> float | None:
    """The challenge's score: the mean of the per-image F1 of the images counted, NaN being left out
    (``None`` when no image counts)."""
    counted = [value for value in f1 if not math.isnan(value)]
    return sum(counted) / len(counted) if counted else None


def check_allowed_cuis(cuis: Iterable[str]) -> list[str]:
    """The allow-list of the secondary score, upper-cased, first occurrence kept.

    Raises:
        ValueError: an item that is not a CUI (C followed by digits), named; or an empty list.
    """
    cleaned = []
    for item in cuis:
        token = str(item).strip().upper()
        if not SUBMISSION_CUI.fullmatch(token):
            raise ValueError(f"allowed CUIs: {str(item)!r} is not a CUI (C followed by digits); give CUIs "
                             "such as C0040405,C0817096")
        cleaned.append(token)
    if not cleaned:
        raise ValueError("allowed CUIs: the list is empty; give at least one CUI")
    return list(dict.fromkeys(cleaned))


def parse_allowed(value: str) -> list[str]:
    """The allow-list of a command-line value: ``manual`` (:data:`MANUAL_CUIS`) or comma-separated CUIs.

    Raises:
        ValueError: an empty item (``,,`` or a comma at an end) or an item that is not a CUI, named.
    """
    if value.strip() == "manual":
        return list(MANUAL_CUIS)
    items = value.split(",")
    if any(not item.strip() for item in items):
        raise ValueError(f"allowed CUIs {value!r}: an empty item (',,' or a comma at an end); give CUIs "
                         "separated by single commas, or manual")
    return check_allowed_cuis(items)


def _records(path: Path) -> Iterable[Record]:
    """The records below the header of a concept file read as the challenge reads it (UTF-8)."""
    try:
        text = decode_utf8(path.read_bytes(), path).removeprefix(BOM)
    except NotUtf8Error as exc:
        raise SubmissionError(str(exc)) from None
    records, stop = read_records(text)
    header = records[0].fields if records else []
    if not header or header[0] != "ID":
        raise SubmissionError(f"{path} row 1: the header {header} does not start with ID; write ID,CUIs")
    for record in records[1:]:
        if not record.text.strip():
            raise SubmissionError(f"{path} row {record.row}: blank line; remove it")
        yield record
    if stop is not None:
        raise SubmissionError(f"{path} row {stop.row}: cannot be read as CSV ({stop.reason}); check its "
                              "quotes")


def _gold_tokens(path: Path, record: Record) -> tuple[str, ...]:
    """The tokens of a gold row; each must be a CUI (any case) or the empty token."""
    if len(record.fields) != 2:
        raise SubmissionError(f"{path} row {record.row}: {len(record.fields)} fields; a gold row is "
                              "ID,CUI;CUI (or ID, for an image without concepts)")
    tokens = concept_tokens(record.fields[1])
    bad = [t for t in tokens if t and not SUBMISSION_CUI.fullmatch(t.upper())]
    if bad:
        raise SubmissionError(f"{path} row {record.row}: {bad[0]!r} is not a CUI (C followed by digits); fix "
                              "the gold file (every token of a gold row is scored as a concept)")
    return tokens


def read_gold_rows(path: str | Path) -> dict[str, tuple[int, tuple[str, ...]]]:
    """Image id -> (row, gold tokens) of an ``ID,CUIs`` gold file (``ID,`` holds the empty token).

    Raises:
        SubmissionError: a file that is not UTF-8, a row without a comma or with more than two fields, a
            token that is not a CUI, a blank line or a repeated id; each names the file and row.
    """
    path, gold = Path(path), {}
    for record in _records(path):
        tokens = _gold_tokens(path, record)
        image_id = record.fields[0]
        if image_id in gold:
            raise SubmissionError(f"{path} row {record.row}: the id {image_id!r} repeats row "
                                  f"{gold[image_id][0]}; keep one row per image")
        gold[image_id] = (record.row, tokens)
    if not gold:
        raise SubmissionError(f"{path}: no rows below the header")
    return gold


def read_concept_gold(path: str | Path) -> dict[str, tuple[str, ...]]:
    """Image id -> gold tokens of an ``ID,CUIs`` gold file (``ID,`` holds the empty token); see
    :func:`read_gold_rows`."""
    return {image_id: tokens for image_id, (_, tokens) in read_gold_rows(path).items()}


def read_concept_submission(path: str | Path, ids: Collection[str]) -> dict[str, tuple[str, ...]]:
    """Image id -> raw tokens of an ``ID,CUIs`` submission, refused where the challenge's evaluator would.

    Raises:
        SubmissionError: a file that is not UTF-8, more than two fields, a blank line, an id not in ``ids``
            or repeated, more than 100 tokens, a token repeated, or ids of ``ids`` without a row.
            ``brainvlm check-submission`` lists every format problem at once.
    """
    path, predicted, known = Path(path), {}, set(ids)
    for record in _records(path):
        fields, where = record.fields, f"{path} row {record.row}"
        if len(fields) > 2:
            raise SubmissionError(f"{where}: {len(fields)} fields; a row is ID,CUI;CUI (check-submission "
                                  "lists every problem)")
        image_id, tokens = fields[0], concept_tokens(fields[1] if len(fields) == 2 else None)
        if image_id not in known:
            raise SubmissionError(f"{where}: the id {image_id!r} is not in the gold file")
        if image_id in predicted:
            raise SubmissionError(f"{where}: the id {image_id!r} repeats; keep one row per image")
        if len(tokens) > MAX_CONCEPTS:
            raise SubmissionError(f"{where}: {len(tokens)} concepts; at most {MAX_CONCEPTS} per image")
        if len(set(tokens)) != len(tokens):
            raise SubmissionError(f"{where}: a concept appears twice for {image_id!r}; keep each once")
        predicted[image_id] = tokens
    absent = [i for i in ids if i not in predicted]
    if absent:
        raise SubmissionError(f"{path}: {len(absent)} gold images have no row "
                              f"(first ten: {absent[:MAX_LISTED]})")
    return predicted


def clef_per_image(gold_path: str | Path, submission_path: str | Path, manual_path: str | Path | None = None,
                   allowed: Collection[str] = tuple(MANUAL_CUIS)) -> pd.DataFrame:
    """Per-image F1 of a concept submission: ``id``, ``primary`` and, with a manual gold file, ``secondary``
    (NaN for images left out of the secondary mean), in gold order; the rows a paired bootstrap resamples.

    Images of the manual file that the gold lacks come last, without a primary F1 and with a secondary F1
    of 0: the official evaluator counts every manual image in the secondary mean's denominator and scores
    only the submitted (gold) images.

    Raises:
        SubmissionError: a file the challenge's evaluator would refuse, or submission images that have no
            row in the manual gold file.
        ValueError: an allowed item that is not a CUI.
    """
    allowed = check_allowed_cuis(allowed)
    gold = read_concept_gold(gold_path)
    predicted = read_concept_submission(submission_path, list(gold))
    primary = score_concepts(gold, predicted)
    if manual_path is None:
        return pd.DataFrame({"id": list(primary), "primary": list(primary.values())})
    manual = read_concept_gold(manual_path)
    extra = [i for i in predicted if i not in manual]
    if extra:
        raise SubmissionError(f"{manual_path}: {len(extra)} images of the submission have no row (first ten: "
                              f"{extra[:MAX_LISTED]}); give the manual gold file of the same split")
    secondary = score_concepts(manual, predicted, allowed)
    secondary.update({image_id: 0.0 for image_id in manual if image_id not in gold})
    table = pd.DataFrame({"id": list(dict.fromkeys([*gold, *manual]))})  # gold order, never sorted
    return table.assign(primary=table["id"].map(primary), secondary=table["id"].map(secondary))


def precheck_warnings(submission_path: str | Path, ids: Sequence[str]) -> list[str]:
    """Where the official pre-check (``submission_check.py``) would refuse a concept file the evaluator
    scores (lower-case CUIs, tokens that are not CUIs, ``;;``, spaces around the field, ...): one line per
    violation, the first ten, then one line with the count."""
    violations = check_submission(submission_path, ids, "concepts")
    if not violations:
        return []
    lines = [f"{submission_path} {v}" for v in violations[:MAX_LISTED]]
    total = (f"{submission_path}: the official pre-check would refuse this file ({len(violations)} "
             "violations); the scores are what the evaluator gives it (brainvlm check-submission lists every "
             "violation)")
    return [*lines, total]


def manual_only_warnings(gold_path: str | Path, manual_path: str | Path, gold: Collection[str]) -> list[str]:
    """Rows of the manual gold file whose id the gold file lacks: one line each (the first ten)."""
    rows = read_gold_rows(manual_path)
    extra = [(image_id, row) for image_id, (row, _) in rows.items() if image_id not in gold]
    lines = [f"{manual_path} row {row}: the id {image_id!r} is not in the gold file {gold_path}; the "
             "official evaluator counts it in the secondary mean with F1 0"
             for image_id, row in extra[:MAX_LISTED]]
    more = len(extra) - MAX_LISTED
    return lines + ([f"{manual_path}: {more} more ids are not in the gold file"] if more > 0 else [])


def evaluate_clef_files(gold_path: str | Path, submission_path: str | Path,
                        manual_path: str | Path | None = None, allowed: Collection[str] = tuple(MANUAL_CUIS),
                        out: str | Path | None = None, per_image_out: str | Path | None = None) -> dict:
    """The primary (and, with ``manual_path``, secondary) score of a concept submission, without a model.

    Args:
        allowed: the CUIs of the secondary score (default: the 2025 and 2026 list, :data:`MANUAL_CUIS`).
        out: write the scores here as JSON; per_image_out: write :func:`clef_per_image` here as CSV.

    Returns:
        ``primary`` and ``n_images``; with a manual gold file also ``secondary`` (``None`` when no image
        counts), ``n_images_secondary`` (images counted), ``n_manual_only`` (manual images the gold lacks,
        counted with F1 0) and ``allowed_cuis``; ``warnings``: one line per row where the official
        pre-check would refuse the submission, and per manual row whose id the gold lacks.
    """
    per_image = clef_per_image(gold_path, submission_path, manual_path, allowed)
    gold_ids = list(per_image.loc[per_image["primary"].notna(), "id"])
    result = {"gold": str(gold_path), "submission": str(submission_path),
              "primary": mean_score(per_image["primary"]), "n_images": len(gold_ids)}
    warnings = precheck_warnings(submission_path, list(per_image["id"]))
    if manual_path is not None:
        result.update(manual=str(manual_path), secondary=mean_score(per_image["secondary"]),
                      n_images_secondary=int(per_image["secondary"].notna().sum()),
                      n_manual_only=len(per_image) - len(gold_ids),
                      allowed_cuis=sorted(check_allowed_cuis(allowed)))
        warnings += manual_only_warnings(gold_path, manual_path, set(gold_ids))
    result["warnings"] = warnings
    if out is not None:
        write_json(result, out)
    if per_image_out is not None:
        Path(per_image_out).parent.mkdir(parents=True, exist_ok=True)
        per_image.to_csv(per_image_out, index=False, lineterminator="\n")
    return result
