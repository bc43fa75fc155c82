"""``calsync sessions``: intake from the platform, cancellation, and where one session landed."""

from __future__ import annotations

import sys
from typing import BinaryIO

import click

from sync.cli.delivery import delivering
from sync.cli.output import cell, emit_json, fields, json_option, table
from sync.cli.usage import OneLineGroup


@click.group(cls=OneLineGroup)
def sessions() -> None:
    """Take sessions in, cancel them, and see each participant's copy."""


@sessions.command()
@click.argument("file", type=click.File("rb"), metavar="FILE|-")
@json_option
def upsert(file: BinaryIO, as_json: bool) -> None:
    """Store sessions from FILE (or - for stdin): one JSON object or an array.

    Each element stands alone: a bad one is reported and stores nothing, the
    others go through. Exits 1 if any element was invalid, stale, a version
    conflict, could not be stored, or was stored but could not be enqueued.
    """
    from sync.api import upsert_sessions
    from sync.core.session import load_json

    items = load_json(file.read())
    with delivering():
        results = upsert_sessions(items)
    if as_json:
        emit_json([r.as_dict() for r in results])
    else:
        for r in results:
            if r.errors:
                detail = "; ".join(str(e) for e in r.errors)
            elif r.outcome == "stale":
                detail = f"version {r.version} is older than stored version {r.stored_version}; not applied"
            else:
                detail = f"version {r.version}"
            if r.queued is False:
                detail += "; stored, not enqueued (broker unreachable)"
            click.echo(f"{cell(r.session_id or '-')}\t{r.outcome}\t{cell(detail)}")
    unqueued = [r.session_id for r in results if r.queued is False]
    if unqueued:
        click.echo(f"broker error: stored but not enqueued: {', '.join(map(str, unqueued))} (check CALSYNC_BROKER_URL;"
                   " `calsync sweep` enqueues them once it is back)", err=True)
    if unqueued or not all(r.ok for r in results):
        sys.exit(1)


@sessions.command()
@click.argument("session_id", metavar="ID")
@json_option
def cancel(session_id: str, as_json: bool) -> None:
    """Cancel session ID: every participant's copy is withdrawn.

    Exits 1 if the cancellation was stored but could not be enqueued (the
    sweeper delivers it once the broker is back).
    """
    from sync.api import cancel_session

    with delivering():
        result = cancel_session(session_id)
    if as_json:
        emit_json(result.as_dict())
    else:
        line = f"{session_id}\t{'cancelled' if result.outcome == 'updated' else 'already cancelled'}"
        click.echo(line + ("\tstored, not enqueued (broker unreachable)" if result.queued is False else ""))
    if result.queued is False:
        click.echo("broker error: stored but not enqueued (check CALSYNC_BROKER_URL; `calsync sweep` enqueues it "
                   "once it is back)", err=True)
        sys.exit(1)


@sessions.command()
@click.argument("session_id", metavar="ID")
@json_option
def show(session_id: str, as_json: bool) -> None:
    """Show session ID and each participant's placement. Exits 1 if a placement failed."""
    from zoneinfo import ZoneInfo

    from sync.api import get_session

    view = get_session(session_id)
    data = view.as_dict()
    if as_json:
        emit_json(data)
    else:
        s = view.session
        zone = ZoneInfo(s.timezone)
        start, end = s.start.astimezone(zone), s.end.astimezone(zone)
        fields([
            ("id", s.id), ("title", s.title), ("program", s.program), ("status", s.status),
            ("version", s.version),
            ("when", f"{start:%Y-%m-%d %H:%M}–{end:%H:%M} {s.timezone}"),
            ("meeting_url", s.meeting_url), ("location", s.location), ("view_url", s.view_url),
            ("participants", ", ".join(f"{p.name or p.email} ({p.role})" for p in s.participants)),
            ("sync", "settled" if view.synced_revision >= view.revision
             else f"lagging (revision {view.revision}, settled at {view.synced_revision})"),
        ])
        click.echo()
        table(["user", "channel", "state", "live", "recipient", "sequence", "attempts", "last_error"],
              [[p["user_id"], p["channel"], p["state"], p["live"], p["recipient"], p["sequence"],
                p["attempts"], p["last_error"]] for p in data["placements"]],
              title="placements")
    if any(p["state"] == "failed" for p in data["placements"]):
        sys.exit(1)
