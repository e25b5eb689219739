"""`python -m services.console`: serve the console (see services.console.serve)."""

import sys

from services.console.serve import main

sys.exit(main())
