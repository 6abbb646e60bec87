"""``python -m brainvlm``: see brainvlm.app.cli."""

import sys

from brainvlm.app.cli import main

sys.exit(main())
