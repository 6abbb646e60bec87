"""``brainvlm check-submission``: every violation of ImageCLEF's format rules in a submission CSV."""

from __future__ import annotations

import argparse

from brainvlm.app.commands.common import fail

HELP = "check an ImageCLEF submission CSV and list every violation"


def parser() -> argparse.ArgumentParser:
    """Arguments of ``brainvlm check-submission``."""
    out = argparse.ArgumentParser(prog="brainvlm check-submission",
                                  description="Check an ImageCLEFmedical Caption submission file "
                                              "(docs/concepts.md).")
    out.add_argument("submission", help="the ID,CUIs or ID,Caption CSV to submit")
    out.add_argument("--ids", required=True, help="CSV whose first column ID lists the images in order "
                                                  "(an ids file or the gold file)")
    out.add_argument("--kind", default="concepts", choices=["concepts", "captions"])
    return out


def main(argv: list[str]) -> int:
    """``brainvlm check-submission S.csv --ids IDS.csv [--kind concepts|captions]``: every violation of the
    ImageCLEF format rules with its row; exit 1 if any."""
    args = parser().parse_args(argv)
    from brainvlm.eval.clef_files import check_submission

    try:
        violations = check_submission(args.submission, args.ids, args.kind)
    except (ValueError, OSError) as exc:
        return fail("check-submission", exc)
    for violation in violations:
        print(f"{args.submission} {violation}")
    print(f"{args.submission}: {len(violations)} violations" if violations else f"{args.submission}: valid")
    return 1 if violations else 0
