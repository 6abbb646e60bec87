"""``brainvlm concepts``: detect the concepts of an image set (see ``app.commands.jobs``)."""

from __future__ import annotations

from brainvlm.app.commands.jobs import main_job

HELP = "detect concepts of an image set: ID,CUIs and names files (resumable)"


def main(argv: list[str]) -> int:
    """``brainvlm concepts ...``: see ``jobs.main_job``."""
    return main_job("concepts", argv)
