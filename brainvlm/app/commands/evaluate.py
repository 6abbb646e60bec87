"""``brainvlm evaluate``: score predictions against samples, or an ImageCLEF concept submission."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from brainvlm.app.commands.common import UsageError, fail, split_list
from brainvlm.core.jsonio import dumps

HELP = "score predictions against samples, or a submission (--clef-concepts)"


LABELS_FORMS = ("give male,female, a JSON object such as '{\"male\": [\"m\", \"man\"]}', or a YAML file "
                "of label -> list of synonyms")


def _labels_mapping(value: object, source: str) -> dict | list:
    """A labels value read from JSON or YAML: a mapping of label -> synonyms (or a list of labels)."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    if not isinstance(value, dict) or not value:
        raise UsageError(f"--labels {source}: holds {type(value).__name__}, not a mapping of label -> synonyms; "
                         f"{LABELS_FORMS}")
    bad = [k for k, v in value.items() if not isinstance(v, (list, str)) or
           (isinstance(v, list) and not all(isinstance(s, str) for s in v))]
    if bad:
        raise UsageError(f"--labels {source}: the synonyms of {bad} are not a list of strings; {LABELS_FORMS}")
    return value


def parse_labels(value: str | None) -> dict | list | None:
    """``--labels``: a JSON object, a YAML/JSON file of label -> synonyms, or ``male,female``.

    Raises:
        UsageError: text that is none of these, naming the flag and what to give.
    """
    if value is None:
        return None
    if value.lstrip().startswith("{"):
        try:
            return _labels_mapping(json.loads(value), repr(value))
        except json.JSONDecodeError as exc:
            raise UsageError(f"--labels {value!r}: not a JSON object ({exc.msg} at character {exc.pos}); "
                             f"{LABELS_FORMS}") from None
    if Path(value).is_file():
        return _labels_mapping(_yaml_file(Path(value)), str(value))
    labels = split_list(value)
    if not labels:
        raise UsageError(f"--labels {value!r} names no label; {LABELS_FORMS}")
    return labels


def _yaml_file(path: Path) -> object:
    """The YAML document of a ``--labels`` file (UTF-8, no key twice)."""
    from brainvlm.app.yaml_strict import safe_load
    from brainvlm.core.textfiles import NotUtf8Error, read_utf8

    try:
        return safe_load(read_utf8(path))
    except NotUtf8Error as exc:
        raise UsageError(f"--labels {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UsageError(f"--labels {where}: not valid YAML ({getattr(exc, 'problem', None) or exc}); "
                         f"{LABELS_FORMS}") from None


def check_replicates(args: argparse.Namespace) -> None:
    """``--n-boot`` and ``--n-boot-text`` are 0 (no intervals) or positive."""
    for flag, value in (("--n-boot", args.n_boot), ("--n-boot-text", args.n_boot_text)):
        if value < 0:
            raise UsageError(f"{flag} {value}: give 0 (no intervals) or a positive number of bootstrap replicates")


def allowed_cuis(value: str | None) -> list[str] | None:
    """``--allowed``: ``manual`` (the ImageCLEF 2025/2026 allow-list) or comma-separated CUIs; an item that
    is not a CUI is an error naming it."""
    from brainvlm.eval.clef import parse_allowed

    return None if value is None else parse_allowed(value)


def parser() -> argparse.ArgumentParser:
    """Arguments of ``brainvlm evaluate``; its help lists the ``--clef-concepts`` form's options too."""
    out = argparse.ArgumentParser(prog="brainvlm evaluate", formatter_class=argparse.RawDescriptionHelpFormatter,
                                  description="Score a predictions JSONL against a canonical samples JSONL.",
                                  epilog=clef_help())
    out.add_argument("--samples", required=True, help="canonical samples JSONL")
    out.add_argument("--predictions", required=True, help='JSONL of {"id", "prediction"}')
    out.add_argument("--metrics", default=None, help="comma-separated metric names (default: all that apply)")
    out.add_argument("--out", default=None, help="write the metrics JSON here")
    out.add_argument("--group-by", default=None, help="comma-separated metadata columns, e.g. domain")
    out.add_argument("--labels", default=None, help="male,female | JSON object | YAML file of label -> synonyms")
    out.add_argument("--tokenize", default="ptb", choices=["ptb", "none"], help="text metric tokenisation")
    out.add_argument("--fallback", type=float, default=None, help="value of an unparseable numeric answer")
    out.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (0: no intervals)")
    out.add_argument("--n-boot-text", type=int, default=200, help="bootstrap replicates for text metrics")
    out.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    out.add_argument("--unit", default=None, help="bootstrap unit column (default: query_subject or image)")
    out.add_argument("--labeler", default=None, choices=["rule"],
                     help="label report text with the rule-based CheXpert-14 labeler (CheXpert-14 (rule) F1)")
    out.add_argument("--partial", action="store_true",
                     help="score a partial run: samples without a prediction count as wrong (default: error)")
    out.add_argument("--allowed", default=None,
                     help="concepts: CUIs of the secondary ImageCLEF F1 (comma-separated), or 'manual' "
                          "for the 2025/2026 list (default: no secondary score)")
    return out


def clef_parser() -> argparse.ArgumentParser:
    """Arguments of ``brainvlm evaluate --clef-concepts``."""
    out = argparse.ArgumentParser(prog="brainvlm evaluate --clef-concepts",
                                  description="Score a concept submission as ImageCLEF's evaluator does")
    out.add_argument("--clef-concepts", required=True, help="gold ID,CUIs file (primary score)")
    out.add_argument("--manual", default=None, help="manually validated ID,CUIs gold (secondary score)")
    out.add_argument("--submission", required=True, help="the ID,CUIs submission file")
    out.add_argument("--allowed", default=None,
                     help="comma-separated CUIs of the secondary score (default: the 2025/2026 list)")
    out.add_argument("--out", default=None, help="write the scores JSON here")
    out.add_argument("--per-image", default=None, help="write the per-image F1 CSV here")
    return out


def clef_help() -> str:
    """The options of ``brainvlm evaluate --clef-concepts``, as its own help lists them."""
    text = clef_parser().format_help()
    options = text[text.index("options:"):].split("\n", 1)[1]
    kept = "\n".join(line for line in options.splitlines() if "-h, --help" not in line
                     and "show this help message" not in line)
    return ("scoring an ImageCLEF concept submission instead (no samples, no predictions):\n"
            "  brainvlm evaluate --clef-concepts GOLD.csv --submission S.csv [--manual MANUAL.csv] ...\n" + kept)


def main_clef(argv: list[str]) -> int:
    """``brainvlm evaluate --clef-concepts GOLD.csv [--manual MANUAL.csv] --submission S.csv``: the primary
    and secondary scores without a model; prints the scores JSON; exit 1 with the error on stderr."""
    from brainvlm.eval.clef import MANUAL_CUIS, evaluate_clef_files, parse_allowed

    args = clef_parser().parse_args(argv)
    try:
        allowed = tuple(MANUAL_CUIS) if args.allowed is None else parse_allowed(args.allowed)
        result = evaluate_clef_files(args.clef_concepts, args.submission, args.manual, allowed, out=args.out,
                                     per_image_out=args.per_image)
    except (ValueError, OSError) as exc:
        return fail("evaluate", exc)
    for warning in result["warnings"]:
        fail("evaluate", warning)
    print(dumps(result, indent=2))
    return 0


MATCHED_BY = {
    "question_id": "LLaVA-Med answers matched to samples by question id",
    "question_text": ("LLaVA-Med answers matched to samples by question text and order of occurrence (their "
                      "question ids are not the samples' question ids)"),
}


def _warn_unmatched(result: dict) -> None:
    """How predictions were matched, those that match no sample and samples without one, on stderr."""
    if result.get("predictions_matched_by") in MATCHED_BY:
        fail("evaluate", MATCHED_BY[result["predictions_matched_by"]])
    if result["n_extra_predictions"]:
        fail("evaluate", f"{result['n_extra_predictions']} prediction ids match no sample (first ten): "
                         f"{', '.join(result['unmatched_prediction_ids'])}")
    if result["n_missing_predictions"]:
        fail("evaluate", f"{result['n_missing_predictions']} samples have no prediction, scored as wrong "
                         f"(first ten): {', '.join(result['missing_prediction_ids'])}")


def main(argv: list[str]) -> int:
    """``brainvlm evaluate --samples S.jsonl --predictions P.jsonl [--metrics a,b] [--out M.json]
    [--group-by domain]``; prints the metrics JSON; exit status 0, or 1 with the error on stderr.
    With ``--clef-concepts`` it scores an ImageCLEF submission instead (``main_clef``)."""
    if any(arg.split("=", 1)[0] == "--clef-concepts" for arg in argv):
        return main_clef(argv)
    from brainvlm.eval.evaluate import evaluate_files

    args = parser().parse_args(argv)
    try:
        check_replicates(args)
        labels = parse_labels(args.labels)
    except UsageError as exc:
        return fail("evaluate", exc, 2)
    try:
        result = evaluate_files(args.samples, args.predictions, metrics=split_list(args.metrics), out=args.out,
                                labels=labels, group_by=split_list(args.group_by),
                                tokenize=args.tokenize, fallback=args.fallback,
                                n_boot=args.n_boot, n_boot_text=args.n_boot_text, seed=args.seed, unit=args.unit,
                                partial=args.partial, labeler=args.labeler,
                                allowed_cuis=allowed_cuis(args.allowed))
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        return fail("evaluate", exc)
    _warn_unmatched(result)
    print(dumps(result, indent=2))
    return 0
