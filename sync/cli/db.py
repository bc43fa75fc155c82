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
    from sqlalchemy.engine import make_url

    from sync.config import get_settings
    from sync.store.migrate import pending_revisions
    from sync.store.migrate import upgrade as run_upgrade

    url = get_settings().database_url
    before, _ = pending_revisions(url)
    run_upgrade(url)
    after, head = pending_revisions(url)
    shown = make_url(url).render_as_string(hide_password=True)
    if as_json:
        emit_json({"database": shown, "from": before, "to": after, "head": head})
    elif before == after:
        click.echo(f"{shown}: already at {after} (head)")
    else:
        click.echo(f"{shown}: {before or '(empty)'} → {after} (head)")
