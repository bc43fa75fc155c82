"""``calsync db``: schema migrations on ``CALSYNC_DATABASE_URL``."""

from __future__ import annotations

import click

from sync.cli.output import emit_json, json_option
from sync.cli.usage import OneLineGroup


@click.group(cls=OneLineGroup)
def db() -> None:
    """Manage the database schema."""


@db.command()
@json_option
def upgrade(as_json: bool) -> None:
    """Apply every pending migration; safe to run on every deploy."""
    from alembic.util import CommandError
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from sync.cli.usage import UsageError
    from sync.config import get_settings
    from sync.store.migrate import pending_revisions
    from sync.store.migrate import upgrade as run_upgrade

    url = get_settings().database_url
    try:
        before, _ = pending_revisions(url)
        run_upgrade(url)
        after, head = pending_revisions(url)
    except CommandError as exc:
        # Alembic's own refusals; above all a revision this release does not know, because a newer
        # calsync migrated the database (a rolled-back deploy). Nothing to retry: the operator decides.
        text = " ".join(str(exc).split())
        hint = ("a newer calsync migrated this database: deploy that version, or check CALSYNC_DATABASE_URL"
                if "locate revision" in text else "check CALSYNC_DATABASE_URL")
        raise UsageError(f"cannot migrate the database: {text} ({hint})") from None
    except SQLAlchemyError as exc:
        # The root group's one line would say "run `calsync db upgrade`", which is this very command.
        text = str(getattr(exc, "orig", None) or exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise click.ClickException(f"database error: {first} (check CALSYNC_DATABASE_URL)") from None
    shown = make_url(url).render_as_string(hide_password=True)
    if as_json:
        emit_json({"database": shown, "from": before, "to": after, "head": head})
    elif before == after:
        click.echo(f"{shown}: already at {after} (head)")
    else:
        click.echo(f"{shown}: {before or '(empty)'} → {after} (head)")
