"""`python -m deploy.postgres up|down|clean|status|url|check` (the command line is in cli)."""

import sys

from deploy.postgres.cli import main

sys.exit(main())
