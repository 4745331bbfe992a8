"""Entrypoint of a Ray job: `python -m workers.job archive SRC -o DEST [...]` (any `sr-geo` subcommand).

    ray job submit --address http://HEAD:8265 --working-dir . -- python -m workers.job archive SRC -o DEST

Ray's job supervisor sets RAY_ADDRESS for the entrypoint. Connecting once here, before the command
runs, makes every `ray_session()` below reuse this connection, and with it the job's runtime
environment (working dir, env vars), which Ray then gives every actor. Prefect needs no server: it
reports to PREFECT_API_URL (or prefect_api_url in the settings) when set, else runs ephemeral.

This is the one module of `workers` that imports `flows`: it is the top of the stack on a Ray node,
and nothing imports it.
"""

from __future__ import annotations

import os
import sys

from workers.cluster import ray_session


def main(argv: list[str] | None = None) -> None:
    # A busy head node can take longer than Prefect's default 20 s to start the ephemeral server.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    from flows.cli import main as sr_geo  # after the line above: Prefect reads settings on import

    with ray_session():
        sr_geo(args=sys.argv[1:] if argv is None else argv, prog_name="python -m workers.job")


if __name__ == "__main__":
    main()
