"""``brainvlm captions``: caption an image set (see ``app.commands.jobs``)."""

from __future__ import annotations

from brainvlm.app.commands.jobs import main_job

HELP = "caption an image set: an ID,Caption file (resumable)"


def main(argv: list[str]) -> int:
    """``brainvlm captions ...``: see ``jobs.main_job``."""
    return main_job("captions", argv)
