"""The ``harness`` command. Each subcommand lives in its own module and is imported on use.

Bad input of any kind ends with one line naming what is wrong and exit status 2, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from harness.errors import HarnessError

#: command name -> "module:attribute" of a click command
COMMANDS = {
    "sensors": "harness.commands.measure:sensors",
    "measure": "harness.commands.measure:measure",
    "validate": "harness.commands.run:validate",
    "run": "harness.commands.run:run",
    "report": "harness.report.cli:report",
    "leaderboard": "harness.report.cli:leaderboard",
    "compare": "harness.report.cli:compare",
    "recommend": "harness.report.cli:recommend",
    "site": "harness.report.cli:site",
    "export": "harness.exports.cli:export",
    "check": "harness.report.cli:check",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="energy-harness", prog_name="harness")
def cli() -> None:
    """Measure what machine learning costs in energy and carbon, and what it buys."""


def main(argv: list[str] | None = None) -> int:
    try:
        rv = cli.main(args=argv, prog_name="harness", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("harness: aborted", err=True)
        return 130
    except click.ClickException as e:
        # usage errors: one line, exit 2
        msg = e.format_message().splitlines()[0] if e.format_message() else str(e)
        ctx_name = getattr(getattr(e, "ctx", None), "command_path", "harness")
        click.echo(f"{ctx_name}: {msg}", err=True)
        return 2
    except HarnessError as e:
        click.echo(f"harness: {e}", err=True)
        return 2
    except OSError as e:  # a full disk, a folder in the way: one line, never a traceback
        from harness.store import write_error

        click.echo(f"harness: {write_error(e)}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("harness: interrupted", err=True)
        return 130
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
