"""Source files -> canonical samples through their adapter, each sample with the input record it came from.

One entry of :data:`FORMATS` per adapter of :mod:`brainvlm.data.adapters`; ``brainvlm convert`` writes the
samples and names ``origin`` (input file and line, or item index) beside any problem the validator finds in
them. Every adapter refuses an image path that leaves the image root where it reads the record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from brainvlm.core.jsonio import read_jsonl_numbered
from brainvlm.data.adapters import AdapterError
from brainvlm.data.adapters.curriculum import read_curriculum, read_joins, read_records
from brainvlm.data.adapters.llava import read_llava_classic, record_locations
from brainvlm.data.adapters.llava_med import read_llava_med, split_from_name
from brainvlm.data.adapters.roco import TASKS as ROCO_TASKS
from brainvlm.data.adapters.roco import PromptOptions, id_lines, roco_samples
from brainvlm.data.adapters.vqa_rad import vqa_rad_to_samples
from brainvlm.data.schema import MODALITIES, SPLITS


@dataclass(frozen=True)
class ConvertOptions:
    """What a conversion needs beyond the input (each format uses the fields it documents).

    Attributes:
        split: ``train``/``val``/``test`` (ROCOv2: the file prefix, ``train``/``valid``/``test``); default:
            the split the input's name names.
        image_root: folder of the records' image paths; with it every image must exist there.
        modality: the image parts' modality (default: each format's own, ``xray`` for curriculum).
        dataset: LLaVA-Med: ``metadata.dataset`` and the id prefix.
        task: LLaVA classic: the samples' task kind; ROCOv2: ``concepts``, ``caption`` or both (None).
        cohort_name: curriculum: the id prefix.
        ehr_context, chexpert: curriculum: the optional join files.
    """

    split: str | None = None
    image_root: str | None = None
    modality: str | None = None
    dataset: str = "llava_med"
    task: str | None = None
    cohort_name: str = "curriculum"
    ehr_context: str | None = None
    chexpert: str | None = None


Converted = list[tuple[str, dict]]  # (origin: input file and line or item, sample), in output order


def _split(source: Path, options: ConvertOptions) -> str:
    split = options.split or split_from_name(source)
    if split is None:
        raise AdapterError(f"{source}: the file name names no split (train, val or test); give --split")
    if split not in SPLITS:
        raise AdapterError(f"{source}: split {split!r}; use one of {list(SPLITS)}")
    return split


def _modality(options: ConvertOptions, default: str) -> str:
    modality = options.modality or default
    if modality not in MODALITIES:
        raise AdapterError(f"modality {modality!r} unknown; use one of {list(MODALITIES)}")
    return modality


def vqa_rad(source: Path, options: ConvertOptions) -> Converted:
    """A VQA-RAD question file (a JSON list): one sample per item."""
    found = [split for split in SPLITS if split in source.stem.lower()]  # the adapter's rule: testset.json
    if options.split is None and len(found) != 1:
        raise AdapterError(f"{source}: cannot tell the split from the file name; give --split (one of {list(SPLITS)})")
    samples = vqa_rad_to_samples(source, options.image_root, options.split, _modality(options, "other"))
    return [(f"{source} item [{index}]", sample) for index, sample in enumerate(samples)]


def llava_med(source: Path, options: ConvertOptions) -> Converted:
    """A LLaVA-Med VQA JSONL file: one sample per line."""
    samples = read_llava_med(source, _split(source, options), options.image_root, _modality(options, "other"),
                             options.dataset)
    lines = [number for number, _ in read_jsonl_numbered(source)]
    return [(f"{source}:{line}", sample) for line, sample in zip(lines, samples)]


def llava(source: Path, options: ConvertOptions) -> Converted:
    """LLaVA-classic records (a JSON array or JSONL): one sample per record."""
    samples = read_llava_classic(source, _split(source, options), options.image_root,
                                 _modality(options, "other"), options.task or "vqa")
    wheres = [where for where, _ in record_locations(source)]
    return list(zip(wheres, samples))


def curriculum(source: Path, options: ConvertOptions) -> Converted:
    """A curriculum JSONL file: one ``report`` sample per line, joins added when given."""
    ehr, chexpert = read_joins(options.ehr_context, options.chexpert)
    samples = read_curriculum(source, _split(source, options), options.cohort_name,
                              _modality(options, "xray"), ehr if options.ehr_context else None,
                              chexpert if options.chexpert else None, image_root=options.image_root)
    lines = [number for number, _ in read_records(source)]
    return [(f"{source}:{line}", sample) for line, sample in zip(lines, samples)]


def roco(source: Path, options: ConvertOptions) -> Converted:
    """A folder in the ROCOv2 layout (the image root too): concepts then caption samples of one split."""
    if not source.is_dir():
        raise AdapterError(f"{source}: not a folder; give the folder that holds {{split}}_concepts.csv, "
                           "{split}_captions.csv and the {split}/ images")
    prefix = options.split or "train"
    tasks = ROCO_TASKS if options.task is None else (options.task,)
    samples = roco_samples(source, prefix, tasks, PromptOptions(modality=_modality(options, "other")))
    files = {"concepts": source / f"{prefix}_concepts.csv", "caption": source / f"{prefix}_captions.csv"}
    lines = {task: id_lines(files[task]) for task in tasks}
    return [(f"{files[s['task']]}:{lines[s['task']][s['metadata']['image_id']]}", s) for s in samples]


FORMATS: dict[str, Callable[[Path, ConvertOptions], Converted]] = {
    "vqa-rad": vqa_rad, "llava-med": llava_med, "llava": llava, "roco": roco, "curriculum": curriculum}


def convert(format_name: str, source: str | Path, options: ConvertOptions = ConvertOptions()) -> Converted:
    """Every record of ``source`` in the ``format_name`` layout as ``(origin, canonical sample)``.

    Raises:
        AdapterError: an unknown format, a missing input, or a record the adapter refuses (naming the
            input file and line or item).
    """
    if format_name not in FORMATS:
        raise AdapterError(f"format {format_name!r} unknown; use one of {sorted(FORMATS)}")
    source = Path(source)
    if not source.exists():
        raise AdapterError(f"{source}: no such file or folder")
    return FORMATS[format_name](source, options)
