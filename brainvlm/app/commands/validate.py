"""``brainvlm validate``: check canonical sample files and print every issue."""

from __future__ import annotations

import argparse

HELP = "check canonical sample JSONL files (see docs/sample_format.md)"


def parser() -> argparse.ArgumentParser:
    """Arguments of ``brainvlm validate``."""
    out = argparse.ArgumentParser(prog="brainvlm validate",
                                  description="Check canonical sample files (docs/sample_format.md).")
    out.add_argument("files", nargs="+", help="JSONL (one sample per line) or JSON array files")
    out.add_argument("--image-root", default=None, help="folder the image paths are relative to")
    out.add_argument("--no-check-images", action="store_true", help="do not look up image files")
    return out


def issues_of_files(files: list[str], image_root: str | None, check_images: bool) -> tuple[list, int]:
    """Every issue of ``files`` (in order) and the number of samples read."""
    from brainvlm.data.validate import validate_counted

    issues, n_samples = [], 0
    for path in files:
        found, count = validate_counted(path, image_root, check_images)
        issues += found
        n_samples += count
    return issues, n_samples


def summary_line(n_files: int, n_samples: int, n_errors: int, note: str = "") -> str:
    """``N files, M samples, K errors`` and why images were not checked, if they were not."""
    return f"{n_files} files, {n_samples} samples, {n_errors} errors{note}"


def main(argv: list[str]) -> int:
    """``brainvlm validate FILE... [--image-root DIR] [--no-check-images]``: print issues; exit 1 if any."""
    args = parser().parse_args(argv)
    check = not args.no_check_images and args.image_root is not None
    issues, n_samples = issues_of_files(args.files, args.image_root, check)
    for issue in issues:
        print(issue)
    note = "" if check else " (image files not checked: " + (
        "--no-check-images)" if args.no_check_images else "no --image-root)")
    print(summary_line(len(args.files), n_samples, len(issues), note))
    return 0 if not issues else 1
