"""`python -m flows.cli` is `sr-geo`."""

import sys

from flows.cli import main

sys.exit(main())
