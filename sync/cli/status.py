"""``calsync status``: the health page in one screen; exit 1 when something needs a person."""

from __future__ import annotations

import sys

import click

from sync.cli.output import emit_json, fields, json_option, table
from sync.cli.usage import OneLineCommand


@click.command(cls=OneLineCommand)
@json_option
def status(as_json: bool) -> None:
    """Queue depth, dead letters, placements by state and channel, reconnects, lag.

    Exits 1 on dead letters; failed, drifted, held or stranded placements;
    placements stuck with nothing scheduled to move them; integrations needing a
    reconnect or still disconnecting; or a session lagging for more than 15 minutes.
    """
    from sync.config import get_settings
    from sync.engine.broker import QUEUE
    from sync.engine.runtime import get_runtime
    from sync.ops.status import EMBEDDED_NOTE, ago, gather

    with get_runtime().store.tx() as db:
        report = gather(get_settings(), db, QUEUE)
    if as_json:
        emit_json(report.as_dict())
    else:
        q, s = report.queue, report.store
        lag = s.lagging
        fields([
            ("queue", EMBEDDED_NOTE if q is None
             else f"{q.queue}: {q.queued} queued, {q.in_flight} in flight, {q.delayed} delayed"),
            ("dead letters", "-" if q is None else q.dead_letters),
            ("workers", "-" if report.workers is None else f"{report.workers.alive} seen in the last minute"
             + ("" if report.workers.last_seen_seconds is None or report.workers.alive
                else f" (last {ago(report.workers.last_seen_seconds)} ago)")),
            ("failed", f"{s.count('failed')} placement(s) failed, {s.count('drift')} drifted"),
            ("reconnect", f"{s.reconnect_count} integration(s)"
             + (f": {', '.join(s.reconnect_users)}" if s.reconnect_users else "")
             + (" …" if s.reconnect_count > len(s.reconnect_users) else "")),
            ("lagging", f"{lag.count} session(s)" + ("" if lag.oldest_id is None else
                        f"; oldest {lag.oldest_id}, changed {ago(lag.oldest_lag_seconds or 0)} ago")),
        ])
        click.echo()
        channels = sorted({c for _, c, _ in s.placements})
        counts = {(st, c): n for st, c, n in s.placements}
        states = sorted({st for st, _, _ in s.placements})
        if not states:
            click.echo("placements: none yet")
        else:
            table(["state", *channels, "total"],
                  [[st, *(counts.get((st, c), 0) for c in channels), sum(counts.get((st, c), 0) for c in channels)]
                   for st in states],
                  title="placements by state and channel")
        attention = [u for u in s.unsettled if u.attention]
        if attention:
            click.echo()
            table(["session", "user", "channel", "state", "reason"],
                  [[u.session_id, u.user_id, u.channel, u.state, u.reason or ""] for u in attention[:10]],
                  title=f"placements needing attention ({s.unsettled_count} not settled in all)")
        click.echo()
        for problem in report.problems:
            click.echo(f"problem: {problem}")
        if not report.problems:
            click.echo("ok: nothing needs attention")
    if report.problems:
        sys.exit(1)
