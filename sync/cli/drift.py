"""``calsync drift scan``: ``diagnose session``'s comparison over upcoming calendar placements."""

from __future__ import annotations

import sys
from collections import Counter

import click

from sync.cli.diagnose import unverified
from sync.cli.output import emit_json, json_option, table
from sync.cli.usage import OneLineGroup

#: The widest --days window: a century. Sessions fall in the years 1900–9000, and a window past
#: year 9999 cannot even be computed (``now + timedelta(days=100_000_000)`` overflows), so a
#: larger value is an operator's typo, reported as one usage line rather than a traceback.
MAX_DAYS = 36_500


@click.group(cls=OneLineGroup)
def drift() -> None:
    """Find calendar copies that no longer match their session."""


@drift.command()
@click.option("--user", "user_id", metavar="ID", help="Only this person's calendar.")
@click.option("--all", "everything", is_flag=True, help="Everyone's calendars (the default).")
@click.option("--days", type=click.IntRange(min=1, max=MAX_DAYS), default=14, show_default=True,
              help=f"Sessions starting within this many days (1 to {MAX_DAYS:,}).")
@json_option
def scan(user_id: str | None, everything: bool, days: int, as_json: bool) -> None:
    """Compare upcoming calendar placements with their sessions (emailed invites cannot be read back).

    Exits 1 if any copy drifted or a calendar could not be read.
    """
    from sync.cli.usage import UsageError

    if user_id is not None and everything:
        raise UsageError("choose one of --user or --all, not both")
    from sync.engine.runtime import get_runtime
    from sync.errors import NotFound
    from sync.ops.diagnose import scan as scan_calendars
    from sync.store.models import Person

    rt = get_runtime()
    if user_id is not None:
        with rt.store.tx() as db:
            if db.get(Person, user_id) is None:
                raise NotFound(f"user {user_id!r} does not exist")
    found = [{"session_id": sid, **check.as_dict()} for sid, check in scan_calendars(rt, user_id=user_id, days=days)]
    drifted = [c for c in found if c["differences"]]
    unread = [c for c in found if unverified(c)]
    kinds = Counter(d["kind"] for c in drifted for d in c["differences"])
    if as_json:
        emit_json({"days": days, "user_id": user_id, "checked": len(found), "drifted": len(drifted),
                   "unverified": len(unread), "counts": dict(kinds), "placements": found})
    else:
        table(["session", "user", "channel", "differences"],
              [[c["session_id"], c["user_id"], c["channel"],
                "; ".join(f"{d['kind']}: {d['detail']}" for d in c["differences"]) or f"not checked: {c['note']}"]
               for c in drifted + unread])
        summary = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
        click.echo(f"checked {len(found)} calendar placement(s) over the next {days} days: {len(drifted)} drifted"
                   f"{f' ({summary})' if summary else ''}, {len(unread)} could not be read")
        if drifted:
            click.echo("`calsync resync --session ID` repairs one session")
    if drifted or unread:
        sys.exit(1)
