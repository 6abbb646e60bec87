"""``brainvlm concepts`` and ``brainvlm captions``: a model answers every image of a set, resumably, and
the submission files and ``summary.json`` are written (docs/concepts.md, "Batch jobs")."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from brainvlm.app.commands.common import fail

DESCRIPTION = ("brainvlm concepts|captions (--samples S.jsonl | --roco-root DIR --split test | --image-dir DIR "
               "--ids IDS.csv) --out DIR [--params P.yaml] [options]: answer every image with the model "
               "(resumably), record the images that fail, and write the submission files and summary.json "
               "(docs/concepts.md, \"Batch jobs\").")


class JobUsageError(ValueError):
    """Flags or a params file that do not make a job; the message says which and what to do."""


JOB_FLAGS = {  # option -> (type, help); booleans take --name / --no-name
    "base_model_path": (str, "base checkpoint: a folder or a hub id (required)"),
    "adapter_repo": (str, "LoRA adapter folder (empty: the base alone)"),
    "batch_size": (int, "images per generate call"),
    "max_new_tokens": (int, "longest answer (default: 150 for concepts, 100 for captions)"),
    "load_in_4bit": (bool, "NF4 4-bit weights (CUDA, bitsandbytes)"),
    "merge_adapters": (bool, "merge the adapter into the base weights"),
    "cui_mapping_file": (str, "concept table: cui_mapping.csv or a UMLS META folder (with --roco-root: "
                              + "its cui_mapping.csv when there is one)"),
    "auto_map_cuis": (bool, "map the names the model writes to CUIs"),
    "generation_kwargs": (str, 'JSON object of generate() keywords, e.g. \'{"do_sample": false}\''),
    "device": (str, "auto | cpu | cuda | cuda:N"),
    "dtype": (str, "float32 | bfloat16 | float16"),
    "checkpoint_interval": (int, "write answers once this many wait (0: after every batch)"),
    "prompt_language": (str, "en | es: the prompts of the samples the job builds"),
    "caption_language": (str, "en | es: the caption asked for, and the fallback caption"),
}


def _job_defaults() -> dict:
    """The defaults of ``JobOptions`` (their one home), for the help text."""
    import dataclasses

    from brainvlm.studies.clef_jobs import JobOptions

    return {f.name: f.default for f in dataclasses.fields(JobOptions) if f.default is not dataclasses.MISSING}


def job_parser(kind: str) -> argparse.ArgumentParser:
    """Arguments of ``brainvlm concepts`` and ``brainvlm captions``."""
    parser = argparse.ArgumentParser(prog=f"brainvlm {kind}", description=DESCRIPTION)
    source = parser.add_argument_group("images: --samples, --roco-root or --image-dir with --ids")
    source.add_argument("--samples", default=None, help="canonical samples JSONL")
    source.add_argument("--image-root", default=None, help="folder of the samples' image paths (default: the "
                                                           "samples file's folder)")
    source.add_argument("--roco-root", default=None, help="folder in the ROCOv2 / ImageCLEF layout")
    source.add_argument("--split", default="test", help="file prefix of --roco-root: train | valid | test")
    source.add_argument("--image-dir", default=None, help="image folder ({ID}.jpg, .jpeg or .png)")
    source.add_argument("--ids", default=None, help="CSV whose first column ID lists the images in order")
    parser.add_argument("--out", required=True, help="output folder (predictions, failures, CSVs, summary)")
    parser.add_argument("--params", default=None,
                        help="YAML file of the options below (keys as base_model_path); flags override it")
    options = parser.add_argument_group("job options (also the keys of a --params file)")
    defaults = _job_defaults()
    for name, (kind_of, text) in JOB_FLAGS.items():
        flag = "--" + name.replace("_", "-")
        text += f" (default: {defaults[name]!r})" if defaults.get(name) not in (None, "") else ""
        if kind_of is bool:
            options.add_argument(flag, dest=name, default=None, action=argparse.BooleanOptionalAction,
                                 help=text)
        else:
            options.add_argument(flag, dest=name, default=None, type=kind_of, help=text)
    parser.add_argument("--restart", action="store_true",
                        help="start over when --out holds answers of another model, adapter, samples or "
                             "settings (default: error)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def read_job_params(path: str) -> dict:
    """The options of a job params file (a YAML mapping whose keys are ``JobOptions`` fields)."""
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        raise JobUsageError(f"{where}: not YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(values, dict):
        raise JobUsageError(f"{path}: a params file is a mapping of option: value, not "
                            f"{type(values).__name__}")
    unknown = sorted(set(values) - set(JOB_FLAGS))
    if unknown:
        raise JobUsageError(f"{path}: unknown options {unknown}; the options are {sorted(JOB_FLAGS)}")
    return values


def _json_object(value, where: str) -> dict:
    """``generation_kwargs`` given as JSON text (a flag, or a string in the params file)."""
    if not isinstance(value, str):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise JobUsageError(f"{where}: {value!r} is not JSON ({exc.msg} at character {exc.pos}); write an "
                            'object such as \'{"do_sample": false}\'') from None
    if not isinstance(parsed, dict):
        raise JobUsageError(f"{where}: {value!r} is not a JSON object; write one such as "
                            '\'{"num_beams": 2}\'')
    return parsed


def job_options(args: argparse.Namespace, kind: str):
    """``JobOptions`` from ``--params`` overlaid with the flags given; the defaults are ``JobOptions``'s."""
    from brainvlm.studies.clef_jobs import JobOptions

    values = read_job_params(args.params) if args.params else {}
    if "generation_kwargs" in values:
        where = f"{args.params}: generation_kwargs"
        values["generation_kwargs"] = _json_object(values["generation_kwargs"], where)
    flags = {name: getattr(args, name) for name in JOB_FLAGS if getattr(args, name) is not None}
    if "generation_kwargs" in flags:
        flags["generation_kwargs"] = _json_object(flags["generation_kwargs"], "--generation-kwargs")
    values.update(flags)
    table = Path(args.roco_root or "") / "cui_mapping.csv"
    if kind == "concepts" and args.roco_root and not values.get("cui_mapping_file") and table.is_file():
        values["cui_mapping_file"] = str(table)
    if not values.get("base_model_path"):
        raise JobUsageError("no base model: give --base-model-path (or base_model_path in the --params file)")
    return JobOptions(**values)


def _job_report(kind: str, summary: dict, out: str) -> str:
    failed = summary["failed"]
    reasons = ", ".join(f"{reason}: {n}" for reason, n in failed["reasons"].items())
    check = summary["submission_check"]
    return (f"{kind}: {summary['images']} images, {summary['answered']} answered, {failed['count']} failed"
            f"{f' ({reasons})' if reasons else ''}, {summary['fallbacks']['count']} fallback rows; "
            f"{check['file']} {'valid' if check['valid'] else 'INVALID'}; {Path(out) / 'summary.json'}")


def main_job(kind: str, argv: list[str]) -> int:
    """``python -m brainvlm concepts|captions (--samples S.jsonl | --roco-root DIR --split test |
    --image-dir DIR --ids IDS.csv) --out DIR [--params P.yaml] [options]``: answer every image with the model
    (resumably), record the images that fail, and write the submission files and summary.json
    (docs/concepts.md, "Batch jobs")."""
    args = job_parser(kind).parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    from brainvlm.studies.clef_jobs import job_samples, run_job

    try:
        options = job_options(args, kind)
        samples, image_root = job_samples(kind, options, args.samples, args.image_root, args.roco_root,
                                          args.split, args.image_dir, args.ids)
        summary = run_job(kind, samples, image_root, args.out, options, restart=args.restart,
                          progress=not args.no_progress)
    except (ValueError, KeyError, OSError, RuntimeError, ImportError) as exc:
        return fail(kind, exc)
    print(_job_report(kind, summary, args.out))
    for example in summary["submission_check"]["examples"]:
        print(f"{summary['submission_check']['file']} {example}", file=sys.stderr)
    return 0 if summary["submission_check"]["valid"] else 1
