"""Read a phenotype table and an image root; turn them into the canonical cohort of one task.

Two kinds of problems are kept apart:

* **structural** problems stop the run with a :class:`CohortError` naming the file, the line and what to
  do: a missing file, an empty table, no id column, duplicate ids, an unknown session, a category outside
  the label mapping, an absent target or group column, an image path that leaves the image root;
* **row-level** problems exclude one subject and are returned as an exclusions table (reason codes in
  ``REASONS``), so every table row ends up either in the cohort or in the exclusions. ``strict=True``
  turns any exclusion into an error.

The cohort has one row per subject, sorted by ``subject``, with the columns ``COHORT_COLUMNS``; ``row`` is
the 1-based line of the subject's row in the table file (the header is line 1).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import posixpath
import re
import string
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from brainvlm.data.image_paths import leaves_lexically, leaves_root
from brainvlm.data.volumes import MODALITIES as VOLUME_MODALITIES
from brainvlm.data.volumes import VolumeError, load_volume

ROW_COL = "row"  # read_table adds the file line number of each row under this name
COHORT_COLUMNS = ("subject", "group", "target", "image", "row", "session")
EXCLUSION_COLUMNS = ("subject", "row", "reason", "detail")
REASONS = ("missing_target", "non_numeric_target", "out_of_range", "missing_group", "missing_image",
           "unreadable_image", "wrong_dimensions", "non_finite_voxels", "constant_image")
MISSING_VALUES = frozenset({"", "n/a", "na", "nan", "none", "null"})  # compared after strip + casefold
TASK_TYPES = ("categorical", "numerical")
CHECK_IMAGES = ("exists", "readable", "none")
DELIMITERS = {".tsv": "\t", ".csv": ","}
NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")  # plain decimal: no "1_000", no "12,5"
MAX_LISTED = 10  # how many offending rows an error message lists
SUSPECT_ROBUST_SD = 10.0  # values this many robust SDs (1.4826 x MAD) from the median are listed as suspect


class CohortError(ValueError):
    """A structural problem with a phenotype table or image tree; the message says where and what to do."""


# --------------------------------------------------------------------------------------------- reading
def read_table(path: str | Path, id_col: str = "participant_id", session_col: str | None = None,
               session: str | None = None, sep: str | None = None) -> pd.DataFrame:
    """Read a CSV/TSV phenotype table with every value kept as the string written in the file.

    Args:
        path: table file; ``.tsv`` is tab-separated, ``.csv`` comma-separated, anything else is sniffed
            (a trailing ``.gz`` is decompressed).
        id_col: column holding the subject id.
        session_col: column holding the session (long-format tables, e.g. ABCD ``eventname``).
        session: keep only the rows of this session.
        sep: delimiter, overriding the extension.

    Returns:
        The table's columns as strings (ids stripped) plus ``row``: the 1-based line of each row in the
        file. ``attrs`` records ``path``, ``id_col`` and ``session_col`` for :func:`build_cohort`.
    """
    path = Path(path)
    if not path.is_file():
        raise CohortError(f"{path}: phenotype table not found; check the path (cohort_table)")
    header, records = _read_records(path, sep)
    if not records:
        raise CohortError(f"{path}: empty table (a header and no data rows); the table needs one row per subject")
    _require_columns(path, header, {"id column": id_col, "session column": session_col})
    if ROW_COL in header:
        raise CohortError(f"{path}: a column is named '{ROW_COL}', which brainvlm uses for line numbers; "
                          "rename that column in the file")
    table = pd.DataFrame([fields for _, fields in records], columns=header, dtype=str)
    table[id_col] = table[id_col].str.strip()
    table.insert(0, ROW_COL, [line for line, _ in records])
    table = _select_session(table, path, session_col, session)
    _check_ids(table, path, id_col, session_col)
    table.attrs.update({"path": str(path), "id_col": id_col, "session_col": session_col})
    return table.reset_index(drop=True)


def _read_records(path: Path, sep: str | None) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header names and ``(line number, fields)`` per data row, blank lines skipped."""
    try:
        text = _open_text(path).read()
    except UnicodeDecodeError as err:
        raise CohortError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save the table as "
                          "UTF-8 CSV/TSV") from err
    delimiter = sep or _delimiter(path, text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    records = []
    start = 1
    for fields in reader:
        line, start = start, reader.line_num + 1  # a quoted field may span lines: keep the first one
        if not any(f.strip() for f in fields):
            continue
        if header is None:
            header = _header(path, fields)
            _check_delimiter(path, header, delimiter)
        elif len(fields) != len(header):
            raise CohortError(f"{path}, line {line}: {len(fields)} fields but the header has {len(header)}; "
                              f"fix the row or pass the right delimiter (sep=, now {delimiter!r})")
        else:
            records.append((line, fields))
    if header is None:
        raise CohortError(f"{path}: empty file (no header); the table needs a header and one row per subject")
    return header, records


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def _delimiter(path: Path, text: str) -> str:
    suffix = Path(path.stem).suffix if path.suffix == ".gz" else path.suffix
    if suffix.lower() in DELIMITERS:
        return DELIMITERS[suffix.lower()]
    try:
        return csv.Sniffer().sniff(text[:65536], delimiters=",\t;|").delimiter
    except csv.Error as err:
        raise CohortError(f"{path}: cannot tell the delimiter; pass sep= (e.g. ',' or '\\t')") from err


def _check_delimiter(path: Path, header: list[str], delimiter: str) -> None:
    """A one-column header that holds another delimiter means the file was read with the wrong one."""
    if len(header) != 1:
        return
    found = [d for d in (";", "\t", ",", "|") if d != delimiter and d in header[0]]
    if found:
        raise CohortError(f"{path}: the header is one column {header[0][:60]!r} holding {found[0]!r}: the file is "
                          f"{found[0]!r}-separated, not {delimiter!r}; save it with {delimiter!r} or set "
                          f"table_sep: {found[0]!r}")


def _header(path: Path, fields: list[str]) -> list[str]:
    """Column names stripped; an empty name becomes ``unnamed_<position>`` (pandas index columns)."""
    names = [f.strip() or f"unnamed_{i + 1}" for i, f in enumerate(fields)]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise CohortError(f"{path}: repeated column names {repeated}; make the header names unique")
    return names


def _require_columns(path: Path | str, columns: Iterable[str], wanted: Mapping[str, str | None]) -> None:
    columns = [c for c in columns if c != ROW_COL]
    for role, name in wanted.items():
        if name is not None and name not in columns:
            raise CohortError(f"{path}: {role} '{name}' not found; columns present: {', '.join(columns)}")


def _select_session(table: pd.DataFrame, path: Path, session_col: str | None,
                    session: str | None) -> pd.DataFrame:
    if session is None:
        return table
    if session_col is None:
        raise CohortError(f"{path}: session '{session}' asked for without session_col; name the column "
                          "that holds the session (e.g. session_col='eventname')")
    values = table[session_col].str.strip()
    if not (values == str(session).strip()).any():
        present = sorted(set(values))
        raise CohortError(f"{path}: session '{session}' not found in column '{session_col}'; sessions "
                          f"present: {', '.join(present)}")
    return table[values == str(session).strip()]


def _check_ids(table: pd.DataFrame, path: Path | str, id_col: str, session_col: str | None) -> None:
    """Every row has an id, and no id appears twice."""
    empty = table.loc[table[id_col] == "", ROW_COL].tolist()
    if empty:
        raise CohortError(f"{path}: empty {id_col} on lines {_first(empty)}; every row needs a subject id")
    counts = table[id_col].value_counts()
    repeated = sorted(counts[counts > 1].index)
    if not repeated:
        return
    listed = "; ".join(f"{s} (lines {', '.join(map(str, table.loc[table[id_col] == s, ROW_COL]))})"
                       for s in repeated[:MAX_LISTED])
    hint = (f"pick one session with session= (column '{session_col}')" if session_col
            else "keep one row per subject, or pass session_col and session for a long-format table")
    raise CohortError(f"{path}: duplicate {id_col} values ({len(repeated)} ids): {listed}; {hint}")


def _first(values: list, n: int = MAX_LISTED) -> str:
    shown = ", ".join(map(str, values[:n]))
    return shown + (f" (and {len(values) - n} more)" if len(values) > n else "")


# -------------------------------------------------------------------------------------------- building
def build_cohort(table: pd.DataFrame, image_root: str | Path, target_col: str, task_type: str,
                 image_pattern: str = "{subject}/anat/{subject}_T1w.nii.gz",
                 labels: Mapping[str, Iterable[str]] | None = None, group_col: str | None = None,
                 strict: bool = False, check_images: str = "exists", table_path: str | Path | None = None,
                 id_col: str | None = None, session_col: str | None = None, modality: str = "sMRI",
                 valid_range: tuple[float, float] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Turn a table from :func:`read_table` into the canonical cohort of one task and its exclusions.

    Args:
        table: rows of the phenotype table (strings), with the ``row`` column of :func:`read_table`.
        image_root: folder that ``image_pattern`` paths are relative to.
        target_col: column with the target.
        task_type: ``"categorical"`` (target = canonical label) or ``"numerical"`` (target = float).
        image_pattern: ``str.format`` pattern of the image path; fields: ``subject``, ``session`` and any
            column of the table. The path may not leave ``image_root``.
        labels: canonical label -> accepted raw values, matched after strip + casefold, e.g.
            ``{"male": ["M"], "female": ["F"]}``. A value outside the mapping is an error. ``None`` takes
            the distinct raw values (stripped) as labels as they are, so ``M`` and ``m`` stay two labels.
        group_col: column of the group subjects share (e.g. ``family_id``); ``None``: each subject alone.
        strict: raise on any exclusion instead of returning it.
        check_images: ``"exists"`` (the file is there: a ``stat``, microseconds per subject),
            ``"readable"`` (every voxel is read and checked as ``data.volumes.load_volume`` does: dimensions
            for the modality, finite and not constant; as long as loading the volume once, about 10 ms for
            a 64³ ``.nii.gz`` and 0.1-0.5 s for a 1 mm T1) or ``"none"``.
        table_path: file named in messages; defaults to the path :func:`read_table` recorded.
        id_col, session_col: default to what :func:`read_table` recorded (else ``participant_id``/none).
        modality: the images' modality, for the ``readable`` check (a 4D volume is only valid for fMRI).
        valid_range: ``(lo, hi)`` of a numerical target; rows outside are excluded as ``out_of_range``.

    Returns:
        ``(cohort, exclusions)``: cohort columns ``COHORT_COLUMNS`` sorted by subject; exclusions columns
        ``EXCLUSION_COLUMNS`` sorted by row, reasons from ``REASONS``.
    """
    where = table_path or table.attrs.get("path", "<table>")
    id_col = id_col or table.attrs.get("id_col", "participant_id")
    session_col = session_col or table.attrs.get("session_col")
    _check_arguments(where, task_type, check_images)
    if check_images != "none" and not Path(image_root).is_dir():
        raise CohortError(f"{where}: image_root {str(image_root)!r} is not a folder; set image_root to the folder "
                          "that image_pattern paths are relative to")
    _require_columns(where, table.columns, {"id column": id_col, "target column": target_col,
                                            "group column": group_col, "session column": session_col})
    table = _with_rows(table, id_col)
    _check_ids(table, where, id_col, None)
    targets = _targets(table, where, target_col, task_type, labels, id_col)
    if valid_range is not None:
        targets = [_in_range(t, valid_range, target_col) for t in targets]
    columns = {"subject": id_col, "group": group_col or id_col, "session": session_col}
    kept, excluded = [], []
    for record, (target, problem) in zip(_records(table, where, image_pattern, columns), targets):
        if problem is None and _is_missing(record["group"]):
            problem = ("missing_group", f"{group_col} is {record['group']!r}")
        if problem is None:
            problem = _image_problem(Path(image_root), record, check_images, modality, where)
        if problem is None:
            kept.append({**record, "target": target})
        else:
            excluded.append({"subject": record["subject"], ROW_COL: record[ROW_COL], "reason": problem[0],
                             "detail": problem[1]})
    cohort = pd.DataFrame(kept, columns=list(COHORT_COLUMNS)).sort_values("subject", ignore_index=True)
    exclusions = pd.DataFrame(excluded, columns=list(EXCLUSION_COLUMNS)).sort_values(ROW_COL, ignore_index=True)
    if task_type == "numerical":
        cohort["target"] = cohort["target"].astype(float)
    if strict and len(exclusions):
        raise CohortError(f"{where}: strict mode and {len(exclusions)} rows excluded "
                          f"({_count_text(exclusions)}); first: {_rows_text(exclusions)}; fix the rows or "
                          "set strict: false to exclude them")
    return cohort, exclusions


def _check_arguments(where: object, task_type: str, check_images: str) -> None:
    if task_type not in TASK_TYPES:
        raise CohortError(f"{where}: task_type {task_type!r} unknown; use one of {', '.join(TASK_TYPES)}")
    if check_images not in CHECK_IMAGES:
        raise CohortError(f"{where}: check_images {check_images!r} unknown; use one of {', '.join(CHECK_IMAGES)}")


def _with_rows(table: pd.DataFrame, id_col: str) -> pd.DataFrame:
    """Ids as stripped strings; a table built by hand has no ``row``: number its rows as lines after a header."""
    table = table.assign(**{id_col: [str(v).strip() for v in table[id_col]]})
    if ROW_COL in table.columns:
        return table
    return table.assign(**{ROW_COL: range(2, len(table) + 2)})


def _is_missing(value: object) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return str(value).strip().casefold() in MISSING_VALUES


def _targets(table: pd.DataFrame, where: object, target_col: str, task_type: str,
             labels: Mapping[str, Iterable[str]] | None, id_col: str) -> list[tuple[object, tuple[str, str] | None]]:
    """Per row ``(target, problem)``: the canonical target, or ``(reason, detail)`` of a row exclusion."""
    raw_values = [None if v is None else str(v) for v in table[target_col].tolist()]
    if task_type == "numerical":
        return [_number(v, target_col) for v in raw_values]
    lookup = _label_lookup(where, labels) if labels is not None else None
    results, outside = [], []
    for raw, line, subject in zip(raw_values, table[ROW_COL].tolist(), table[id_col].tolist()):
        if _is_missing(raw):
            results.append((None, ("missing_target", f"{target_col} is {raw!r}")))
        elif lookup is None:
            results.append((raw.strip(), None))
        elif raw.strip().casefold() in lookup:
            results.append((lookup[raw.strip().casefold()], None))
        else:
            outside.append(f"line {line} ({subject}): {raw!r}")
            results.append((None, None))
    if outside:
        accepted = "; ".join(f"{label}: {', '.join(map(repr, map(str, values)))}" for label, values in labels.items())
        raise CohortError(f"{where}: {len(outside)} {target_col} values outside the label mapping "
                          f"({_first(outside)}); accepted values: {accepted}; add them to the task's labels "
                          "or fix the table")
    return results


def _label_lookup(where: object, labels: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """Raw value (stripped, casefolded) -> canonical label; one raw value may not serve two labels."""
    lookup: dict[str, str] = {}
    for label, values in labels.items():
        for value in [values] if isinstance(values, str) else values:
            key = str(value).strip().casefold()
            if lookup.get(key, label) != label:
                raise CohortError(f"{where}: raw value {value!r} is listed for labels '{lookup[key]}' and "
                                  f"'{label}'; give each raw value one label")
            lookup[key] = str(label)
    if not lookup:
        raise CohortError(f"{where}: the label mapping is empty; give canonical label -> raw values")
    return lookup


def _in_range(target: tuple[object, tuple[str, str] | None], valid_range: tuple[float, float],
              target_col: str) -> tuple[object, tuple[str, str] | None]:
    value, problem = target
    lo, hi = valid_range
    if problem is None and not lo <= value <= hi:
        return None, ("out_of_range", f"{target_col} is {value:g}, outside valid_range [{lo:g}, {hi:g}]")
    return target


def _number(raw: str | None, target_col: str) -> tuple[float | None, tuple[str, str] | None]:
    if _is_missing(raw):
        return None, ("missing_target", f"{target_col} is {raw!r}")
    if not NUMBER.fullmatch(raw.strip()):
        return None, ("non_numeric_target", f"{target_col} is {raw!r}, not a decimal number")
    value = float(raw.strip())
    if not math.isfinite(value):  # "1e999" overflows to inf
        return None, ("non_numeric_target", f"{target_col} is {raw!r}, not a finite number")
    return value, None


def _records(table: pd.DataFrame, where: object, pattern: str,
             columns: Mapping[str, str | None]) -> Iterable[dict[str, object]]:
    """Per row: ``subject``, ``group``, ``session``, ``row`` and ``image`` (relative, POSIX separators)."""
    names = sorted({name for _, name, _, _ in string.Formatter().parse(pattern) if name})
    unknown = [n for n in names if n not in ("subject", "session") and n not in table.columns]
    if unknown:
        raise CohortError(f"{where}: image_pattern {pattern!r} uses {unknown}, which are neither 'subject', "
                          f"'session' nor a column; columns: {', '.join(c for c in table.columns if c != ROW_COL)}")
    used = sorted({c for c in [*columns.values(), *names, ROW_COL] if c in table.columns})
    for values in table[used].itertuples(index=False, name=None):
        fields = {c: ("" if v is None else str(v).strip()) for c, v in zip(used, values)}
        record = {key: (fields[col] if col else None) for key, col in columns.items()}
        record[ROW_COL] = int(fields[ROW_COL])
        image = pattern.format(**{**fields, "subject": record["subject"], "session": record["session"] or ""})
        record["image"] = _inside_root(where, image, pattern, record)
        yield record


def _inside_root(where: object, image: str, pattern: str, record: Mapping[str, object]) -> str:
    """The normalised relative path; an error if it would leave the image root."""
    text = image.replace("\\", "/")
    normal = posixpath.normpath(text)
    if leaves_lexically(text):
        raise CohortError(f"{where}, line {record[ROW_COL]}: image path {text!r} of subject {record['subject']!r} "
                          f"leaves the image root; image_pattern {pattern!r} must give paths inside image_root")
    return normal


def _image_problem(root: Path, record: Mapping[str, object], check_images: str, modality: str,
                   where: object) -> tuple[str, str] | None:
    if check_images == "none":
        return None
    image = str(record["image"])
    path = root / image
    if not path.is_file():
        return "missing_image", f"{image} not found under the image root"
    if leaves_root(root, image):
        raise CohortError(f"{where}, line {record[ROW_COL]}: image {image!r} of subject {record['subject']!r} is "
                          f"a symlink that resolves outside the image root ({path.resolve()}); images must lie "
                          "inside image_root: copy the file in or point image_root at its folder")
    if check_images == "readable":
        try:
            load_volume(path, modality if modality in VOLUME_MODALITIES else "sMRI")
        except VolumeError as err:
            return err.reason, str(err).replace(str(path), image, 1)
    return None


def suspect_values(cohort: pd.DataFrame, threshold: float = SUSPECT_ROBUST_SD) -> pd.DataFrame:
    """Numerical targets more than ``threshold`` robust SDs from the median (sentinel codes such as 99999).

    The robust SD is 1.4826 x the median absolute deviation. They stay in the cohort (a ``valid_range``
    excludes them); this table is for a person to look at.

    Returns:
        ``subject``, ``row``, ``target`` and ``robust_z`` of each suspect value, largest ``|robust_z|`` first.
    """
    values = pd.to_numeric(cohort["target"], errors="coerce").astype(float)
    median = float(values.median()) if len(values) else math.nan
    spread = 1.4826 * float((values - median).abs().median()) if len(values) else math.nan
    if not spread or math.isnan(spread):
        return pd.DataFrame(columns=["subject", ROW_COL, "target", "robust_z"])
    z = (values - median) / spread
    table = cohort.assign(robust_z=z)[z.abs() > threshold][["subject", ROW_COL, "target", "robust_z"]]
    return table.reindex(table["robust_z"].abs().sort_values(ascending=False).index).reset_index(drop=True)


# ------------------------------------------------------------------------------------------- reporting
def exclusion_summary(exclusions: pd.DataFrame) -> pd.DataFrame:
    """Excluded rows per reason: columns ``reason``, ``count``, ``rows`` (the first line numbers)."""
    order = {reason: i for i, reason in enumerate(REASONS)}
    rows = []
    for reason, part in exclusions.groupby("reason", sort=False):
        rows.append({"reason": reason, "count": len(part), "rows": _first(sorted(part[ROW_COL].tolist()), 5)})
    rows.sort(key=lambda r: (order.get(r["reason"], len(order)), r["reason"]))
    return pd.DataFrame(rows, columns=["reason", "count", "rows"])


def _count_text(exclusions: pd.DataFrame) -> str:
    summary = exclusion_summary(exclusions)
    return ", ".join(f"{r.reason}: {r.count}" for r in summary.itertuples())


def _rows_text(exclusions: pd.DataFrame) -> str:
    shown = [f"line {r.row} {r.subject} {r.reason} ({r.detail})" for r in exclusions.head(MAX_LISTED).itertuples()]
    return "; ".join(shown)
