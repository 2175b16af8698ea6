"""``python -m gptff_core.cli``: the same program as ``gptff``."""

import sys

from gptff_core.cli.app import main

sys.exit(main())
