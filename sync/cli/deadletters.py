"""``calsync dead-letters``: the messages Dramatiq gave up on, and putting them back.

Dramatiq keeps them in Redis for 7 days and ships no tool for them; the
logic lives in :mod:`sync.ops.deadletters`, this module only prints.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from sync.cli.output import emit_json, fields, json_option, table
from sync.cli.usage import OneLineGroup

if TYPE_CHECKING:
    from sync.ops.deadletters import DeadLetters


@click.group(name="dead-letters", cls=OneLineGroup)
def dead_letters() -> None:
    """Messages whose retries ran out: list, show, retry, purge."""


@contextmanager
def _dead_letters() -> Iterator[DeadLetters]:
    """The dead-letter queue named by CALSYNC_BROKER_URL; refuses the embedded broker in one line."""
    from sync.cli.usage import UsageError
    from sync.config import get_settings
    from sync.engine.queues import broker_client
    from sync.ops.deadletters import DeadLetters

    client = broker_client(get_settings())
    if client is None:
        raise UsageError("dead letters live only in Redis; CALSYNC_BROKER_URL is memory://, whose messages "
                         "die with the process that held them")
    with client:
        yield DeadLetters(client)


def _args(values: list[object]) -> str:
    return ", ".join(map(str, values))


def _when(iso: str) -> str:
    """UTC to the second: a table column, not a timestamp to compute with (``--json`` has that)."""
    from datetime import datetime

    return f"{datetime.fromisoformat(iso):%Y-%m-%d %H:%M:%S}Z"


@dead_letters.command(name="list")
@json_option
def list_(as_json: bool) -> None:
    """List dead letters, oldest first. Exits 1 if there are any."""
    with _dead_letters() as dlq:
        rows = [d.summary() for d in dlq.list()]
    if as_json:
        emit_json(rows)
    else:
        table(["id", "actor", "args", "died_at", "retries", "last_error"],
              [[r["id"], r["actor"], _args(r["args"]), _when(r["died_at"]), r["retries"], r["last_error"]]
               for r in rows])
    if rows:
        sys.exit(1)


@dead_letters.command()
@click.argument("dead_id", metavar="ID")
@json_option
def show(dead_id: str, as_json: bool) -> None:
    """Show dead letter ID in full, traceback included.

    ID is the id `list` shows (Redis's) or the message id a worker's log
    line printed ("Retries exceeded for message '…'").
    """
    with _dead_letters() as dlq:
        data = dlq.get(dead_id).detail()
    if as_json:
        emit_json(data)
        return
    fields([("id", data["id"]), ("actor", data["actor"]), ("args", _args(data["args"])),
            ("kwargs", data["kwargs"] or None), ("queue", data["queue"]), ("message_id", data["message_id"]),
            ("enqueued_at", data["enqueued_at"]), ("died_at", data["died_at"]), ("retries", data["retries"]),
            ("last_error", data["last_error"])])
    if data["traceback"]:
        click.echo()
        click.echo(data["traceback"].rstrip())


@dead_letters.command()
@click.argument("dead_id", metavar="ID", required=False)
@click.option("--all", "every", is_flag=True, help="Retry every dead letter.")
@json_option
def retry(dead_id: str | None, every: bool, as_json: bool) -> None:
    """Put dead letter ID (or --all) back on the queue with its retries reset.

    ID is the id `list` shows or the message id from a worker's log line.

    Each is enqueued before its dead copy is removed, so an interruption can
    duplicate a message (harmless: the worker's reconcile is idempotent) but
    never lose one.
    """
    from sync.cli.usage import UsageError

    if (dead_id is None) == (not every):
        raise UsageError("give either one ID or --all, not both" if every else "give a dead letter ID, or --all")
    with _dead_letters() as dlq:
        done = dlq.retry_all() if every else dlq.retry([dead_id])
    if as_json:
        emit_json([r.as_dict() for r in done])
    elif not done:
        click.echo("no dead letters to retry")
    else:
        for r in done:
            note = "" if r.removed else " (its dead copy was already gone: retried by someone else?)"
            click.echo(f"{r.id}\tretried\t{r.actor}({_args(r.args)})\tnow {r.new_id}{note}")


@dead_letters.command()
@click.option("--older-than", "older_than", metavar="DURATION", help="e.g. 7d, 12h, 30m.")
@click.option("--yes", is_flag=True, help="Really delete them (without it, nothing is deleted).")
@click.option("--dry-run", is_flag=True, help="List what would be deleted, and delete nothing.")
@json_option
def purge(older_than: str | None, yes: bool, dry_run: bool, as_json: bool) -> None:
    """Delete dead letters that died more than DURATION ago; needs --yes.

    A dead letter is the only copy of work Dramatiq gave up on, and
    ``--older-than 0s`` matches every one of them, so deleting takes an explicit
    --yes; without it the command says what it would delete and exits 2.
    --dry-run lists them instead.
    """
    from sync.cli.usage import UsageError
    from sync.ops.deadletters import parse_duration

    if older_than is None:
        raise UsageError("--older-than DURATION is required, e.g. --older-than 7d")
    if yes and dry_run:
        raise UsageError("give --dry-run or --yes, not both")
    age = parse_duration(older_than)
    with _dead_letters() as dlq:
        if not yes:
            due = [d.summary() for d in dlq.older_than(age)]
        else:
            purged = dlq.purge(age)
    if dry_run:
        if as_json:
            emit_json({"older_than": older_than, "dry_run": True, "would_purge": len(due), "purged": 0,
                       "dead_letters": due})
            return
        if due:
            table(["id", "actor", "args", "died_at", "retries", "last_error"],
                  [[r["id"], r["actor"], _args(r["args"]), _when(r["died_at"]), r["retries"], r["last_error"]]
                   for r in due])
        click.echo(f"dry run: would purge {len(due)} dead letter(s) older than {older_than}; nothing deleted")
        return
    if not yes:
        raise UsageError(f"would purge {len(due)} dead letter(s) older than {older_than}; nothing deleted: "
                         "add --yes to delete them (--dry-run lists them)")
    if as_json:
        emit_json({"older_than": older_than, "purged": len(purged), "ids": purged})
    else:
        click.echo(f"purged {len(purged)} dead letter(s) older than {older_than}")
