"""The `sr-geo` command: one module per subcommand, errors as one line and a non-zero exit."""

from __future__ import annotations

import atexit
import gc
import importlib
import logging
import os
import signal
import sys

import click

from sr_geo import __version__
from sr_geo.errors import SrGeoError

# Quiet defaults for a terminal tool; each can still be overridden from the environment.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("GDAL_PAM_ENABLED", "NO")

# Subcommand → its module, imported only when it runs (click's lazy subcommands): a command that runs
# flows starts Prefect's temporary server before its own imports (torch and the pipeline, 1.2 s),
# see `flows.prefect_server.start_early`.
_COMMANDS = {"run": "flows.cli.run", "run-stack": "flows.cli.run_stack", "archive": "flows.cli.archive",
             "demo": "flows.cli.demo", "eval": "flows.cli.eval", "inspect": "flows.cli.inspect",
             "train": "flows.cli.train"}
_RUN_FLOWS = {"run", "run-stack", "archive", "demo", "eval"}

# The interpreter's exit would otherwise walk every object torch, Prefect and Ray made, in collections
# that find nothing left to free: 0.7 s of a 10 s run. Frozen at exit, they are left to the OS.
atexit.register(gc.freeze)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler cancelling the run, `kill`, `timeout`) raised where the run is, so it unwinds
    as Ctrl-C does: Ray and a temporary Prefect server stop, a training run saves its checkpoint, and the
    finished tiles stay in the work store for the rerun to resume from."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


class _RefusalsOnce(logging.Filter):
    """A refusal raised inside a flow (an `SrGeoError`: bad input only the run can see) reaches the terminal
    once, as the command's one line: Prefect's copies of it, the traceback and each failed state naming
    it, are dropped. Other failures keep their tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], SrGeoError):
            return False
        message = record.getMessage()
        return not any(f"{name}: " in message or f"{name}(" in message for name in _refusals(SrGeoError))


def _refusals(cls: type) -> set[str]:
    return {cls.__name__}.union(*(_refusals(sub) for sub in cls.__subclasses__()))


class _Group(click.Group):
    """Every error, click's usage errors included, as one `sr-geo: error: ...` line and exit code 2;
    a stopped run as one line that says how to resume, and the shell's exit code for its signal."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return importlib.import_module(_COMMANDS[name]).command if name in _COMMANDS else None

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] in _RUN_FLOWS and not ctx.resilient_parsing:
            from flows.prefect_server import start_early

            start_early()
        return super().resolve_command(ctx, args)

    def main(self, *args, **kwargs):
        signal.signal(signal.SIGTERM, _raise_terminated)
        for name in ("prefect.flow_runs", "prefect.task_runs"):  # the run loggers Prefect's engine reports on
            logging.getLogger(name).addFilter(_RefusalsOnce())
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except (click.ClickException, SrGeoError) as exc:
            message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
            click.echo(f"sr-geo: error: {message}", err=True)
            sys.exit(2)
        except (KeyboardInterrupt, click.Abort) as exc:  # click turns a KeyboardInterrupt into Abort from it
            terminated = isinstance(exc, Terminated) or isinstance(exc.__cause__, Terminated)
            click.echo(f"sr-geo: {'terminated' if terminated else 'interrupted'}; rerun the same command to resume",
                       err=True)
            sys.exit(128 + (signal.SIGTERM if terminated else signal.SIGINT))
        finally:
            from flows.prefect_server import discard_early

            discard_early()  # the command ended without a run to claim it: a refusal, --help


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="sr-geo")
def main() -> None:
    """Super-resolve georeferenced rasters: tiles in Zarr, models on Ray, flows on Prefect, COG out."""
