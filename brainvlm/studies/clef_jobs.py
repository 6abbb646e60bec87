"""Batch concept detection and captioning for ImageCLEFmedical Caption: images in, submission files out.

``run_job(kind, samples, image_root, out_dir, options)`` answers every image of ``samples`` (canonical
``concepts`` or ``caption`` samples: from the ROCOv2 adapter, a samples file, or an image folder with an
``ids.csv``) with a LLaVA-family checkpoint, optionally with a LoRA adapter, through the resumable
generator :func:`brainvlm.eval.generate.predict`, and writes into ``out_dir``::

    predictions.jsonl       {"id", "prediction"}, appended as it goes; a rerun continues it after a kill
    predictions.meta.json   what it was generated from; a rerun from another base model, adapter, samples
                            or generation settings is refused (``generate.guard_resume``)
    failures.jsonl          {"id", "sample_id", "reason", "error"} of each image that could not be answered
    concepts.csv            Format B, ID,CUIs (concepts)
    concepts_natural.csv    Format A, ID,Names: the names as the model wrote them (concepts)
    concept_names.csv       each distinct name the model wrote, how often, and how it was mapped (concepts)
    captions.csv            ID,Caption (captions)
    summary.json            counts, failures, fallbacks, unmapped names, mapping methods, the format check

An image that fails (a missing or unreadable file, an image under 8 pixels a side, an error in generation)
costs only itself: its batch is retried one image at a time, its id and reason go to ``failures.jsonl``, its
row gets the fallback (no concepts, ``ID,``; the fallback caption), and a rerun tries it again. A job in
which no image was answered writes its files and summary and then raises :class:`JobError`: a submission of
fallback rows only is a failure, however valid its format. ``python -m brainvlm concepts`` and ``captions``
read :class:`JobOptions` (``studies.clef_job_options``) from a params file and flags (``docs/concepts.md``,
"Batch jobs").
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from brainvlm.core.jsonio import append_jsonl, dumps, read_jsonl, write_json
from brainvlm.data.adapters.roco import PromptOptions, image_folder_samples, roco_samples
from brainvlm.data.concept_map import ConceptMapper
from brainvlm.data.image_paths import leaves_root
from brainvlm.data.umls import load_concept_table
from brainvlm.data.validate import validate_file
from brainvlm.data.volumes import IMAGE_SUFFIXES
from brainvlm.eval import clef_outputs, generate
from brainvlm.model import collate, lora, templates
from brainvlm.model.loader import load, model_family
from brainvlm.studies.clef_job_options import JobError, JobOptions

KINDS = {"concepts": "concepts", "captions": "caption"}  # job kind -> the task of its samples
DEFAULT_MAX_NEW_TOKENS = {"concepts": 150, "captions": 100}  # the seed's examples
PREDICTIONS, FAILURES, SUMMARY = "predictions.jsonl", "failures.jsonl", "summary.json"
MAX_LISTED = 10
SAMPLED_BYTES = 1 << 20  # a base checkpoint is fingerprinted by each file's size, first and last MiB
BAD_ID_CHARACTERS = ',"\r\n'
MIN_IMAGE_SIDE = 8  # pixels: a smaller picture (a 1 x 1 placeholder, an icon) shows nothing to describe


# ------------------------------------------------------------------------------------------- samples
def image_id(sample: dict) -> str:
    """The submission id of a sample: ``metadata.image_id``, else the sample id."""
    return str((sample.get("metadata") or {}).get("image_id") or sample["id"])


def select_samples(kind: str, samples: list[dict], source: str) -> list[dict]:
    """The samples of a job's task, checked for ids a submission can hold (one per image, no commas)."""
    if kind not in KINDS:
        raise JobError(f"kind={kind!r}: use one of {list(KINDS)}")
    chosen = [s for s in samples if s.get("task") == KINDS[kind]]
    if not chosen:
        tasks = sorted({str(s.get("task")) for s in samples})
        raise JobError(f"{source}: no {KINDS[kind]!r} samples among {len(samples)} (tasks there: {tasks}); "
                       f"give the {kind} samples")
    ids = [image_id(s) for s in chosen]
    bad = [i for i in ids if not i or i != i.strip() or any(ch in i for ch in BAD_ID_CHARACTERS)]
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if bad or repeated:
        raise JobError(f"{source}: image ids {bad[:MAX_LISTED]} are empty or hold a comma, a quote, a line "
                       f"break or outer whitespace, and ids {repeated[:MAX_LISTED]} repeat; a submission has "
                       "one row per image, keyed by metadata.image_id (else the sample id)")
    return chosen


def samples_file(path: str | Path) -> list[dict]:
    """The samples of a JSONL file, checked against the canonical format (image files are not looked up)."""
    issues = validate_file(path, check_images=False)
    if issues:
        listed = "; ".join(str(i) for i in issues[:MAX_LISTED])
        raise JobError(f"{path}: {len(issues)} problems (first ten: {listed}); run brainvlm validate {path}")
    return read_jsonl(path)


def roco_job_samples(kind: str, root: str | Path, split: str,
                     prompts: PromptOptions) -> tuple[list[dict], Path]:
    """A split of a ROCOv2-layout folder: its gold file's samples, or, for a split without gold, the images
    of ``{split}/`` listed in ``{split}_ids.csv``. Returns the samples and their image root."""
    root, task = Path(root), KINDS[kind]
    gold = root / f"{split}_{'concepts' if kind == 'concepts' else 'captions'}.csv"
    if gold.is_file():
        return roco_samples(root, split, (task,), prompts), root
    ids = root / f"{split}_ids.csv"
    if not ids.is_file():
        raise JobError(f"{root}: neither {gold.name} nor {ids.name}; give a ROCOv2 folder with one of them "
                       f"for split {split!r}")
    return image_folder_samples(root / split, ids, (task,), split, prompts, missing="keep"), root / split


def job_samples(kind: str, options: JobOptions, samples: str | Path | None = None,
                image_root: str | Path | None = None, roco_root: str | Path | None = None,
                split: str = "test", image_dir: str | Path | None = None,
                ids: str | Path | None = None) -> tuple[list[dict], Path]:
    """A job's samples and their image root, from exactly one source.

    Args:
        samples: a canonical samples JSONL; its images are relative to ``image_root`` (default: its folder).
        roco_root, split: a folder in the ROCOv2 / ImageCLEF layout and the split's file prefix.
        image_dir, ids: an image folder and the ids file listing its images in the official order; images
            without a file are kept and fail (recorded, fallback written).
    """
    sources = {"samples": samples, "roco_root": roco_root, "image_dir": image_dir}
    given = [name for name, value in sources.items() if value]
    if len(given) != 1:
        raise JobError(f"sources {given}: give exactly one of a samples file, a ROCOv2 folder, or an image "
                       "folder with its ids file")
    prompts = PromptOptions(options.prompt_language, options.caption_language)
    if samples:
        chosen, root, source = samples_file(samples), Path(image_root or Path(samples).parent), str(samples)
    elif roco_root:
        (chosen, root), source = roco_job_samples(kind, roco_root, split, prompts), str(roco_root)
    else:
        if not ids:
            raise JobError(f"image folder {image_dir}: give the ids file (a CSV whose first column ID lists "
                           "the images in order)")
        chosen = image_folder_samples(image_dir, ids, (KINDS[kind],), "test", prompts, missing="keep")
        root, source = Path(image_dir), str(ids)
    return select_samples(kind, chosen, source), root


# ------------------------------------------------------------------------------------- resume record
def _file_digest(path: Path, sampled: bool) -> bytes:
    size = path.stat().st_size
    if not sampled or size <= 2 * SAMPLED_BYTES:
        return hashlib.sha256(path.read_bytes()).digest()
    with path.open("rb") as handle:
        head = handle.read(SAMPLED_BYTES)
        handle.seek(size - SAMPLED_BYTES)
        return hashlib.sha256(str(size).encode() + head + handle.read()).digest()


def folder_fingerprint(folder: str | Path, sampled: bool = False) -> str:
    """SHA-256 over a folder's file names and contents (``sampled``: a large file by its size, first and
    last MiB)."""
    folder, digest = Path(folder), hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + _file_digest(path, sampled))
    return digest.hexdigest()


def model_identity(name: str, sampled: bool) -> dict[str, str]:
    """A checkpoint or adapter in a resume record: a local folder by its content, a hub id by its name."""
    path = Path(name).expanduser()
    if path.is_dir():
        return {"name": path.resolve().name, "sha256": folder_fingerprint(path, sampled)}
    return {"name": name}


def job_record(kind: str, samples: list[dict], options: JobOptions) -> dict[str, Any]:
    """What a job's predictions come from: base model, adapter, samples and generation settings."""
    samples_sha256 = hashlib.sha256("\n".join(dumps(s) for s in samples).encode("utf-8")).hexdigest()
    adapter = model_identity(options.adapter_repo, sampled=False) if options.adapter_repo else None
    generation = {"batch_size": options.batch_size, "max_new_tokens": max_new_tokens(kind, options),
                  "generation_kwargs": options.generation_kwargs, "dtype": options.dtype,
                  "load_in_4bit": options.load_in_4bit, "merge_adapters": options.merge_adapters}
    return {"kind": kind, "base_model": model_identity(options.base_model_path, sampled=True),
            "adapter": adapter, "samples_sha256": samples_sha256, "generation": generation}


def max_new_tokens(kind: str, options: JobOptions) -> int:
    """The answer length of a job: the option, else the kind's default."""
    return options.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[kind]


# --------------------------------------------------------------------------------------- generation
def job_device(name: str) -> torch.device:
    """The device of ``JobOptions.device`` (``auto``: CUDA when there is one)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise JobError(f"device={name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise JobError(f"device={name!r}: no CUDA device is visible; use device cpu (or auto)")
    return device


def load_job_model(options: JobOptions) -> tuple[Any, Any]:
    """The base model on its device, with the adapter on it (merged into it with ``merge_adapters``)."""
    device = job_device(options.device)
    model, processor = load(options.base_model_path, dtype=options.dtype, load_in_4bit=options.load_in_4bit,
                            device_map={"": device} if options.load_in_4bit else None)
    model = model if options.load_in_4bit else model.to(device)
    if options.adapter_repo:
        model = lora.load_adapter(model, options.adapter_repo)
        model = model.merge_and_unload() if options.merge_adapters else model
    return model, processor


class InputError(Exception):
    """A sample whose image cannot be made into model inputs (told apart from an error in generation)."""

    def __init__(self, reason: str, error: Exception):
        super().__init__(f"{type(error).__name__}: {error}")
        self.reason = reason


def image_size(image_root: Path, relative: str) -> tuple[int, int] | None:
    """Width and height of a 2D image file from its header (None for another file, a path that leaves the
    root, or a file PIL cannot open: the collator reports those)."""
    path = image_root / relative
    if path.suffix.lower() not in IMAGE_SUFFIXES or leaves_root(image_root, relative) or not path.is_file():
        return None
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError):
        return None


def too_small(sample: dict, image_root: Path) -> InputError | None:
    """An ``image too small`` error for a sample with an image under :data:`MIN_IMAGE_SIDE` pixels a side."""
    for turn in sample.get("conversations", []):
        for part in collate.content_parts(turn):
            is_image = part.get("type") == "image" and part.get("image_path")
            size = image_size(image_root, str(part["image_path"])) if is_image else None
            if size is not None and min(size) < MIN_IMAGE_SIDE:
                error = ValueError(f"{part['image_path']} is {size[0]} x {size[1]} pixels; an image needs at "
                                   f"least {MIN_IMAGE_SIDE} pixels on each side")
                return InputError("image too small", error)
    return None


class InputCollator:
    """A prompt collator whose errors are ``InputError`` with a reason: missing, unreadable or too small
    image."""

    def __init__(self, collator: collate.Collator):
        self.collator = collator
        self.image_root = Path(collator.config.image_root)

    def __call__(self, samples: list[dict]) -> dict | None:
        for sample in samples:
            error = too_small(sample, self.image_root)
            if error is not None:
                raise error
        try:
            return self.collator(samples)
        except Exception as error:  # classified here, recorded per image by the job
            if isinstance(error, FileNotFoundError):
                raise InputError("missing image", error) from error
            unreadable = isinstance(error.__cause__, (OSError, EOFError))  # PIL's errors on a bad file
            raise InputError("unreadable image" if unreadable else "invalid input", error) from error


class FailureLog:
    """Images that could not be answered: appended to ``failures.jsonl`` as they happen, kept in ``rows``.

    The file starts empty on every run: a rerun tries every failed image again.
    """

    def __init__(self, path: Path, image_ids: dict[str, str]):
        self.path, self.image_ids, self.rows = Path(path), image_ids, []
        self.path.write_bytes(b"")

    def __call__(self, sample_id: str, error: Exception) -> None:
        reason = error.reason if isinstance(error, InputError) else "generation error"
        text = str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}"
        row = {"id": self.image_ids[sample_id], "sample_id": sample_id, "reason": reason, "error": text}
        self.rows.append(row)
        append_jsonl(self.path, [row])


def answer_images(kind: str, samples: list[dict], image_root: Path, out_dir: Path, options: JobOptions,
                  progress: bool) -> tuple[dict[str, str | None], list[dict]]:
    """Generate the answers not yet in ``predictions.jsonl``; image id -> answer (None: failed), failures."""
    model, processor = load_job_model(options)
    config = collate.CollateConfig(image_root=str(image_root))
    collator = InputCollator(collate.Collator(processor, config, prompt_only=True, cache_mb=0))
    stops = templates.stop_token_ids(processor.tokenizer, model_family(model))
    failures = FailureLog(out_dir / FAILURES, {s["id"]: image_id(s) for s in samples})
    sampling = dict(options.generation_kwargs)
    seed = int(sampling.pop("seed", 0))
    table = generate.predict(model, samples, out_dir / PREDICTIONS, collator, processor.tokenizer, stops,
                             options.batch_size, max_new_tokens(kind, options), progress, seed,
                             options.checkpoint_interval or None, failures, **sampling)
    answers = dict(zip([image_id(s) for s in samples], table["prediction"]))
    return answers, failures.rows


# ------------------------------------------------------------------------------------------ concepts
def concept_mapper(options: JobOptions) -> ConceptMapper | None:
    """The mapper of ``auto_map_cuis`` over ``cui_mapping_file`` (None when names are not mapped)."""
    if not options.auto_map_cuis:
        return None
    if not options.cui_mapping_file:
        raise JobError("auto_map_cuis is on but cui_mapping_file is empty; give a concept table "
                       "(cui_mapping.csv or a UMLS META folder), or turn auto_map_cuis off to keep only the "
                       "CUIs the model writes")
    return ConceptMapper(load_concept_table(options.cui_mapping_file))


# ----------------------------------------------------------------------------------------------- job
def failure_summary(failures: list[dict]) -> dict[str, Any]:
    """The failures as the summary reports them: their count, per reason, and the first ten."""
    return {"count": len(failures), "reasons": dict(sorted(Counter(f["reason"] for f in failures).items())),
            "examples": failures[:MAX_LISTED]}


def run_job(kind: str, samples: list[dict], image_root: str | Path, out_dir: str | Path, options: JobOptions,
            restart: bool = False, progress: bool = True) -> dict[str, Any]:
    """Answer every image of ``samples`` and write the submission files, the failures and ``summary.json``.

    Args:
        kind: ``concepts`` or ``captions``; only the samples of its task are answered.
        samples: canonical samples (``job_samples``); their image paths are relative to ``image_root``.
        out_dir: the job's folder (see the module docstring); a rerun continues its predictions.
        restart: start over when the predictions were generated from something else (default: refuse).

    Returns:
        The summary (also written to ``summary.json``).

    Raises:
        JobError: before generating, options or samples that cannot work; after writing the files and the
            summary, a job in which no image was answered (every row a fallback).
    """
    samples = select_samples(kind, samples, "samples")
    mapper = concept_mapper(options) if kind == "concepts" else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions = out_dir / PREDICTIONS
    generate.guard_resume(predictions, job_record(kind, samples, options), "restart" if restart else "error")
    generate.repair_jsonl(predictions)
    resumed = len(generate.read_predictions(predictions))
    answers, failures = answer_images(kind, samples, Path(image_root), out_dir, options, progress)
    ids = list(answers)
    if kind == "concepts":
        details = clef_outputs.concept_outputs(out_dir, ids, answers, mapper)
        details["auto_map_cuis"] = mapper is not None
        emptied = ("unparseable", details["unparseable"]["count"])
    else:
        details = clef_outputs.caption_outputs(out_dir, ids, answers, options.caption_language)
        emptied = ("empty_after_tidying", details["empty_after_tidying"]["count"])
    fallbacks = {"count": len(failures) + emptied[1], "failed": len(failures), emptied[0]: emptied[1]}
    check = clef_outputs.submission_check(out_dir / clef_outputs.OUTPUTS[kind], ids, kind)
    summary = {"kind": kind, "images": len(ids), "answered": sum(a is not None for a in answers.values()),
               "resumed_answers": resumed, "failed": failure_summary(failures), "fallbacks": fallbacks,
               **details, "submission_check": check, "options": asdict(options)}
    write_json(summary, out_dir / SUMMARY)
    if ids and summary["answered"] == 0:
        raise JobError(nothing_answered(summary, out_dir, clef_outputs.OUTPUTS[kind]))
    return summary


def nothing_answered(summary: dict[str, Any], out_dir: Path, written: str) -> str:
    """Why a job whose every image failed is a failure, with the first error and where the rest are."""
    failed = summary["failed"]
    reasons = ", ".join(f"{reason}: {n}" for reason, n in failed["reasons"].items()) or "no failure recorded"
    first = f"; the first error: {failed['examples'][0]['error']}" if failed["examples"] else ""
    return (f"no image of {summary['images']} was answered ({reasons}), so {out_dir / written} holds only "
            f"fallback rows{first} ({out_dir / FAILURES} lists every image)")
