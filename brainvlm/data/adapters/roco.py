"""ROCOv2 / ImageCLEFmedical Caption files -> canonical ``concepts`` and ``caption`` samples.

The layout, one folder per data set (``split`` is the files' prefix: ``train``, ``valid``, ``test``)::

    {split}_captions.csv          ID,Caption
    {split}_concepts.csv          ID,CUIs         CUIs joined by ';'; an image without concepts is 'ID,'
    {split}_concepts_manual.csv   ID,CUIs         optional: the manually validated concepts (secondary score)
    cui_mapping.csv               CUI,Canonical name    optional; every gold CUI must be in it when present
    {split}/{ID}.jpg              the images (.jpeg and .png are found too)

A concepts sample asks :func:`~brainvlm.data.clef_tasks.concepts_prompt` and answers ``Concepts: C...; C...``
(or the concepts' names from ``cui_mapping.csv``), which ``eval.answers.parse_concepts`` reads back; a
caption sample asks :func:`~brainvlm.data.clef_tasks.caption_prompt` and answers the gold caption.
Metadata: ``split`` (``valid`` becomes ``val``), ``image_id`` (the challenge id, for submission files),
``dataset`` and, for concepts, ``manual_cuis`` where the manual file has the image (``[]`` for ``ID,``).

A challenge test set has no gold: :func:`image_folder_samples` reads an image folder and an ``ids.csv``
(first column ``ID``, the official order) and writes a placeholder answer, flagged
``metadata.no_reference`` (scoring refuses such samples).

Every problem is an :class:`~brainvlm.data.adapters.AdapterError` naming the file and line: a missing
column, a duplicate id, a malformed CUI, a CUI missing from ``cui_mapping.csv``, a missing image.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from brainvlm.data.adapters import AdapterError
from brainvlm.data.adapters.images import check_image_path
from brainvlm.data.clef_tasks import CONCEPTS_MARKER, caption_prompt, concepts_answer, concepts_prompt
from brainvlm.data.umls import ConceptTable, ConceptTableError, load_concept_table

SPLIT_NAMES = {"train": "train", "valid": "val", "validation": "val", "val": "val", "dev": "val",
               "test": "test"}
TASKS = ("concepts", "caption")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
GOLD_CUI = re.compile(r"C\d{7}")
CUI_MAPPING = "cui_mapping.csv"
CONCEPT_TARGETS = ("cuis", "names")
NO_REFERENCE = {"concepts": CONCEPTS_MARKER, "caption": "(no reference caption)"}
MAX_LISTED = 10


@dataclass(frozen=True)
class PromptOptions:
    """How samples ask and answer: the prompt's and the caption's language, and the concepts' answer.

    Attributes:
        prompt_language: ``en`` or ``es`` (the seed's Spanish prompting).
        caption_language: the language the caption prompt asks for (the gold's: ``en`` for ImageCLEF).
        concept_target: ``cuis`` (``Concepts: C0040405; C0817096``) or ``names`` (canonical names from
            ``cui_mapping.csv``, the seed's Format A; map them back with ``data.concept_map``).
        modality: the image parts' modality (``other``: ROCOv2 mixes modalities; only its concepts say
            which).
    """

    prompt_language: str = "en"
    caption_language: str = "en"
    concept_target: str = "cuis"
    modality: str = "other"

    def __post_init__(self) -> None:
        if self.concept_target not in CONCEPT_TARGETS:
            raise AdapterError(f"concept_target={self.concept_target!r}; use one of {list(CONCEPT_TARGETS)}")
        caption_prompt(self.prompt_language, self.caption_language)  # refuses an unknown language


# ------------------------------------------------------------------------------------------ reading
def _records(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line, {column: value})`` of each record below the header; blank lines skipped.

    Raises:
        AdapterError: a missing file, a header without one of ``columns``, a record with another number of
            fields than the header.
    """
    if not path.is_file():
        raise AdapterError(f"{path}: no such file; the ROCOv2 layout has {path.name} beside {CUI_MAPPING}")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        missing = [c for c in columns if c not in header]
        if missing:
            raise AdapterError(f"{path}:1: no column {missing} in the header {header}; the file needs the "
                               f"columns {','.join(columns)}")
        done = reader.line_num
        for fields in reader:
            line, done = done + 1, reader.line_num
            if not fields:
                continue
            if len(fields) != len(header):
                raise AdapterError(f"{path}:{line}: {len(fields)} fields for the {len(header)} columns "
                                   f"{header}; quote a value that holds a comma")
            yield line, dict(zip(header, fields))


def _by_id(path: Path, columns: Sequence[str]) -> dict[str, tuple[int, dict[str, str]]]:
    """Image id -> ``(line, record)``, in file order; an empty or repeated id is an error."""
    found: dict[str, tuple[int, dict[str, str]]] = {}
    for line, record in _records(path, columns):
        image_id = record["ID"].strip()
        if not image_id:
            raise AdapterError(f"{path}:{line}: the ID is empty; every row names its image")
        if image_id in found:
            raise AdapterError(f"{path}:{line}: the id {image_id!r} repeats line {found[image_id][0]}; keep "
                               "one row per image")
        found[image_id] = (line, record)
    return found


def id_lines(path: str | Path, columns: Sequence[str] = ("ID",)) -> dict[str, int]:
    """Image id -> the line of its row in a ROCOv2 CSV file (the header is line 1)."""
    return {image_id: line for image_id, (line, _) in _by_id(Path(path), columns).items()}


def parse_cuis(field: str, where: str) -> list[str]:
    """The CUIs of a gold ``CUIs`` field (``C`` and seven digits, ``;``-separated; empty: none), in order.

    Raises:
        AdapterError: a malformed or repeated CUI, or an empty token (``C1;`` or ``;;``), naming ``where``.
    """
    if not field.strip():
        return []
    cuis = [token.strip() for token in field.split(";")]
    bad = [c for c in cuis if not GOLD_CUI.fullmatch(c)]
    if bad:
        raise AdapterError(f"{where}: malformed CUI {bad[:MAX_LISTED]} in {field!r}; a CUI is C followed by "
                           "seven digits, CUIs are separated by ';' with no empty one")
    repeated = sorted({c for c in cuis if cuis.count(c) > 1})
    if repeated:
        raise AdapterError(f"{where}: CUI {repeated} listed twice in {field!r}; list each once")
    return cuis


def _image_path(root: Path, folder: str, image_id: str) -> str | None:
    """``folder/ID.jpg`` (or ``.jpeg``, ``.png``) relative to ``root`` when the file exists, else None."""
    for suffix in IMAGE_SUFFIXES:
        relative = f"{folder}/{image_id}{suffix}" if folder else f"{image_id}{suffix}"
        if (root / relative).is_file():
            return relative
    return None


def _require_image(root: Path, split: str, image_id: str, where: str) -> str:
    path = _image_path(root, split, image_id)
    if path is None:
        raise AdapterError(f"{where}: image {image_id!r} has no file {split}/{image_id}.jpg (nor "
                           f"{', '.join(IMAGE_SUFFIXES[1:])}) under {root}; add it or remove the row")
    check_image_path(path, root, where)
    return path


def canonical_split(split: str) -> str:
    """The canonical split of a file prefix (``valid`` -> ``val``)."""
    if split not in SPLIT_NAMES:
        raise AdapterError(f"split {split!r}: unknown file prefix; use one of {sorted(SPLIT_NAMES)}")
    return SPLIT_NAMES[split]


def _mapping(root: Path) -> ConceptTable | None:
    path = root / CUI_MAPPING
    if not path.is_file():
        return None
    try:
        return load_concept_table(path)
    except ConceptTableError as exc:
        raise AdapterError(str(exc)) from None


# ------------------------------------------------------------------------------------------ samples
def _check_tasks(tasks: Sequence[str]) -> None:
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise AdapterError(f"tasks {list(tasks)}: use one or both of {list(TASKS)}")


def _sample(sample_id: str, task: str, image_path: str, prompt: str, answer: str, metadata: dict,
            options: PromptOptions) -> dict:
    return {
        "id": sample_id, "task": task,
        "conversations": [
            {"role": "user", "content": [
                {"type": "image", "image_path": image_path, "modality": options.modality},
                {"type": "text", "text": prompt}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
        "metadata": metadata,
    }


def _concepts_text(cuis: list[str], mapping: ConceptTable | None, options: PromptOptions, where: str) -> str:
    if options.concept_target == "cuis":
        return concepts_answer(cuis)
    if mapping is None:
        raise AdapterError(f"{where}: concept_target='names' needs {CUI_MAPPING} beside the concept files")
    names = [mapping[c].name for c in cuis]
    if any(";" in name for name in names):
        raise AdapterError(f"{where}: a name of {cuis} in {CUI_MAPPING} holds ';', which separates concepts; "
                           "use concept_target='cuis'")
    return concepts_answer(names)


def _manual_cuis(root: Path, split: str, known: dict) -> dict[str, list[str]]:
    """Image id -> manually validated CUIs, from ``{split}_concepts_manual.csv`` when it exists."""
    path = root / f"{split}_concepts_manual.csv"
    if not path.is_file():
        return {}
    manual = {}
    for image_id, (line, record) in _by_id(path, ("ID", "CUIs")).items():
        if image_id not in known:
            raise AdapterError(f"{path}:{line}: the id {image_id!r} is not in {split}_concepts.csv; give the "
                               "manual file of the same split")
        manual[image_id] = parse_cuis(record["CUIs"], f"{path}:{line}")
    return manual


def roco_concept_samples(root: str | Path, split: str = "train",
                         options: PromptOptions = PromptOptions()) -> list[dict]:
    """``concepts`` samples of ``{split}_concepts.csv``, in file order (ids ``{ID}_concepts``)."""
    root = Path(root)
    path = root / f"{split}_concepts.csv"
    rows = _by_id(path, ("ID", "CUIs"))
    mapping, manual = _mapping(root), _manual_cuis(root, split, rows)
    prompt = concepts_prompt(options.prompt_language)
    samples = []
    for image_id, (line, record) in rows.items():
        where = f"{path}:{line}"
        cuis = parse_cuis(record["CUIs"], where)
        unknown = [c for c in cuis if mapping is not None and c not in mapping]
        if unknown:
            raise AdapterError(f"{where}: CUI {unknown[:MAX_LISTED]} is not in {root / CUI_MAPPING}; add it "
                               "to the mapping or fix the CUI")
        metadata = {"split": canonical_split(split), "image_id": image_id, "dataset": "ROCOv2"}
        if image_id in manual:
            metadata["manual_cuis"] = manual[image_id]
        image_path = _require_image(root, split, image_id, where)
        answer = _concepts_text(cuis, mapping, options, where)
        samples.append(_sample(f"{image_id}_concepts", "concepts", image_path, prompt, answer, metadata,
                               options))
    return samples


def roco_caption_samples(root: str | Path, split: str = "train",
                         options: PromptOptions = PromptOptions()) -> list[dict]:
    """``caption`` samples of ``{split}_captions.csv``, in file order (ids ``{ID}_caption``).

    Captions are put on one line (whitespace collapsed); an empty caption is an error.
    """
    root = Path(root)
    path = root / f"{split}_captions.csv"
    prompt = caption_prompt(options.prompt_language, options.caption_language)
    samples = []
    for image_id, (line, record) in _by_id(path, ("ID", "Caption")).items():
        where = f"{path}:{line}"
        caption = " ".join(record["Caption"].split())
        if not caption:
            raise AdapterError(f"{where}: the caption of {image_id!r} is empty; every gold row has a caption")
        metadata = {"split": canonical_split(split), "image_id": image_id, "dataset": "ROCOv2"}
        samples.append(_sample(f"{image_id}_caption", "caption", _require_image(root, split, image_id, where),
                               prompt, caption, metadata, options))
    return samples


def roco_samples(root: str | Path, split: str = "train", tasks: Sequence[str] = TASKS,
                 options: PromptOptions = PromptOptions()) -> list[dict]:
    """The samples of ``tasks`` (``concepts``, ``caption``) of one split: all concepts samples, then all
    caption samples, each in file order. Image paths are relative to ``root``, the image root."""
    _check_tasks(tasks)
    samples = roco_concept_samples(root, split, options) if "concepts" in tasks else []
    return samples + (roco_caption_samples(root, split, options) if "caption" in tasks else [])


# ------------------------------------------------------------------------------------ without gold
def read_ids_file(path: str | Path) -> list[tuple[int, str]]:
    """``(line, id)`` of an ids CSV whose first column is ``ID``, in file order (never sorted: ids are not
    zero-padded); an empty or repeated id is an error naming its line."""
    path = Path(path)
    if not path.is_file():
        raise AdapterError(f"{path}: no such ids file; give a CSV whose first column ID lists the images")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if not header or header[0].strip() != "ID":
            raise AdapterError(f"{path}:1: the header {header} does not start with ID; an ids file is a CSV "
                               "whose first column is ID")
        ids, seen, done = [], {}, reader.line_num
        for fields in reader:
            line, done = done + 1, reader.line_num
            image_id = fields[0].strip() if fields else ""
            if not image_id:
                continue
            if image_id in seen:
                raise AdapterError(f"{path}:{line}: the id {image_id!r} repeats line {seen[image_id]}")
            seen[image_id] = line
            ids.append((line, image_id))
    if not ids:
        raise AdapterError(f"{path}: no ids below the header")
    return ids


def image_folder_samples(image_dir: str | Path, ids_path: str | Path, tasks: Sequence[str] = TASKS,
                         split: str = "test", options: PromptOptions = PromptOptions(),
                         missing: str = "error") -> list[dict]:
    """Samples without gold for the images of ``ids_path`` in ``image_dir`` (``{ID}.jpg``, ``.jpeg`` or
    ``.png``), in the ids file's order, to generate concepts or captions for a challenge test set.

    The answer is a placeholder (:data:`NO_REFERENCE`) and ``metadata.no_reference`` is true. Image paths
    are relative to ``image_dir``, the image root.

    Args:
        missing: ``"error"``: an id without an image file is an error listing every such id with its line;
            ``"keep"``: its sample is kept with the expected path ``{ID}.jpg`` and ``metadata.image_missing``,
            so a job records the failure and writes the fallback answer for it.
    """
    image_dir = Path(image_dir)
    if missing not in ("error", "keep"):
        raise AdapterError(f"missing={missing!r}; use 'error' or 'keep'")
    _check_tasks(tasks)
    ids = read_ids_file(ids_path)
    found = {image_id: _image_path(image_dir, "", image_id) for _, image_id in ids}
    for line, image_id in ids:
        check_image_path(found[image_id] or f"{image_id}{IMAGE_SUFFIXES[0]}", image_dir, f"{ids_path}:{line}",
                         must_exist=False)
    absent = [f"{image_id} (line {line})" for line, image_id in ids if found[image_id] is None]
    if absent and missing == "error":
        raise AdapterError(f"{ids_path}: {len(absent)} ids have no image {'/'.join(IMAGE_SUFFIXES)} in "
                           f"{image_dir} (first ten: {absent[:MAX_LISTED]}); add them or pass missing='keep'")
    prompts = {"concepts": concepts_prompt(options.prompt_language),
               "caption": caption_prompt(options.prompt_language, options.caption_language)}
    samples = []
    for task in [t for t in TASKS if t in tasks]:
        for _, image_id in ids:
            metadata = {"split": canonical_split(split), "image_id": image_id, "dataset": "image folder",
                        "no_reference": True}
            if found[image_id] is None:
                metadata["image_missing"] = True
            path = found[image_id] or f"{image_id}{IMAGE_SUFFIXES[0]}"
            samples.append(_sample(f"{image_id}_{task}", task, path, prompts[task], NO_REFERENCE[task],
                                   metadata, options))
    return samples
