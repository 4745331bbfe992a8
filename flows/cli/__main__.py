"""`python -m flows.cli` is `sr-geo`."""

from flows.cli import main

main()
