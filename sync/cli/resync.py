"""``calsync resync``: re-plan sessions, enqueue only those that differ, and optionally watch them drain."""

from __future__ import annotations

import sys
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import click

from sync.cli.output import emit_json, json_option, table
from sync.cli.usage import OneLineCommand

#: What `--wait` polls, in seconds.
POLL_SECONDS = 0.5
#: Plain (non-terminal) progress prints at least this often, in seconds, while nothing changes.
PLAIN_EVERY_SECONDS = 10.0


def parse_since(value: str) -> datetime:
    """An ISO date (midnight UTC) or an ISO datetime with a UTC offset."""
    from sync.cli.usage import UsageError

    try:
        if len(value) == 10:
            day = datetime.strptime(value, "%Y-%m-%d")
            return day.replace(tzinfo=timezone.utc)
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--since: {value!r} is not a date; use 2026-12-01 or 2026-12-01T09:00:00+01:00") from None
    if when.tzinfo is None:
        raise UsageError(f"--since: {value!r} has no UTC offset; add one, e.g. {value}+00:00") from None
    try:
        when.astimezone(timezone.utc)
    except OverflowError:
        raise UsageError(f"--since: {value!r} is out of range") from None
    return when


@click.command(cls=OneLineCommand)
@click.option("--session", "session_id", metavar="ID", help="One session (drift found on calendars is repaired).")
@click.option("--user", "user_id", metavar="ID", help="Every session this person is in or still holds.")
@click.option("--program", metavar="NAME", help="Every session of a program.")
@click.option("--all", "everything", is_flag=True, help="Every session.")
@click.option("--since", metavar="DATE", help="Only sessions starting at or after DATE (ISO; a date is 00:00 UTC).")
@click.option("--dry-run", is_flag=True, help="Print the plan per participant and change nothing.")
@click.option("--wait", is_flag=True,
              help="With Redis: wait until the messages this resync enqueued are done (other queued work is not "
                   "waited for), then print what the workers did.")
@click.option("--timeout", type=click.FloatRange(min=0), default=600.0, show_default=True,
              help="Seconds --wait waits before giving up (exit 1).")
@json_option
def resync(session_id: str | None, user_id: str | None, program: str | None, everything: bool, since: str | None,
           dry_run: bool, wait: bool, timeout: float, as_json: bool) -> None:
    """Re-plan the chosen sessions and enqueue only those whose plan has something to do.

    The session is authoritative: placements that gave up are retried, and
    with --session the copies found moved, retitled, deleted or duplicated on
    calendars are rewritten. Exits 1 if any step failed (or --wait timed out).
    """
    from sync.cli.usage import UsageError

    chosen = [session_id is not None, user_id is not None, program is not None, everything]
    if sum(chosen) != 1:
        raise UsageError("choose exactly one of --session, --user, --program, --all")
    from sync.ops.resync import Selection

    sel = Selection(session_id=session_id, user_id=user_id, program=program, everything=everything,
                    since=parse_since(since) if since is not None else None)

    from sync.engine.runtime import get_runtime

    rt = get_runtime()
    _must_exist(rt, sel)
    if dry_run:
        _dry_run(rt, sel, as_json)
        return
    _run(rt, sel, wait, timeout, as_json)


def _must_exist(rt: Any, sel: Any) -> None:
    from sqlalchemy import select

    from sync.errors import NotFound
    from sync.store.models import Person, SessionRow

    with rt.store.tx() as db:
        if sel.session_id is not None and db.get(SessionRow, sel.session_id) is None:
            raise NotFound(f"session {sel.session_id!r} does not exist")
        if sel.user_id is not None and db.get(Person, sel.user_id) is None:
            raise NotFound(f"user {sel.user_id!r} does not exist")
        # A program exists only through its sessions; a misspelt name must not pass for "nothing to do".
        if sel.program is not None and db.scalar(
                select(SessionRow.id).where(SessionRow.program == sel.program).limit(1)) is None:
            raise NotFound(f"no session has program {sel.program!r} (names are exact, case included)")


def _drift_of(checks: list[Any]) -> list[dict[str, Any]]:
    return [{"user_id": c.user_id, "channel": c.channel, "differences": [d.kind for d in c.differences]}
            for c in checks if c.channel != "email" and c.differences]


def _dry_run(rt: Any, sel: Any, as_json: bool) -> None:
    from sync.ops.resync import resync as plan_resync

    result = plan_resync(rt, sel, dry_run=True, enqueue=lambda sid: None)
    drift: list[dict[str, Any]] | None = None
    if sel.session_id is not None:
        # Read-only: what a real run would repair before re-planning.
        from sync.ops.diagnose import diagnose_session

        drift = _drift_of(diagnose_session(rt, sel.session_id))
    if as_json:
        emit_json({
            "dry_run": True, "sessions": result.sessions, "placements": result.placements,
            "counts": dict(result.counts), "would_enqueue": result.enqueued, "enqueued": [],
            "plan": [{"session_id": s, "user_id": u, "channel": c, "action": a, "why": w}
                     for s, u, c, a, w in result.steps],
            **({"drift": drift} if drift is not None else {}),
        })
        return
    table(["session", "user", "channel", "action", "why"], result.steps, title="plan (dry run)")
    for d in drift or ():
        click.echo(f"drift on {d['user_id']}'s {d['channel']} calendar: {', '.join(d['differences'])} "
                   "(a run without --dry-run rewrites it)")
    click.echo(f"dry run: {result.sessions} sessions, {result.placements} placements ({_counts(result.counts)}); "
               f"would enqueue {len(result.enqueued)}; nothing changed")


def _counts(counts: Counter[str]) -> str:
    return ", ".join(f"{k} {counts.get(k, 0)}" for k in ("create", "update", "withdraw", "nothing"))


def _run(rt: Any, sel: Any, wait: bool, timeout: float, as_json: bool) -> None:
    from sync.cli.delivery import delivering
    from sync.engine.broker import broker, is_embedded
    from sync.engine.tasks import sync_session
    from sync.ops.resync import outcomes_since
    from sync.ops.resync import resync as do_resync
    from sync.store import synclog

    with rt.store.tx() as db:
        log_mark = synclog.mark(db)
    repaired = None
    if sel.session_id is not None:
        from sync.ops.diagnose import repair_drift

        repaired = _drift_of(repair_drift(rt, sel.session_id))
    embedded = is_embedded(broker)
    # Keep what was sent: --wait follows these messages, not the whole queue.
    sent: list[Any] = []
    with delivering():
        result = do_resync(rt, sel, dry_run=False, keep_steps=False,
                           enqueue=lambda sid: sent.append(sync_session.send(sid, retry_failed=True)))
    if not as_json:  # before the wait, so the operator knows what is being waited for
        for d in repaired or ():
            click.echo(f"repairing {d['user_id']}'s {d['channel']} calendar: {', '.join(d['differences'])}")
        click.echo(f"planned {result.sessions} sessions, {result.placements} placements ({_counts(result.counts)}); "
                   f"enqueued {len(result.enqueued)}")
    timed_out, left, dead = False, 0, []
    if wait and not embedded and sent:
        from sync.engine.queues import QueueKeys
        from sync.ops.resync import Outstanding

        outstanding = Outstanding(broker.client, sent, QueueKeys(namespace=broker.namespace))
        left = _follow(outstanding, len(sent), timeout, show=not as_json)
        timed_out = left > 0
        by_id = {m.message_id: m.args[0] for m in sent}
        dead = [by_id[mid] for mid in outstanding.dead]
    delivered = embedded or (wait and not timed_out)
    done = outcomes_since(rt, log_mark, set(result.enqueued), result.counts) if embedded or wait else None
    report = {
        "dry_run": False, "sessions": result.sessions, "placements": result.placements,
        "counts": dict(result.counts), "enqueued": result.enqueued, "delivered": delivered,
        **({"repaired": repaired} if repaired is not None else {}),
        **({"results": done} if done is not None else {}),
        **({"dead": dead} if dead else {}),
        **({"timed_out": True, "outstanding": left} if timed_out else {}),
    }
    if as_json:
        emit_json(report)
    else:
        if done is not None:
            keys = ["created", "updated", "withdrawn", "unchanged", "failed", "retrying"]
            table(keys, [[done[k] for k in keys]])
            if done["retrying"]:
                click.echo(f"{done['retrying']} placement(s) will be tried again later by the workers "
                           "(see `calsync status`)")
        elif result.enqueued:
            click.echo("a `calsync worker` delivers them; add --wait to follow, or see `calsync status`")
    if dead:
        click.echo(f"Error: the message(s) of {', '.join(dead)} died after their retries; see "
                   "`calsync dead-letters list`", err=True)
    if timed_out:
        click.echo(f"Error: timed out after {timeout:g}s with {left} of its {len(sent)} message(s) not yet done; "
                   "the workers keep going", err=True)
        sys.exit(1)
    if dead or (done is not None and done["failed"]):
        sys.exit(1)


def _follow(outstanding: Any, sent: int, timeout: float, *, show: bool) -> int:
    """Poll until every message this resync sent is done; returns how many are not (0 unless it timed out)."""
    deadline = time.monotonic() + timeout
    left = outstanding.poll()
    bar = None
    if show and sys.stdout.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("delivering"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("{task.fields[left]} to go"), transient=True)
        task = bar.add_task("delivering", total=sent, left=left)
        bar.start()
    last_line, last_left = 0.0, None
    try:
        while True:
            if bar is not None:
                bar.update(task, completed=sent - left, left=left)
            elif show and (left != last_left or time.monotonic() - last_line >= PLAIN_EVERY_SECONDS):
                click.echo(f"waiting\t{left} of {sent} message(s) queued or in progress")
                last_line, last_left = time.monotonic(), left
            if left == 0 or time.monotonic() >= deadline:
                return left
            time.sleep(POLL_SECONDS)
            left = outstanding.poll()
    finally:
        if bar is not None:
            bar.stop()
