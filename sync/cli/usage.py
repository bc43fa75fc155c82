"""One-line usage errors for every command.

Click prints a bad flag as usage + hint + error (three lines); scripts and
cron jobs that drive calsync get one ``Error:`` line and exit status 2.
"""

from __future__ import annotations

from typing import Any

import click

#: Exit status for usage-like errors: bad input, unknown id, missing configuration
#: (the same status click uses for a bad flag).
USAGE_ERROR = 2


class UsageError(click.ClickException):
    """A calsync error the operator can fix; click prints it as one ``Error:`` line.

    The message is made one printable line here, whoever raised it, because it
    may quote what the operator typed (an id with CR/LF, a path with an ESC).
    """

    exit_code = USAGE_ERROR

    def format_message(self) -> str:
        from sync.cli.output import one_line

        return one_line(super().format_message())


def _one_line(exc: click.UsageError, ctx: click.Context) -> click.ClickException:
    return UsageError(f"{exc.format_message()} (see `{ctx.command_path} --help`)")


def _require_utf8(ctx: click.Context) -> None:
    """Refuse a text parameter (an id, a name, a date) that is not UTF-8, before any command uses it.

    Python hands non-UTF-8 argv bytes over as lone surrogates (``$'sess\\xff'`` becomes
    ``'sess\\udcff'``), which no database driver, HTTP client or JSON encoder accepts: each
    command would die of a UnicodeEncodeError. Paths are not checked — click gives them as
    ``Path`` or file objects, and a file name may be any bytes the filesystem allows.
    """
    for param in ctx.command.params:
        value = ctx.params.get(param.name) if param.name else None
        if not isinstance(value, str):
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise click.BadParameter(f"{value!r} is not UTF-8 text", ctx=ctx, param=param) from None


class _OneLineParsing:
    """Turns click's usage errors while parsing into one ``Error:`` line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            rest = super().parse_args(ctx, args)  # type: ignore[misc]
            _require_utf8(ctx)
            return rest
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            raise _one_line(exc, ctx) from None


class OneLineCommand(_OneLineParsing, click.Command):
    """A command whose usage errors are one line, exit 2."""


class OneLineGroup(_OneLineParsing, click.Group):
    """A group whose own and whose subcommands' usage errors are one line, exit 2."""

    command_class = OneLineCommand

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            raise _one_line(exc, ctx) from None
