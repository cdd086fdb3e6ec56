"""``python -m rangerlab``: the lab's command line (see ``rangerlab.lab.cli``)."""

import sys

from .lab.cli import main

sys.exit(main())
