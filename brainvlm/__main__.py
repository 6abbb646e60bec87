"""``python -m brainvlm``: see brainvlm.cli."""

import sys

from brainvlm.cli import main

sys.exit(main())
