"""`python -m deploy.stack [--db D] [--replicas N] up|down|...` (the command line is in cli)."""

import sys

from deploy.stack.cli import main

sys.exit(main())
