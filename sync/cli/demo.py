"""``calsync demo``: the embedded end-to-end run, whatever the environment points at."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sync.cli.output import emit_json, json_option, table


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-out"),
              show_default=True, help="Folder for the demo's SQLite database and its outbox of .eml invites.")
@json_option
def demo(out: Path, as_json: bool) -> None:
    """Book, reschedule, edit and cancel a small program; invites land as .eml files.

    Uses SQLite, the in-process memory:// broker and a file outbox in --out,
    ignoring CALSYNC_* settings for those, so it needs no servers. Exits 1 if
    what landed on disk does not match what the store recorded.
    """
    from sync import demo as demo_run

    report = demo_run.run(out, say=lambda line: None if as_json else click.echo(line))
    if as_json:
        emit_json({"outbox": str(report.outbox), "database": report.database, "steps": report.steps,
                   "rows": [row.as_dict() for row in report.rows], "problems": report.problems})
    else:
        click.echo()
        table(["person", "session", "channel", "state", "METHOD", "SEQ", ".eml", "history"],
              [[r.person, r.session_id, r.channel, r.state, r.method, r.sequence, r.files, r.history]
               for r in report.rows],
              title="what each person's calendar received")
        click.echo(f"\ninvites: {report.outbox}")
        for problem in report.problems:
            click.echo(f"problem: {problem}", err=True)
    if report.problems:
        sys.exit(1)
