"""Command line: ``python -m brainvlm COMMAND ...``, COMMAND one of run, sweep, compare, validate,
check-submission, evaluate, predict, train, concepts, captions.

The face of the package: it reads params files and command-line flags and calls the library with
complete values. Each subcommand's imports are deferred so ``brainvlm validate`` does not load torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from brainvlm.core.jsonio import dumps

STUDIES = ("brain", "report", "cl", "concepts")  # python -m brainvlm train --study NAME: a module of brainvlm.studies with train(...)


def parse_overrides(pairs: list[str]) -> dict:
    """``-p key value`` pairs, values read as YAML (so ``-p n_subjects 40`` is an int).

    The values are then checked like a params file's (``app.params.check_params``).
    """
    from brainvlm.app.params import ParamsError

    out = {}
    for key, value in pairs:
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ParamsError(f"-p {key} {value!r}: not a YAML value ({getattr(exc, 'problem', exc)})") from None
    return out


def cmd_run(args: argparse.Namespace) -> int:
    """Run the notebooks; the console shows each one's start, end and progress (``app.console``)."""
    from brainvlm.app.console import Console
    from brainvlm.app.params import ParamsError
    from brainvlm.app.runner import NotebookFailed, run

    console = Console(stream=sys.stdout, verbose=args.verbose)
    try:
        run(Path(args.params), run_name=args.run, only=args.only, overrides=parse_overrides(args.p),
            reports_dir=Path(args.reports_dir) if args.reports_dir else _reports_dir(), console=console)
    except (ParamsError, NotebookFailed) as exc:
        print(f"brainvlm run: {exc}", file=sys.stderr)
        return 1
    return 0


def _reports_dir() -> Path:
    from brainvlm.core.paths import REPORTS_DIR
    return REPORTS_DIR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brainvlm", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute the notebooks into reports/<run>/ and render HTML")
    run.add_argument("--params", required=True, help="flat YAML params file, e.g. params/default.yaml")
    run.add_argument("--run", default=None, help="run name: reports/<run>/ (default: the params file's stem)")
    run.add_argument("--only", default=None, help="comma-separated notebook numbers or names, e.g. 01,02")
    run.add_argument("--reports-dir", default=None, help="parent folder of runs (default: reports/)")
    run.add_argument("-p", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                     help="override one params key (value read as YAML)")
    run.add_argument("--verbose", action="store_true",
                     help="also show the kernels' own log lines, e.g. start-up warnings (hidden by default)")
    run.set_defaults(func=cmd_run)

    for name, text in (("sweep", "run a grid of params values x seeds, locally or as a SLURM job array"),
                       ("compare", "compare run folders' metrics: a table, a page, a figure per metric"),
                       ("validate", "check canonical sample JSONL files (see docs/sample_format.md)"),
                       ("check-submission", "check an ImageCLEF submission CSV and list every violation"),
                       ("evaluate", "score predictions against samples, or a submission (--clef-concepts)"),
                       ("predict", "generate answers for a task's split with its trained adapter (resumable)"),
                       ("train", "train one task's LoRA adapter from a params file (torchrun-ready)"),
                       ("concepts", "detect concepts of an image set: ID,CUIs and names files (resumable)"),
                       ("captions", "caption an image set: an ID,Caption file (resumable)")):
        sub.add_parser(name, help=text, add_help=False).set_defaults(func=None)
    return parser


# ------------------------------------------------------------------------------------ sweep, compare
def sweep_parser() -> argparse.ArgumentParser:
    """Arguments of ``brainvlm sweep`` (docs/sweeps.md)."""
    parser = argparse.ArgumentParser(prog="brainvlm sweep",
                                     description="Run a grid of params values times seeds, each a normal "
                                                 "run, locally or as a SLURM job array (docs/sweeps.md).")
    parser.add_argument("--params", default=None, help="the base params file of every run")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="a params key and its values (scalars, read as YAML); repeat for more keys")
    parser.add_argument("--sweep", default=None, metavar="FILE.yaml",
                        help="sweep file: grid: (any values, lists too), seeds:, resources:")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2")
    parser.add_argument("--only", default=None, help="comma-separated notebook numbers each run executes")
    parser.add_argument("--executor", default="local", choices=["local", "slurm"])
    parser.add_argument("--name", default=None,
                        help="sweep folder reports/<name>/ (default: <params stem>_sweep)")
    parser.add_argument("--reports-dir", default=None, help="parent folder of sweeps (default: reports/)")
    parser.add_argument("--status", action="store_true", help="show each run's state and exit")
    parser.add_argument("--wait", action="store_true", help="slurm: return once no run is pending or running")
    slurm = parser.add_argument_group("SLURM resources (override the sweep file's resources:)")
    for flag, kind, text in (("--partition", str, "partition"), ("--gpus", int, "GPUs per run"),
                             ("--cpus", int, "CPUs per run"), ("--mem-gb", int, "memory per run in GB"),
                             ("--time-min", int, "time limit per run in minutes (default: the partition's)"),
                             ("--account", str, "account to charge"),
                             ("--array-parallelism", int, "runs at once (default: all)")):
        slurm.add_argument(flag, type=kind, default=None, help=text)
    return parser


def main_sweep(argv: list[str]) -> int:
    """``python -m brainvlm sweep --params P [--grid KEY=V1,V2 ...] [--sweep FILE] [--seeds 0,1]
    [--executor local|slurm]``, or ``--status``: exit 1 when a run failed or the sweep cannot run."""
    from brainvlm.app import sweep, sweep_spec
    from brainvlm.app.compare import CompareError
    from brainvlm.app.params import ParamsError
    from brainvlm.app.slurm import SubmissionError

    args = sweep_parser().parse_args(argv)
    if not args.params and not (args.status and args.name):
        print("brainvlm sweep: give --params (or --status --name NAME)", file=sys.stderr)
        return 2
    name = args.name or f"{Path(args.params).stem}_sweep"
    reports = Path(args.reports_dir) if args.reports_dir else _reports_dir()
    try:
        if args.status:
            lines, states = sweep.sweep_status(reports / name)
            print("\n".join(lines))
            return 1 if any(s["state"] == "failed" for s in states.values()) else 0
        resources = {key: getattr(args, key) for key in sweep_spec.RESOURCES}
        spec = sweep_spec.combine(sweep_spec.read_sweep_file(Path(args.sweep)) if args.sweep else None,
                                  sweep_spec.parse_grid(args.grid), sweep_spec.parse_seeds(args.seeds), resources)
        request = sweep.SweepRequest(Path(args.params), spec, name, reports, args.only, args.executor,
                                     args.wait)
        states = sweep.run_sweep(request, say=lambda line: print(line, flush=True))
    except (ParamsError, SubmissionError, CompareError) as exc:
        print(f"brainvlm sweep: {exc}", file=sys.stderr)
        return 1
    return 1 if any(s["state"] == "failed" for s in states.values()) else 0


def main_compare(argv: list[str]) -> int:
    """``python -m brainvlm compare RUN_DIR... [--group-by KEY] [--out DIR]``: one table, one HTML page."""
    parser = argparse.ArgumentParser(prog="brainvlm compare", description=main_compare.__doc__)
    parser.add_argument("runs", nargs="+",
                        help="run folders (reports/<run>/), or sweep folders for their runs")
    parser.add_argument("--group-by", default=None, help="params key on the figures' x axis (default: the "
                                                         "first key that differs between runs)")
    parser.add_argument("--out", default=None, help="output folder (default: reports/compare/)")
    args = parser.parse_args(argv)
    from brainvlm.app.compare import CompareError, compare_runs

    try:
        out = Path(args.out) if args.out else _reports_dir() / "compare"
        page = compare_runs([Path(r) for r in args.runs], out, args.group_by)
    except CompareError as exc:
        print(f"brainvlm compare: {exc}", file=sys.stderr)
        return 1
    print(f"comparison: {page}")
    return 0


# ---------------------------------------------------------------------------------------- validate
def main_validate(argv: list[str]) -> int:
    """``brainvlm validate FILE... [--image-root DIR] [--no-check-images]``: print issues; exit 1 if any."""
    parser = argparse.ArgumentParser(prog="brainvlm validate",
                                     description="Check canonical sample files (docs/sample_format.md).")
    parser.add_argument("files", nargs="+", help="JSONL (one sample per line) or JSON array files")
    parser.add_argument("--image-root", default=None, help="folder the image paths are relative to")
    parser.add_argument("--no-check-images", action="store_true", help="do not look up image files")
    args = parser.parse_args(argv)
    from brainvlm.data.validate import validate_counted

    check = not args.no_check_images and args.image_root is not None
    n_samples = n_errors = 0
    for path in args.files:
        issues, count = validate_counted(path, args.image_root, check)
        n_samples += count
        n_errors += len(issues)
        for issue in issues:
            print(issue)
    note = "" if check else " (image files not checked: " + (
        "--no-check-images)" if args.no_check_images else "no --image-root)")
    print(f"{len(args.files)} files, {n_samples} samples, {n_errors} errors{note}")
    return 0 if n_errors == 0 else 1


# -------------------------------------------------------------------------------- check-submission
def main_check_submission(argv: list[str]) -> int:
    """``brainvlm check-submission S.csv --ids IDS.csv [--kind concepts|captions]``: every violation of the
    ImageCLEF format rules with its row; exit 1 if any."""
    parser = argparse.ArgumentParser(prog="brainvlm check-submission",
                                     description="Check an ImageCLEFmedical Caption submission file "
                                                 "(docs/concepts.md).")
    parser.add_argument("submission", help="the ID,CUIs or ID,Caption CSV to submit")
    parser.add_argument("--ids", required=True, help="CSV whose first column ID lists the images in order "
                                                     "(an ids file or the gold file)")
    parser.add_argument("--kind", default="concepts", choices=["concepts", "captions"])
    args = parser.parse_args(argv)
    from brainvlm.eval.clef_files import check_submission

    try:
        violations = check_submission(args.submission, args.ids, args.kind)
    except (ValueError, OSError) as exc:
        print(f"brainvlm check-submission: {exc}", file=sys.stderr)
        return 1
    for violation in violations:
        print(f"{args.submission} {violation}")
    print(f"{args.submission}: {len(violations)} violations" if violations else f"{args.submission}: valid")
    return 1 if violations else 0


# ---------------------------------------------------------------------------------------- evaluate
def _parse_labels(value: str | None) -> dict | list | None:
    """``--labels``: a JSON object, a YAML/JSON file of label -> synonyms, or ``male,female``."""
    if value is None:
        return None
    if value.lstrip().startswith("{"):
        return json.loads(value)
    if Path(value).is_file():
        return yaml.safe_load(Path(value).read_text(encoding="utf-8"))
    return [v.strip() for v in value.split(",") if v.strip()]


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _allowed(value: str | None) -> list[str] | None:
    """``--allowed``: ``manual`` (the ImageCLEF 2025/2026 allow-list) or comma-separated CUIs."""
    from brainvlm.data.clef_tasks import MANUAL_CUIS

    return list(MANUAL_CUIS) if value == "manual" else _split(value)


def evaluate_parser() -> argparse.ArgumentParser:
    """Arguments of ``brainvlm evaluate``."""
    parser = argparse.ArgumentParser(prog="brainvlm evaluate",
                                     description="Score a predictions JSONL against a canonical samples JSONL.")
    parser.add_argument("--samples", required=True, help="canonical samples JSONL")
    parser.add_argument("--predictions", required=True, help='JSONL of {"id", "prediction"}')
    parser.add_argument("--metrics", default=None, help="comma-separated metric names (default: all that apply)")
    parser.add_argument("--out", default=None, help="write the metrics JSON here")
    parser.add_argument("--group-by", default=None, help="comma-separated metadata columns, e.g. domain")
    parser.add_argument("--labels", default=None, help="male,female | JSON object | YAML file of label -> synonyms")
    parser.add_argument("--tokenize", default="ptb", choices=["ptb", "none"], help="text metric tokenisation")
    parser.add_argument("--fallback", type=float, default=None, help="value of an unparseable numeric answer")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (0: no intervals)")
    parser.add_argument("--n-boot-text", type=int, default=200, help="bootstrap replicates for text metrics")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--unit", default=None, help="bootstrap unit column (default: query_subject or image)")
    parser.add_argument("--labeler", default=None, choices=["rule"],
                        help="label report text with the rule-based CheXpert-14 labeler (CheXpert-14 (rule) F1)")
    parser.add_argument("--partial", action="store_true",
                        help="score a partial run: samples without a prediction count as wrong (default: error)")
    parser.add_argument("--allowed", default=None,
                        help="concepts: CUIs of the secondary ImageCLEF F1 (comma-separated), or 'manual' "
                             "for the 2025/2026 list (default: no secondary score)")
    return parser


def clef_evaluate_parser() -> argparse.ArgumentParser:
    """Arguments of ``brainvlm evaluate --clef-concepts``."""
    parser = argparse.ArgumentParser(prog="brainvlm evaluate --clef-concepts",
                                     description="Score a concept submission as ImageCLEF's evaluator does")
    parser.add_argument("--clef-concepts", required=True, help="gold ID,CUIs file (primary score)")
    parser.add_argument("--manual", default=None, help="manually validated ID,CUIs gold (secondary score)")
    parser.add_argument("--submission", required=True, help="the ID,CUIs submission file")
    parser.add_argument("--allowed", default=None,
                        help="comma-separated CUIs of the secondary score (default: the 2025/2026 list)")
    parser.add_argument("--out", default=None, help="write the scores JSON here")
    parser.add_argument("--per-image", default=None, help="write the per-image F1 CSV here")
    return parser


def main_evaluate_clef(argv: list[str]) -> int:
    """``brainvlm evaluate --clef-concepts GOLD.csv [--manual MANUAL.csv] --submission S.csv``: the primary
    and secondary scores without a model; prints the scores JSON; exit 1 with the error on stderr."""
    from brainvlm.eval.clef import MANUAL_CUIS, evaluate_clef_files

    args = clef_evaluate_parser().parse_args(argv)
    allowed = _split(args.allowed) or tuple(MANUAL_CUIS)
    try:
        result = evaluate_clef_files(args.clef_concepts, args.submission, args.manual, allowed, out=args.out,
                                     per_image_out=args.per_image)
    except (ValueError, OSError) as exc:
        print(f"brainvlm evaluate: {exc}", file=sys.stderr)
        return 1
    print(dumps(result, indent=2))
    return 0


def main_evaluate(argv: list[str]) -> int:
    """Command line: ``brainvlm evaluate --samples S.jsonl --predictions P.jsonl [--metrics a,b] [--out M.json]
    [--group-by domain]``; prints the metrics JSON; exit status 0, or 1 with the error on stderr.
    With ``--clef-concepts`` it scores an ImageCLEF submission instead (``main_evaluate_clef``)."""
    if any(arg.split("=", 1)[0] == "--clef-concepts" for arg in argv):
        return main_evaluate_clef(argv)
    from brainvlm.eval.evaluate import evaluate_files

    args = evaluate_parser().parse_args(argv)
    try:
        result = evaluate_files(args.samples, args.predictions, metrics=_split(args.metrics), out=args.out,
                                labels=_parse_labels(args.labels), group_by=_split(args.group_by),
                                tokenize=args.tokenize, fallback=args.fallback,
                                n_boot=args.n_boot, n_boot_text=args.n_boot_text, seed=args.seed, unit=args.unit,
                                partial=args.partial, labeler=args.labeler,
                                allowed_cuis=_allowed(args.allowed))
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        print(f"brainvlm evaluate: {exc}", file=sys.stderr)
        return 1
    if result["n_extra_predictions"]:
        print(f"brainvlm evaluate: {result['n_extra_predictions']} prediction ids match no sample (first ten): "
              f"{', '.join(result['unmatched_prediction_ids'])}", file=sys.stderr)
    if result["n_missing_predictions"]:
        print(f"brainvlm evaluate: {result['n_missing_predictions']} samples have no prediction, scored as wrong "
              f"(first ten): {', '.join(result['missing_prediction_ids'])}", file=sys.stderr)
    print(dumps(result, indent=2))
    return 0


# ----------------------------------------------------------------------------------------- predict
def main_predict(argv: list[str]) -> int:
    """``python -m brainvlm predict --run-dir R --task T [--split test]``: resumable generation with a trained adapter."""
    parser = argparse.ArgumentParser(prog="brainvlm predict", description=main_predict.__doc__)
    parser.add_argument("--run-dir", required=True, help="run folder (reports/<run>)")
    parser.add_argument("--task", required=True, help="a task of the brain study, e.g. sex")
    parser.add_argument("--split", default="test", help="train | val | test")
    parser.add_argument("--name", default=None, help="adapter folder under models/ (default: the task)")
    parser.add_argument("--out", default=None,
                        help="predictions JSONL (default: predictions/07_<task>_<split>.jsonl)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N samples")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--restart", action="store_true",
                        help="start over when --out came from another adapter, samples or config (default: error)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    from brainvlm.eval.generate import GenerationConfig
    from brainvlm.studies.brain import predict_task

    config = GenerationConfig(args.batch_size, args.max_new_tokens, args.do_sample, args.temperature,
                              args.top_p, args.seed)
    try:
        table = predict_task(Path(args.run_dir), args.task, args.split, config, args.name,
                             Path(args.out) if args.out else None, args.limit,
                             "restart" if args.restart else "error", progress=not args.no_progress)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"brainvlm predict: {exc}", file=sys.stderr)
        return 1
    answered = int(table["prediction"].notna().sum())
    print(f"{args.task}/{args.split}: {answered} of {len(table)} samples answered")
    return 0


# ------------------------------------------------------------------------------------------- train
def study_module(study: str):
    """The module of ``brainvlm.studies`` that a ``--study`` name selects."""
    import importlib

    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; studies: {list(STUDIES)}")
    return importlib.import_module(f"brainvlm.studies.{study}")


def study_params(study: str, params_path: Path, overrides: dict) -> dict:
    """A study's training params, complete: the declaring notebook's defaults, the file, then ``-p``.

    Raises:
        ParamsError: a key of the file or of ``-p`` that no notebook declares (checked as ``run`` does).
    """
    from brainvlm.app.params import (
        check_params,
        complete_params,
        discover_notebooks,
        find_notebook,
        read_params,
    )
    module = study_module(study)
    params = {**read_params(params_path), **overrides}
    check_params(params, discover_notebooks(), source=str(params_path))
    return complete_params(find_notebook(module.TRAIN_NOTEBOOK), params)


def main_train(argv: list[str]) -> int:
    """``python -m brainvlm train --params P [--study brain] --task T``: the entry point torchrun starts."""
    parser = argparse.ArgumentParser(prog="brainvlm train", description=main_train.__doc__)
    parser.add_argument("--params", required=True, help="the run's params file")
    parser.add_argument("--study", default="brain", choices=STUDIES, help="the study whose train() runs")
    parser.add_argument("--task", required=True,
                        help="sex, bmi (brain); report (report); sequential, replay, joint, adapters (cl); "
                             "concepts, caption, multitask (concepts)")
    parser.add_argument("--run", default=None, help="run name under reports/ (default: the params file's stem)")
    parser.add_argument("--run-dir", default=None, help="run folder (instead of --run)")
    parser.add_argument("--name", default=None, help="output folder under models/ (default: the task)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    parser.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                        help="stop with an error after this optimizer step, as a crash would (to check resuming)")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="override one params key (value read as YAML)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from brainvlm.app.params import ParamsError
    from brainvlm.train import distributed

    try:
        params = study_params(args.study, Path(args.params), parse_overrides(args.p))
    except ParamsError as exc:
        print(f"brainvlm train: {exc}", file=sys.stderr)
        return 1
    run_dir = Path(args.run_dir) if args.run_dir else _reports_dir() / (args.run or Path(args.params).stem)
    distributed.init_distributed()
    rank, size = distributed.world()
    try:
        trained = study_module(args.study).train(params, args.task, run_dir, name=args.name, resume=args.resume,
                                                 stop_after=args.stop_after, progress=not args.no_progress)
        distributed.barrier()
    finally:
        distributed.shutdown()
    if rank == 0 and not hasattr(trained, "result"):
        print(trained.describe())
    elif rank == 0:
        print(trained.result.plan.to_string(index=False))
        sharding = distributed.sharding_from(getattr(trained.settings, "sharding", "data_parallel")).mode
        print(f"{args.task}: {trained.result.steps} steps on {size} process(es) ({sharding}), "
              f"best val loss {trained.result.best_val_loss}, adapter in {trained.result.adapter_dir}")
    return 0


# ------------------------------------------------------------------------------------ concepts, captions
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
    parser = argparse.ArgumentParser(prog=f"brainvlm {kind}", description=main_job.__doc__)
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
        print(f"brainvlm {kind}: {exc}", file=sys.stderr)
        return 1
    print(_job_report(kind, summary, args.out))
    for example in summary["submission_check"]["examples"]:
        print(f"{summary['submission_check']['file']} {example}", file=sys.stderr)
    return 0 if summary["submission_check"]["valid"] else 1


def main_concepts(argv: list[str]) -> int:
    """``python -m brainvlm concepts ...``: see ``main_job``."""
    return main_job("concepts", argv)


def main_captions(argv: list[str]) -> int:
    """``python -m brainvlm captions ...``: see ``main_job``."""
    return main_job("captions", argv)


COMMANDS = {"sweep": main_sweep, "compare": main_compare,
            "validate": main_validate, "check-submission": main_check_submission, "evaluate": main_evaluate,
            "predict": main_predict, "train": main_train, "concepts": main_concepts,
            "captions": main_captions}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)
