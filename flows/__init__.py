"""Prefect flows and the `sr-geo` command line, on top of the library and the Ray workers."""
