"""``brainvlm label-reports``: CheXpert-14 labels of free-text reports, in the CheXpert labeler's file layout."""

from __future__ import annotations

import argparse

from brainvlm.app.commands.common import fail

HELP = "label free-text reports with CheXpert-14 rule labels (the CheXpert labeler's CSV layout)"


def parser() -> argparse.ArgumentParser:
    """Arguments of ``brainvlm label-reports``."""
    out = argparse.ArgumentParser(prog="brainvlm label-reports",
                                  description="Label reports with the rule-based CheXpert-14 labeler "
                                              "(docs/report_data.md): 1.0 positive, 0.0 negative, -1.0 "
                                              "uncertain, blank not mentioned.")
    out.add_argument("reports", help="CSV of reports: one report per row, no header (the CheXpert labeler's "
                                     "reports file)")
    out.add_argument("--out", required=True, help="labels CSV to write: Reports, then the 14 observations")
    return out


def main(argv: list[str]) -> int:
    """``brainvlm label-reports REPORTS.csv --out LABELS.csv``: write the labels; exit 2 on a bad file."""
    args = parser().parse_args(argv)
    from brainvlm.eval.chexpert_files import ReportsFileError, label_file

    try:
        count = label_file(args.reports, args.out)
    except ReportsFileError as exc:
        return fail("label-reports", exc, status=2)
    print(f"{args.out}: {count} reports labelled")
    return 0
