"""``calsync integrations``: connect, import, list and disconnect people's calendars."""

from __future__ import annotations

import sys
from typing import BinaryIO

import click

from sync.cli.delivery import delivering
from sync.cli.output import emit_json, json_option, table
from sync.cli.usage import OneLineGroup


@click.group(cls=OneLineGroup)
def integrations() -> None:
    """People's connected calendars (Google, Outlook) and their health."""


def _enqueue(session_id: str) -> None:
    from sync.tasks import enqueue

    enqueue(session_id)


@integrations.command()
@click.argument("user_id", metavar="USER")
@click.argument("provider", type=click.Choice(["google", "outlook"]))
@click.option("--callback", help="The redirected URL (or code), instead of pasting it at the prompt.")
def connect(user_id: str, provider: str, callback: str | None) -> None:
    """Print the consent URL for USER, then take the redirected URL (or code) back.

    The flow is bound to USER by a signed state and PKCE; the refresh token is
    stored encrypted and never printed. The person's sessions then move from
    emailed invites to their calendar.
    """
    from sync import integrations as svc
    from sync.runtime import get_runtime

    rt = get_runtime()
    url, state = svc.connect_url(rt, user_id, provider)
    click.echo(f"Open this URL as {user_id} and consent:\n{url}", err=callback is not None)
    pasted = callback or click.prompt("Paste the URL you were redirected to (or just the code)")
    with delivering():
        svc.complete_connect(rt, pasted, _enqueue, state=state)
    click.echo(f"{user_id}\tconnected\t{provider}")


@integrations.command(name="import")
@click.argument("file", type=click.File("rb"), metavar="FILE|-")
@json_option
def import_(file: BinaryIO, as_json: bool) -> None:
    """Import refresh tokens the platform already holds (one object or an array).

    Each element stands alone; secrets are encrypted on the way in and never
    printed. Exits 1 if any element was rejected.
    """
    from sync import integrations as svc
    from sync.runtime import get_runtime
    from sync.session import load_json

    items = load_json(file.read())
    with delivering():
        results = svc.import_integrations(get_runtime(), items, _enqueue)
    if as_json:
        emit_json([{"index": r.index, "user_id": r.user_id, "ok": r.ok,
                    "errors": [{"field": e.field, "reason": e.reason} for e in r.errors]} for r in results])
    else:
        for r in results:
            detail = "; ".join(str(e) for e in r.errors) if r.errors else "imported"
            click.echo(f"{r.user_id or '-'}\t{'ok' if r.ok else 'invalid'}\t{detail}")
    if not all(r.ok for r in results):
        sys.exit(1)


@integrations.command(name="list")
@click.option("--status", type=click.Choice(["active", "needs_reconnect", "disconnecting", "disconnected"]))
@json_option
def list_(status: str | None, as_json: bool) -> None:
    """List integrations; exits 1 if any listed one needs a reconnect."""
    from sync import integrations as svc
    from sync.runtime import get_runtime

    rows = svc.list_integrations(get_runtime(), status)
    if as_json:
        emit_json(rows)
    else:
        table(["user", "provider", "account", "calendar", "status", "reason", "updated"],
              [[r["user_id"], r["provider"], r["account_email"], r["calendar_id"], r["status"], r["reason"],
                r["updated_at"]] for r in rows])
    if any(r["status"] == "needs_reconnect" for r in rows):
        sys.exit(1)


@integrations.command()
@click.argument("user_id", metavar="USER")
@json_option
def disconnect(user_id: str, as_json: bool) -> None:
    """Withdraw USER's calendar events, revoke the token, and send them invites by email instead."""
    from sync import integrations as svc
    from sync.reconcile import reconcile
    from sync.runtime import get_runtime

    rt = get_runtime()
    result = svc.disconnect(rt, user_id, reconcile_now=lambda sid: reconcile(rt, sid))
    if as_json:
        emit_json(result)
    else:
        if result["remaining"]:
            click.echo(f"{user_id}\tdisconnecting\t{result['remaining']} calendar copies still to remove; "
                       "retried automatically, the token is revoked once none is left (`calsync status`)")
        else:
            click.echo(f"{user_id}\tdisconnected\t{len(result['sessions'])} sessions moved to email"
                       f"{'' if result['revoked'] else ' (token could not be revoked; it may already be dead)'}")
