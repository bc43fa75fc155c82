"""``calsync diagnose``: why one session or one person's calendar is not what calsync would place.

Read-only: the store and one read per calendar copy (or one cheap probe per
person). ``calsync resync --session ID`` repairs what ``diagnose session`` finds.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from sync.cli.output import emit_json, fields, json_option, table
from sync.cli.usage import OneLineGroup


@click.group(cls=OneLineGroup)
def diagnose() -> None:
    """Explain one session's or one person's calendar state."""


def _span(title: str, start: str, end: str, where: str) -> str:
    return f"{title!r} {start}–{end} @ {where or '-'}"


def unverified(check: dict[str, Any]) -> bool:
    """A calendar copy calsync wants but could not read (provider down, integration unusable)."""
    return check["channel"] != "email" and check["expected"] is not None and bool(check["note"]) \
        and not check["differences"]


@diagnose.command("session")
@click.argument("session_id", metavar="ID")
@json_option
def session_(session_id: str, as_json: bool) -> None:
    """Per participant: expected vs what their calendar (or last invite) holds, and the differences.

    Exits 1 if anything differs or a calendar could not be read.
    """
    from sync.engine.runtime import get_runtime
    from sync.ops.diagnose import diagnose_session

    checks = [c.as_dict() for c in diagnose_session(get_runtime(), session_id)]
    drifted = [c for c in checks if c["differences"]]
    unread = [c for c in checks if unverified(c)]
    ok = not drifted and not unread
    if as_json:
        emit_json({"session_id": session_id, "ok": ok, "participants": checks})
    else:
        rows = []
        for c in checks:
            exp = c["expected"]
            expected = "(no copy)" if exp is None else _span(exp["title"], exp["start"], exp["end"], exp["where"])
            found = [f"{a['id']}: {_span(a['title'], a['start'], a['end'], a['where'])}"
                     f"{' (deleted)' if a['cancelled'] else ''}" for a in c["actual"]]
            actual = "; ".join(found + ([c["note"]] if c["note"] else [])) or "(none found)"
            diffs = "; ".join(f"{d['kind']}: {d['detail']}" for d in c["differences"])
            rows.append([c["user_id"], c["channel"], c["state"], expected, actual, diffs or "-"])
        table(["user", "channel", "state", "expected", "actual", "differences"], rows, title=f"session {session_id}")
        if drifted:
            kinds = sorted({d["kind"] for c in drifted for d in c["differences"]})
            click.echo(f"drift: {', '.join(kinds)} for {len(drifted)} participant(s); "
                       f"`calsync resync --session {session_id}` repairs it")
        if unread:
            click.echo(f"could not check {len(unread)} calendar(s): {'; '.join(c['note'] for c in unread)}")
        if ok:
            click.echo("in sync: every participant holds what the session says")
    if not ok:
        sys.exit(1)


@diagnose.command("user")
@click.argument("user_id", metavar="ID")
@json_option
def user(user_id: str, as_json: bool) -> None:
    """A person's channel, integrations, a live calendar check, upcoming placements, recent errors and a verdict.

    Exits 1 when the verdict is not ok.
    """
    from sync.engine.runtime import get_runtime
    from sync.ops.diagnose import diagnose_user

    report = diagnose_user(get_runtime(), user_id)
    if as_json:
        emit_json(report.as_dict())
    else:
        live = report.live_check
        fields([
            ("user", report.user_id), ("email", report.email), ("channel", report.channel),
            ("live check", "not run (no active integration)" if live is None
             else f"{'ok' if live['ok'] else 'FAILED'}: {live['detail']}"),
        ])
        click.echo()
        table(["provider", "account", "calendar", "status", "reason", "since"],
              [[i["provider"], i["account"], i["calendar"], i["status"], i["reason"], i["since"]]
               for i in report.integrations], title="integrations")
        click.echo()
        table(["session", "title", "start", "channel", "state", "last_error"],
              [[u["session_id"], u["title"], u["start"], u["channel"], u["state"], u["last_error"]]
               for u in report.upcoming], title="upcoming placements")
        click.echo()
        table(["at", "session", "channel", "action", "result", "error"],
              [[e["at"], e["session_id"], e["channel"], e["action"], e["result"], _error_of(e["detail"])]
               for e in report.recent_errors], title="recent errors")
        click.echo()
        click.echo(f"verdict: {report.verdict}")
    if not report.ok:
        sys.exit(1)


def _error_of(detail: Any) -> Any:
    if isinstance(detail, dict):
        return detail.get("error") or ", ".join(f"{k}={v}" for k, v in detail.items())
    return detail
