"""``brainvlm convert FORMAT IN --out OUT.jsonl``: a source file through its adapter into canonical samples,
written and then validated; every problem names the input file and line (or item) it came from."""

from __future__ import annotations

import argparse
from pathlib import Path

from brainvlm.app.commands.common import fail
from brainvlm.app.commands.validate import summary_line

HELP = "convert a VQA-RAD, LLaVA-Med, LLaVA, ROCOv2 or curriculum file to sample JSONL, then validate it"
FORMAT_HELP = {
    "vqa-rad": "IN: a VQA-RAD question file (trainset.json, testset.json)",
    "llava-med": "IN: a LLaVA-Med VQA JSONL file (question_id, image, text, gpt4_answer, domain)",
    "llava": "IN: LLaVA-classic records (id, image(s), conversations), a JSON array or JSONL",
    "roco": "IN: a folder in the ROCOv2 / ImageCLEF layout (also the image root); --split is the file prefix",
    "curriculum": "IN: a curriculum JSONL file (image, prompt, target, stage, mode)",
}


def parser() -> argparse.ArgumentParser:
    """Arguments of ``brainvlm convert``."""
    formats = "\n".join(f"  {name:<11} {text}" for name, text in FORMAT_HELP.items())
    out = argparse.ArgumentParser(prog="brainvlm convert", formatter_class=argparse.RawDescriptionHelpFormatter,
                                  description="Convert a source file to canonical sample JSONL "
                                              "(docs/vqa_data.md), then validate what was written.",
                                  epilog=f"formats:\n{formats}")
    out.add_argument("format", choices=list(FORMAT_HELP), metavar="FORMAT", help=", ".join(FORMAT_HELP))
    out.add_argument("source", metavar="IN", help="the input file (roco: folder)")
    out.add_argument("--out", required=True, metavar="OUT.jsonl", help="the samples file to write")
    out.add_argument("--image-root", default=None,
                     help="folder of the records' image paths: every image must exist under it (roco: IN)")
    out.add_argument("--split", default=None, help="train | val | test (default: named by the input's file "
                                                   "name; roco: the file prefix train | valid | test)")
    out.add_argument("--modality", default=None, help="the image parts' modality (default: other; "
                                                      "curriculum: xray)")
    out.add_argument("--dataset", default="llava_med", help="llava-med: metadata.dataset and the id prefix")
    out.add_argument("--task", default=None, help="llava: the samples' task (default: vqa); roco: concepts or "
                                                  "caption (default: both)")
    out.add_argument("--cohort-name", default="curriculum", help="curriculum: the id prefix")
    out.add_argument("--ehr-context", default=None, help="curriculum: ehr_context.jsonl to join by study id")
    out.add_argument("--chexpert", default=None, help="curriculum: chexpert_dict.json to join by study id")
    return out


def _options(args: argparse.Namespace):
    from brainvlm.data.conversion import ConvertOptions

    return ConvertOptions(split=args.split, image_root=args.image_root, modality=args.modality,
                          dataset=args.dataset, task=args.task, cohort_name=args.cohort_name,
                          ehr_context=args.ehr_context, chexpert=args.chexpert)


def located_issue(issue, origins: list[str]) -> str:
    """A validation issue of the written file, named by the input record it came from."""
    if issue.line is None or not 1 <= issue.line <= len(origins):
        return str(issue)
    sample_id = issue.sample_id if issue.sample_id is not None else "?"
    return (f"{origins[issue.line - 1]} [{sample_id}] {issue.path}: {issue.message} "
            f"(written as {issue.file}:{issue.line})")


def main(argv: list[str]) -> int:
    """``brainvlm convert FORMAT IN --out OUT.jsonl [--image-root DIR] [--split S] ...``: exit 0 when the
    written samples validate, 1 with every problem otherwise."""
    args = parser().parse_args(argv)
    from brainvlm.core.jsonio import JsonError, write_jsonl
    from brainvlm.data.conversion import convert
    from brainvlm.data.validate import validate_counted

    out = Path(args.out)
    if out.exists() and out.resolve() == Path(args.source).resolve():
        return fail("convert", f"--out {out} is the input file; write the samples elsewhere", 2)
    try:
        converted = convert(args.format, args.source, _options(args))
    except (ValueError, OSError) as exc:  # AdapterError, JsonError, a missing file
        return fail("convert", exc)
    origins = [origin for origin, _ in converted]
    try:
        write_jsonl([sample for _, sample in converted], out)
    except (JsonError, ValueError, OSError) as exc:
        return fail("convert", f"{out}: {exc}")
    image_root = args.source if args.format == "roco" else args.image_root
    issues, n_samples = validate_counted(out, image_root, image_root is not None)
    for issue in issues:
        print(located_issue(issue, origins))
    if issues:
        print(summary_line(1, n_samples, len(issues)) + f"; {out} does not validate")
        return 1
    checked = "" if image_root is not None else " (image files not checked: no --image-root)"
    print(f"{args.source} -> {out}: {n_samples} samples, valid{checked}")
    return 0
