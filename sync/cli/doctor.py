"""``calsync doctor``: one line per part calsync depends on, ok or failed with the reason."""

from __future__ import annotations

import sys

import click

from sync.cli.output import emit_json, json_option
from sync.cli.usage import OneLineCommand


@click.command(cls=OneLineCommand)
@json_option
def doctor(as_json: bool) -> None:
    """Check configuration, database, broker, SMTP, secret keys and provider endpoints.

    Every check runs even when an earlier one failed; exits 1 if any failed.
    """
    from sync.ops.doctor import run_checks

    checks = run_checks()
    if as_json:
        emit_json({"ok": all(c.ok for c in checks), "checks": [c.as_dict() for c in checks]})
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            # click.echo drops the colour when stdout is not a terminal.
            verdict = click.style("ok    ", fg="green") if c.ok else click.style("failed", fg="red", bold=True)
            click.echo(f"{verdict}  {c.name:<{width}}  {' '.join(c.detail.split())}")
    if not all(c.ok for c in checks):
        sys.exit(1)
