"""One module per ``brainvlm`` subcommand, each with ``HELP`` (one line) and ``main(argv) -> int``."""
