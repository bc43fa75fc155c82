"""``calsync integrations``: connect, import, list and disconnect people's calendars."""

from __future__ import annotations

import sys
from typing import BinaryIO

import click

from sync.cli.delivery import delivering
from sync.cli.output import cell, emit_json, json_option, table
from sync.cli.usage import OneLineGroup
from sync.core.states import Link


@click.group(cls=OneLineGroup)
def integrations() -> None:
    """People's connected calendars (Google, Outlook) and their health."""


def _enqueue(session_id: str) -> None:
    from sync.engine.tasks import enqueue

    enqueue(session_id)


@integrations.command()
@click.argument("user_id", metavar="USER")
@click.argument("provider", type=click.Choice(["google", "outlook"]))
@click.option("--callback", metavar="URL",
              help="Finish a consent an earlier connect of USER printed: the whole URL the browser was redirected "
                   "to, not just the code in it.")
def connect(user_id: str, provider: str, callback: str | None) -> None:
    """Connect USER's calendar: print a consent URL, then take the redirect back.

    At a terminal: open the printed URL as USER and consent, then paste the URL
    the browser was redirected to, or only the code in it (the prompt pairs it
    with the URL it just printed).

    With --callback URL: finish a consent started by an earlier connect of USER
    without a prompt. It needs the whole redirected URL, whose signed state says
    whose consent it is; a bare code has none and is refused. No new consent
    URL is printed.

    A redirect from someone else's consent (or for the other provider) is
    refused and changes nothing. The refresh token is stored encrypted and
    never printed; USER's sessions then move from emailed invites to their
    calendar.
    """
    from sync import accounts as svc
    from sync.engine.runtime import get_runtime

    rt = get_runtime()
    state = None
    if callback is None:
        url, state = svc.connect_url(rt, user_id, provider)
        click.echo(f"Open this URL as {user_id} and consent:\n{url}")
        pasted = click.prompt("Paste the URL you were redirected to (or just the code)")
    else:
        pasted = callback
    with delivering():
        svc.complete_connect(rt, pasted, _enqueue, state=state, user_id=user_id, provider=provider)
    click.echo(f"{user_id}\tconnected\t{provider}")


@integrations.command(name="import")
@click.argument("file", type=click.File("rb"), metavar="FILE|-")
@json_option
def import_(file: BinaryIO, as_json: bool) -> None:
    """Import refresh tokens the platform already holds (one object or an array).

    Each element stands alone, one line each; secrets are encrypted on the way
    in and never printed. With the broker down an element is still stored and
    reported "not queued": storing it recorded the re-plan of the person's
    sessions, which `calsync sweep` (and each worker's periodic sweep) enqueues
    once the broker is back. Exits 1 if any element was rejected or not queued.
    """
    from sync import accounts as svc
    from sync.core.session import load_json
    from sync.engine.runtime import get_runtime

    items = load_json(file.read())
    unqueued: dict[int, str] = {}
    with delivering():
        results = svc.import_integrations(get_runtime(), items, _enqueue, unqueued=unqueued)
    if as_json:
        emit_json([{"index": r.index, "user_id": r.user_id, "ok": r.ok, "queued": r.ok and r.index not in unqueued,
                    "errors": [{"field": e.field, "reason": e.reason} for e in r.errors],
                    **({"broker_error": f"broker error: {unqueued[r.index]}"} if r.index in unqueued else {})}
                   for r in results])
    else:
        for r in results:
            if r.errors:
                outcome, detail = "invalid", "; ".join(str(e) for e in r.errors)
            elif r.index in unqueued:
                outcome = "not queued"
                detail = (f"imported; broker error: {unqueued[r.index]} (check CALSYNC_BROKER_URL; "
                          "`calsync sweep` enqueues the sessions once it is back)")
            else:
                outcome, detail = "ok", "imported"
            click.echo(f"{cell(r.user_id or '-')}\t{outcome}\t{cell(detail)}")
    if unqueued or not all(r.ok for r in results):
        sys.exit(1)


@integrations.command(name="list")
@click.option("--status", type=click.Choice([s.value for s in Link]))
@json_option
def list_(status: str | None, as_json: bool) -> None:
    """List integrations; exits 1 if any listed one needs a reconnect."""
    from sync import accounts as svc
    from sync.engine.runtime import get_runtime

    rows = svc.list_integrations(get_runtime(), status)
    if as_json:
        emit_json([r.as_dict() for r in rows])
    else:
        table(["user", "provider", "account", "calendar", "status", "reason", "updated"],
              [[r.user_id, r.provider, r.account_email, r.calendar_id, r.status, r.reason, r.updated_at]
               for r in rows])
    if any(r.status == Link.NEEDS_RECONNECT for r in rows):
        sys.exit(1)


@integrations.command()
@click.argument("user_id", metavar="USER")
@json_option
def disconnect(user_id: str, as_json: bool) -> None:
    """Withdraw USER's calendar events, revoke the token, and send them invites by email instead."""
    from sync import accounts as svc
    from sync.engine.reconcile import reconcile
    from sync.engine.runtime import get_runtime

    rt = get_runtime()
    result = svc.disconnect(rt, user_id, reconcile_now=lambda sid: reconcile(rt, sid))
    if as_json:
        emit_json(result.as_dict())
    else:
        if result.remaining:
            click.echo(f"{user_id}\tdisconnecting\t{result.remaining} calendar copies still to remove; "
                       "retried automatically, the token is revoked once none is left (`calsync status`)")
        else:
            click.echo(f"{user_id}\tdisconnected\t{len(result.sessions)} sessions moved to email"
                       f"{'' if result.revoked else ' (token could not be revoked; it may already be dead)'}")


@integrations.command()
@click.argument("user_id", metavar="USER")
@click.option("--provider", type=click.Choice(["google", "outlook"]), help="Go straight to this provider.")
@click.option("--return-to", metavar="URL", help="Where the browser goes once connected (a CALSYNC_RETURN_HOSTS host).")
@json_option
def link(user_id: str, provider: str | None, return_to: str | None, as_json: bool) -> None:
    """Print a signed, single-use connect link for USER to open in a browser (`calsync serve` answers it)."""
    from sync.accounts.links import create_link
    from sync.engine.runtime import get_runtime

    made = create_link(get_runtime(), user_id, provider, return_to)
    if as_json:
        emit_json({"url": made.url, "expires_at": made.expires_at.isoformat()})
    else:
        click.echo(f"{made.url}\nexpires {made.expires_at.isoformat()}")
