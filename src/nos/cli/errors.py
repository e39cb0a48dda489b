"""How every ``nos`` command fails: one line on stderr, ``nos <command>: <what is wrong>``.

Exit status 2 means bad input (a wrong option, an unreadable or invalid file), 1 a failure while
running (no cluster access, NVML refused, a missing optional dependency). Click's own usage errors
are shortened to the same one line, with a pointer to ``--help`` instead of the usage text. The
readers already word their errors as one line (pydantic's included: ``nos.config``,
``nos.sim.scenario.one_line``); commands raise ``BadInput``/``CliError`` with that text.
"""

from __future__ import annotations

import sys
from typing import Any

import click

BAD_INPUT = 2
FAILURE = 1


def _command_path() -> str:
    ctx = click.get_current_context(silent=True)
    return ctx.command_path if ctx is not None else "nos"


class CliError(click.ClickException):
    """A one-line failure of the running command (exit status 1)."""

    exit_code = FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.command_path = _command_path()

    def show(self, file: Any = None) -> None:
        click.echo(f"{self.command_path}: {self.format_message()}", err=True)


class BadInput(CliError):
    """The user's input cannot be used (exit status 2)."""

    exit_code = BAD_INPUT


def _usage_line(e: click.UsageError) -> str:
    path = e.ctx.command_path if e.ctx is not None else "nos"
    return f"{path}: {e.format_message()} (see '{path} --help')"


class OneLineErrors:
    """Mixin for click commands and groups: errors are printed as one line (see module doc)."""

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        parent: Any = super()
        if not standalone_mode:
            return parent.main(args, prog_name, complete_var, False, **extra)
        try:
            rv = parent.main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as e:
            click.echo(_usage_line(e), err=True)
            sys.exit(e.exit_code)
        except CliError as e:
            e.show()
            sys.exit(e.exit_code)
        except click.ClickException as e:  # raised by a command without our classes
            path = " ".join(filter(None, (prog_name or "nos", getattr(self, "invoked", None))))
            click.echo(f"{path}: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(FAILURE)
        sys.exit(rv if isinstance(rv, int) else 0)


class Command(OneLineErrors, click.Command):
    """A ``nos`` sub-command (``@click.command(cls=Command)``)."""


class Group(OneLineErrors, click.Group):
    """The ``nos`` group: its sub-commands default to ``Command``."""

    command_class = Command
    invoked: str | None = None
    """The sub-command being run (names the command in errors raised outside our classes)."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        self.invoked = command.name if command is not None else name
        return name, command, rest
