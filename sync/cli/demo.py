"""``calsync demo``: the embedded end-to-end run, whatever the environment points at."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sync.cli.output import emit_json, json_option, table
from sync.cli.usage import OneLineCommand


@click.command(cls=OneLineCommand)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-out"),
              show_default=True,
              help="The demo's own folder, for its SQLite database and its outbox of .eml invites: created if "
                   "absent, adopted if empty, reused only if an earlier demo created it (it holds .calsync-demo).")
@json_option
def demo(out: Path, as_json: bool) -> None:
    """Book, reschedule, edit and cancel a small program on Google Calendar, Outlook and by email.

    Uses SQLite in --out, the in-process memory:// broker, a file outbox in
    --out and local Google Calendar and Microsoft Graph emulators on
    127.0.0.1, ignoring CALSYNC_* settings for those (CALSYNC_DATABASE_URL
    included), so it needs no servers and never touches a real database.
    Every run deletes the previous run's database and invites, so --out must
    be new, empty, or a folder an earlier demo created; any other folder is
    refused (exit 2). Exits 1 if what landed (the .eml files, the emulated
    calendars) does not match what the store recorded.
    """
    from sync.demo import runner as demo_run

    report = demo_run.run(out, say=lambda line: None if as_json else click.echo(line))
    if as_json:
        emit_json({"outbox": str(report.outbox), "database": report.database, "google": report.google_url,
                   "outlook": report.outlook_url,
                   "steps": report.steps, "rows": [row.as_dict() for row in report.rows],
                   "integrations": report.integrations, "problems": report.problems})
    else:
        click.echo()
        table(["person", "session", "channel", "state", "what landed"],
              [[r.person, r.session_id, r.channel, r.state, r.landed] for r in report.rows],
              title="what landed: google, outlook = the event on their calendar now; "
                    "email = METHOD:SEQUENCE of each invite")
        click.echo()
        table(["user", "provider", "status", "reason", "during the demo"],
              [[i["user_id"], i["provider"], i["status"], i["reason"], i["history"]] for i in report.integrations],
              title="integrations")
        click.echo(f"\ninvites: {report.outbox}")
        for problem in report.problems:
            click.echo(f"problem: {problem}", err=True)
    if report.problems:
        sys.exit(1)
