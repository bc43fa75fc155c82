"""``calsync status``, ``dead-letters`` and ``doctor`` as an operator runs them: subprocesses against real Redis.

Dead letters are made the way production makes them: a Dramatiq worker runs
a ``sync_session`` message whose actor keeps failing until its retries run out
and Dramatiq's own Lua script moves it to the XQ.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.message import Message

from sync.engine.queues import QueueStats
from sync.errors import InvalidInput
from sync.ops.deadletters import last_line, parse_duration
from sync.ops.status import find_problems
from sync.store.crypto import CredentialBox, new_key
from sync.store.db import Store, utcnow
from sync.store.models import Integration, Placement, SessionRow
from sync.store.stats import Lagging, StoreStats
from tests.support.cli import assert_one_line_error, calsync, cli_env, upgraded_runner
from tests.support.factories import session_data
from tests.support.services import REDIS_URL
from tests.support.smtpserver import SmtpServer

QUEUE_KEY = "dramatiq:calsync"
XQ = "dramatiq:calsync.XQ"

pytestmark = [pytest.mark.slow, pytest.mark.redis]


# -- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, redis_client: redis.Redis) -> dict[str, str]:
    """The CLI's clean environment, with the test Redis as the broker."""
    return cli_env(tmp_path, CALSYNC_BROKER_URL=REDIS_URL)


@pytest.fixture
def run(env: dict[str, str], tmp_path: Path):
    """calsync against a migrated database, with ``env=`` overrides per call."""
    return upgraded_runner(env, tmp_path)


@pytest.fixture
def store(env: dict[str, str], run) -> Store:
    return Store(env["CALSYNC_DATABASE_URL"])


def kill(client: redis.Redis, *session_ids: str) -> list[str]:
    """Dead-letter one ``sync_session`` message per id through a real Dramatiq worker; returns XQ ids.

    The actor is declared on a private broker under calsync's actor and queue
    names, so the dead payloads are exactly what a calsync worker leaves.
    """
    broker = RedisBroker(client=client)

    @dramatiq.actor(broker=broker, queue_name="calsync", actor_name="sync_session", max_retries=1,
                    min_backoff=1, max_backoff=10)
    def sync_session(session_id: str, retry_failed: bool = False) -> None:
        raise RuntimeError(f"session {session_id} cannot be reconciled")

    before = client.zcard(XQ)
    for session_id in session_ids:
        sync_session.send(session_id)
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while client.zcard(XQ) < before + len(session_ids) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
    ids = [i.decode() for i in client.zrange(XQ, 0, -1)]
    assert len(ids) == before + len(session_ids)
    # Retries can finish in either order: return the ids in the order the sessions were given.
    by_session = {Message.decode(client.hget(f"{XQ}.msgs", i)).args[0]: i for i in ids[before:]}
    return [by_session[sid] for sid in session_ids]


def queued(client: redis.Redis) -> list[Message]:
    """Messages waiting on the calsync queue, in order."""
    return [Message.decode(client.hget(f"{QUEUE_KEY}.msgs", rid)) for rid in client.lrange(QUEUE_KEY, 0, -1)]


# -- status ------------------------------------------------------------------------------------------


def test_status_of_an_empty_system_is_healthy(run):
    # Given a migrated database and an empty Redis
    # When status is asked for
    result = run("status", "--json")
    # Then every counter is zero and the exit status says healthy
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["problems"] == []
    assert report["broker"] == {"embedded": False, "queue": "calsync", "queued": 0, "in_flight": 0, "delayed": 0,
                                "dead_letters": 0}
    assert report["placements"] == [] and report["failed_placements"] == 0
    assert report["needs_reconnect"] == {"count": 0, "user_ids": []}
    assert report["lagging"] == {"count": 0, "oldest": None}


def test_status_plain_output_is_one_screen(run):
    # Given an empty system
    # When status is printed for a pipe
    result = run("status")
    # Then it is short, names each part, and ends with the verdict
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) < 25
    assert lines[0].startswith("queue:") and "0 queued" in lines[0]
    assert lines[-1] == "ok: nothing needs attention"


def test_a_fresh_backlog_is_not_a_problem(run, redis_client):
    # Given a session just pushed in and waiting on the queue, with a worker alive (its heartbeat)
    from sync.engine.heartbeat import beat

    beat(redis_client, "host:1")
    assert run("sessions", "upsert", "-", stdin=json.dumps(session_data()).encode()).returncode == 0
    # When status is asked for
    result = run("status", "--json")
    # Then it shows the queued message and the lagging session, but nothing to act on yet
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["broker"]["queued"] == 1
    assert report["lagging"]["count"] == 1 and report["lagging"]["oldest"]["session_id"] == "sess-42"
    assert report["lagging"]["oldest"]["lag_seconds"] < 60


def test_status_reports_failed_placements_reconnects_and_old_lag(run, store, redis_client):
    # Given a session whose mentor's placement failed, whose mentee's integration died,
    # and which has lagged for 20 minutes (with a worker alive, so the backlog is not a problem itself)
    from sync.engine.heartbeat import beat

    beat(redis_client, "host:1")
    assert run("sessions", "upsert", "-", stdin=json.dumps(session_data()).encode()).returncode == 0
    with store.tx() as db:
        db.add(Placement(session_id="sess-42", user_id="u-1", channel="email", recipient_email="mentor@example.com",
                         uid="uid-1", state="failed", last_error="SMTP 550 mailbox unavailable"))
        db.add(Placement(session_id="sess-42", user_id="u-2", channel="google", recipient_email="mentee@example.com",
                         uid="uid-2", state="placed"))
        db.add(Integration(user_id="u-2", provider="google", credentials=b"sealed", status="needs_reconnect"))
        db.get(SessionRow, "sess-42").updated_at = utcnow() - timedelta(minutes=20)
    # When status is asked for
    result = run("status", "--json")
    # Then each problem is counted and named, and the exit status is 1
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["placements"] == [{"state": "failed", "channel": "email", "count": 1},
                                    {"state": "placed", "channel": "google", "count": 1}]
    assert report["failed_placements"] == 1
    assert report["needs_reconnect"] == {"count": 1, "user_ids": ["u-2"]}
    assert report["lagging"]["oldest"]["session_id"] == "sess-42"
    assert report["lagging"]["oldest"]["lag_seconds"] > 15 * 60
    assert len(report["problems"]) == 3
    # And the plain screen lists the same problems
    plain = run("status")
    assert plain.returncode == 1
    assert sum(line.startswith("problem: ") for line in plain.stdout.splitlines()) == 3


def test_status_counts_dead_letters_as_a_problem(run, redis_client):
    # Given one dead letter
    kill(redis_client, "sess-1")
    # When status is asked for
    result = run("status", "--json")
    # Then it is counted, and the exit status is 1
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["broker"]["dead_letters"] == 1
    assert report["problems"] == ["1 dead letter(s): see `calsync dead-letters list`"]


def test_status_with_redis_down_is_one_line_exit_1(run):
    # Given a broker URL nothing listens on
    # When status is asked for
    result = run("status", "--json", CALSYNC_BROKER_URL="redis://127.0.0.1:1/0")
    # Then the answer is one line naming the broker, exit 1
    assert result.returncode == 1
    assert_one_line_error(result, "broker error", "CALSYNC_BROKER_URL")


def test_status_with_the_embedded_broker_says_nothing_is_queued_outside(run):
    # Given the embedded broker
    # When status is asked for
    result = run("status", "--json", CALSYNC_BROKER_URL="memory://")
    # Then the queue part says why it has no counters, and the rest is reported
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["broker"] == {"embedded": True, "note": "embedded broker: nothing queued outside this process"}
    assert report["lagging"]["count"] == 0


# -- dead letters ------------------------------------------------------------------------------------


def test_dead_letters_list_and_show(run, redis_client):
    # Given two sessions whose messages died after their retries
    first, second = kill(redis_client, "sess-1", "sess-2")
    # When they are listed
    listed = run("dead-letters", "list", "--json")
    # Then each shows its id, actor, session, retries and the last line of its error; exit 1 (there are some)
    assert listed.returncode == 1, listed.stderr
    rows = json.loads(listed.stdout)
    # (listed oldest death first; which of the two died first is up to the worker)
    assert rows[0]["died_at"] <= rows[1]["died_at"]
    rows.sort(key=lambda r: r["args"])
    assert [(r["id"], r["actor"], r["args"], r["retries"]) for r in rows] == [
        (first, "sync_session", ["sess-1"], 1), (second, "sync_session", ["sess-2"], 1)]
    assert rows[0]["last_error"] == "RuntimeError: session sess-1 cannot be reconciled"
    # When one is shown
    shown = run("dead-letters", "show", first, "--json")
    # Then the full message comes back, traceback included
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["id"] == first and detail["queue"] == "calsync" and detail["args"] == ["sess-1"]
    assert detail["traceback"].startswith("Traceback") and "cannot be reconciled" in detail["traceback"]
    assert "traceback" not in detail["options"]
    # And the plain forms are a table and a record followed by the traceback
    plain = run("dead-letters", "list")
    assert plain.stdout.splitlines()[0].split("\t") == ["id", "actor", "args", "died_at", "retries", "last_error"]
    record = run("dead-letters", "show", first).stdout
    assert "actor:" in record and "Traceback (most recent call last):" in record


def test_retry_puts_one_message_back_with_its_retries_reset(run, redis_client):
    # Given two dead letters
    first, second = kill(redis_client, "sess-1", "sess-2")
    # When the first is retried
    result = run("dead-letters", "retry", first, "--json")
    # Then it is reported, back on the calsync queue with a clean retry budget, and gone from the XQ
    assert result.returncode == 0, result.stderr
    [retried] = json.loads(result.stdout)
    assert retried["id"] == first and retried["actor"] == "sync_session" and retried["args"] == ["sess-1"]
    [message] = queued(redis_client)
    assert message.actor_name == "sync_session" and message.args == ("sess-1",)
    assert message.options["retries"] == 0 and "traceback" not in message.options
    assert message.options["redis_message_id"] == retried["new_id"]
    assert [i.decode() for i in redis_client.zrange(XQ, 0, -1)] == [second]
    assert redis_client.hkeys(f"{XQ}.msgs") == [second.encode()]


def test_retry_all_empties_the_dead_letter_queue(run, redis_client):
    # Given two dead letters
    kill(redis_client, "sess-1", "sess-2")
    # When all are retried
    result = run("dead-letters", "retry", "--all")
    # Then both are named, both are queued again, and nothing is left dead
    assert result.returncode == 0, result.stderr
    assert [line.split("\t")[1] for line in result.stdout.splitlines()] == ["retried", "retried"]
    assert sorted(m.args for m in queued(redis_client)) == [("sess-1",), ("sess-2",)]
    assert redis_client.zcard(XQ) == 0 and redis_client.hlen(f"{XQ}.msgs") == 0
    # And a second run finds nothing to do
    again = run("dead-letters", "retry", "--all", "--json")
    assert again.returncode == 0 and json.loads(again.stdout) == []
    assert run("dead-letters", "list", "--json").returncode == 0


def test_purge_deletes_only_what_died_before_the_cutoff(run, redis_client):
    # Given a dead letter from 8 days ago and one from just now
    old, recent = kill(redis_client, "sess-old", "sess-new")
    redis_client.zadd(XQ, {old: (time.time() - 8 * 86400) * 1000}, xx=True)
    # When dead letters older than 7 days are purged, confirmed with --yes
    result = run("dead-letters", "purge", "--older-than", "7d", "--yes", "--json")
    # Then only the old one is gone, payload included
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"older_than": "7d", "purged": 1, "ids": [old]}
    assert [i.decode() for i in redis_client.zrange(XQ, 0, -1)] == [recent]
    assert redis_client.hkeys(f"{XQ}.msgs") == [recent.encode()]
    # And the plain form says how many went
    assert run("dead-letters", "purge", "--older-than", "30m", "--yes").stdout.strip() == \
        "purged 0 dead letter(s) older than 30m"


def test_purge_without_yes_says_what_it_would_delete_and_deletes_nothing(run, redis_client):
    # Given two dead letters that both died before now
    kill(redis_client, "sess-1", "sess-2")
    # When an operator purges everything older than 0s but forgets --yes
    result = run("dead-letters", "purge", "--older-than", "0s")
    # Then the command refuses in one line naming how many would go and how to confirm, exit 2
    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_line_error(result, "2 dead letter(s)", "--yes")
    assert result.stdout == ""
    # And every dead letter is still there, payload included
    assert redis_client.zcard(XQ) == 2 and redis_client.hlen(f"{XQ}.msgs") == 2


def test_purge_dry_run_lists_what_would_go_and_deletes_nothing(run, redis_client):
    # Given a dead letter from 8 days ago and one from just now
    old, recent = kill(redis_client, "sess-old", "sess-new")
    redis_client.zadd(XQ, {old: (time.time() - 8 * 86400) * 1000}, xx=True)
    # When a purge of those older than 7 days is dry-run, as JSON
    result = run("dead-letters", "purge", "--older-than", "7d", "--dry-run", "--json")
    # Then only the old one is listed, with what it was, and the exit status is 0
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["dry_run"] is True and report["would_purge"] == 1 and report["purged"] == 0
    assert [(r["id"], r["args"]) for r in report["dead_letters"]] == [(old, ["sess-old"])]
    # And in plain form it is a table of what would go, then one line saying nothing was deleted
    plain = run("dead-letters", "purge", "--older-than", "7d", "--dry-run")
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[0].split("\t")[0] == "id" and lines[1].startswith(old + "\t")
    assert lines[-1] == "dry run: would purge 1 dead letter(s) older than 7d; nothing deleted"
    # And both dead letters are still there
    assert sorted(i.decode() for i in redis_client.zrange(XQ, 0, -1)) == sorted([old, recent])
    assert redis_client.hlen(f"{XQ}.msgs") == 2


def test_show_and_retry_accept_the_message_id_the_worker_logged(run, redis_client, caplog):
    # Given a message that died, and the line Dramatiq's worker logged about it
    with caplog.at_level("WARNING", logger="dramatiq"):
        [dead_id] = kill(redis_client, "sess-1")
    [logged] = [r.args[0] for r in caplog.records if r.getMessage().startswith("Retries exceeded for message")]
    assert logged != dead_id  # Dramatiq's message id, not the Redis one `list` shows
    # When support shows the dead letter by the id from the log
    shown = run("dead-letters", "show", logged, "--json")
    # Then it is the same dead letter as under its Redis id, both ids shown
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["id"] == dead_id and detail["message_id"] == logged and detail["args"] == ["sess-1"]
    # And `list --json` names the message id too, so a log line can be matched to a row
    assert [r["message_id"] for r in json.loads(run("dead-letters", "list", "--json").stdout)] == [logged]
    # When it is retried by the logged id
    retried = run("dead-letters", "retry", logged, "--json")
    # Then it is back on the queue and no longer dead
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)[0]["id"] == dead_id
    assert [m.message_id for m in queued(redis_client)] == [logged] and redis_client.zcard(XQ) == 0


def test_a_message_id_that_names_two_dead_letters_is_refused_in_one_line(run, redis_client):
    # Given two dead copies of one message (a retried letter that died again while its old copy stayed)
    [dead_id] = kill(redis_client, "sess-1")
    redis_client.zadd(XQ, {"copy-of-it": time.time() * 1000})
    redis_client.hset(f"{XQ}.msgs", "copy-of-it", redis_client.hget(f"{XQ}.msgs", dead_id))
    message_id = Message.decode(redis_client.hget(f"{XQ}.msgs", dead_id)).message_id
    # When it is shown by its message id
    result = run("dead-letters", "show", message_id)
    # Then the command names both Redis ids to choose from, one line, exit 2
    assert result.returncode == 2
    assert_one_line_error(result, dead_id, "copy-of-it")


@pytest.mark.parametrize("args", [("show", "no-such-id"), ("retry", "no-such-id")])
def test_unknown_dead_letter_is_one_line_exit_2(run, redis_client, args):
    # Given a dead letter that is not the one asked for
    kill(redis_client, "sess-1")
    # When an unknown id is shown or retried
    result = run("dead-letters", *args)
    # Then the answer is one line naming it, exit 2, and nothing was enqueued
    assert result.returncode == 2
    assert_one_line_error(result, "no-such-id")
    assert redis_client.llen(QUEUE_KEY) == 0 and redis_client.zcard(XQ) == 1


@pytest.mark.parametrize("args, words", [
    (("purge", "--older-than", "soon"), ("--older-than", "soon")),
    (("purge", "--older-than", "soon", "--yes"), ("--older-than", "soon")),
    (("purge",), ("--older-than",)),
    (("purge", "--older-than", "0s", "--dry-run", "--yes"), ("--dry-run", "--yes")),
    (("retry", "some-id", "--all"), ("ID", "--all")),
    (("retry",), ("ID", "--all")),
])
def test_bad_dead_letter_flags_are_one_line_exit_2(run, redis_client, args, words):
    # Given dead letters in Redis
    kill(redis_client, "sess-1")
    # When a command is given a bad duration, or both or neither of ID and --all
    result = run("dead-letters", *args)
    # Then it refuses in one line, exit 2, and touches nothing
    assert result.returncode == 2
    assert_one_line_error(result, *words)
    assert redis_client.zcard(XQ) == 1 and redis_client.llen(QUEUE_KEY) == 0


def test_dead_letters_with_the_embedded_broker_is_one_line_exit_2(run):
    # Given the embedded broker, whose messages never reach Redis
    # When dead letters are listed
    result = run("dead-letters", "list", CALSYNC_BROKER_URL="memory://")
    # Then the command says they live only in Redis, exit 2
    assert result.returncode == 2
    assert_one_line_error(result, "only in Redis")


def test_dead_letters_with_redis_down_is_one_line_exit_1(run):
    # Given a broker URL nothing listens on
    # When dead letters are listed
    result = run("dead-letters", "list", CALSYNC_BROKER_URL="redis://127.0.0.1:1/0")
    # Then the broker error is one line, exit 1
    assert result.returncode == 1
    assert_one_line_error(result, "broker error")


# -- doctor ------------------------------------------------------------------------------------------


def checks(result: subprocess.CompletedProcess[str]) -> dict[str, tuple[bool, str]]:
    report = json.loads(result.stdout)
    found = {c["name"]: (c["ok"], c["detail"]) for c in report["checks"]}
    assert report["ok"] == all(ok for ok, _ in found.values())
    return found


def test_doctor_all_ok_with_sqlite_redis_and_a_mail_folder(run, tmp_path: Path):
    # Given a migrated SQLite database, Redis, and invites written to a folder
    # When doctor runs
    result = run("doctor", "--json")
    # Then every check passes, one per part, and the exit status is 0
    assert result.returncode == 0, result.stdout
    found = checks(result)
    assert list(found) == ["configuration", "database", "broker", "smtp", "secret keys", "placements", "providers"]
    assert all(ok for ok, _ in found.values())
    assert "answers PING" in found["broker"][1]
    assert str(tmp_path / "out") in found["smtp"][1]
    # And the plain form is one line per check
    plain = run("doctor")
    assert plain.returncode == 0
    assert [line.split()[0] for line in plain.stdout.splitlines()] == ["ok"] * 7


def test_doctor_names_the_configuration_that_holds_placements(run, store):
    # Given placements held because Google refuses calsync's OAuth client
    assert run("sessions", "upsert", "-", stdin=json.dumps(session_data()).encode()).returncode == 0
    with store.tx() as db:
        db.add(Placement(session_id="sess-42", user_id="u-1", channel="google", recipient_email="mentor@example.com",
                         uid="uid-1", state="held",
                         last_error="Google refused calsync's OAuth client (invalid_client)"))
    # When doctor runs
    result = run("doctor", "--json")
    # Then the placements check fails naming the cause, and the exit status is 1
    assert result.returncode == 1
    ok, detail = checks(result)["placements"]
    assert not ok and "1 held" in detail and "invalid_client" in detail


def test_doctor_with_redis_down_fails_that_check_only(run):
    # Given a broker URL nothing listens on
    # When doctor runs
    result = run("doctor", "--json", CALSYNC_BROKER_URL="redis://127.0.0.1:1/0")
    # Then the broker check failed with the reason, the others still ran, and the exit status is 1
    assert result.returncode == 1
    found = checks(result)
    ok, detail = found["broker"]
    assert not ok and "127.0.0.1:1" in detail
    assert all(ok for name, (ok, _) in found.items() if name != "broker")
    plain = run("doctor", CALSYNC_BROKER_URL="redis://127.0.0.1:1/0")
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert [line.split()[0] for line in plain.stdout.splitlines() if "broker" in line] == ["failed"]


def test_doctor_with_an_unmigrated_database_says_to_upgrade(env, tmp_path: Path):
    # Given a database nobody has migrated
    # When doctor runs
    result = calsync(env, tmp_path, "doctor", "--json")
    # Then the database check failed pointing at `calsync db upgrade`, exit 1
    assert result.returncode == 1
    ok, detail = checks(result)["database"]
    assert not ok and "calsync db upgrade" in detail


def test_doctor_without_mail_settings_fails_configuration_and_smtp(run):
    # Given no CALSYNC_SMTP_URL or CALSYNC_MAIL_FROM (the worker needs both)
    # When doctor runs
    result = run("doctor", "--json", CALSYNC_SMTP_URL="", CALSYNC_MAIL_FROM="")
    # Then configuration names both variables, smtp fails, exit 1
    assert result.returncode == 1
    found = checks(result)
    assert not found["configuration"][0]
    assert "CALSYNC_SMTP_URL" in found["configuration"][1] and "CALSYNC_MAIL_FROM" in found["configuration"][1]
    assert not found["smtp"][0]


def test_doctor_talks_smtp_and_never_prints_the_password(run):
    # Given a real SMTP server, and a URL with credentials pointing at a port nothing listens on
    with SmtpServer() as smtp:
        # When doctor runs against the server
        up = run("doctor", "--json", CALSYNC_SMTP_URL=smtp.url)
        # Then the smtp check connected and said EHLO
        assert up.returncode == 0, up.stdout
        ok, detail = checks(up)["smtp"]
        assert ok and "EHLO" in detail and str(smtp.port) in detail
    # When doctor runs against nothing
    down = run("doctor", "--json", CALSYNC_SMTP_URL="smtp://mailer:s3cr3t-pw@127.0.0.1:1")
    # Then the smtp check failed naming the address, and the password appears nowhere
    assert down.returncode == 1
    ok, detail = checks(down)["smtp"]
    assert not ok and "127.0.0.1:1" in detail
    assert "s3cr3t-pw" not in down.stdout + down.stderr


def test_doctor_reports_stored_credentials_the_keys_cannot_open(run, store):
    # Given a credential stored under key A
    key_a, key_b = new_key(), new_key()
    assert run("sessions", "upsert", "-", stdin=json.dumps(session_data()).encode()).returncode == 0
    with store.tx() as db:
        db.add(Integration(user_id="u-1", provider="google", credentials=CredentialBox([key_a]).seal({"t": "x"})))
    # When doctor runs with only key B configured
    wrong = run("doctor", "--json", CALSYNC_SECRET_KEYS=key_b)
    # Then the secret-keys check failed, counting what opened, and no key is printed
    assert wrong.returncode == 1
    ok, detail = checks(wrong)["secret keys"]
    assert not ok and "0 of 1" in detail
    assert key_a not in wrong.stdout and key_b not in wrong.stdout
    # When key A is added behind B (rotation in progress)
    right = run("doctor", "--json", CALSYNC_SECRET_KEYS=f"{key_b},{key_a}")
    # Then the credential opens
    ok, detail = checks(right)["secret keys"]
    assert ok and "1 of 1" in detail
    # When no key is set at all
    missing = run("doctor", "--json")
    # Then the check names the variable
    ok, detail = checks(missing)["secret keys"]
    assert not ok and "CALSYNC_SECRET_KEYS" in detail


def test_doctor_does_not_count_the_wiped_credentials_of_a_disconnected_integration(run, store):
    # Given one live credential and one integration disconnected earlier (its credentials wiped)
    key = new_key()
    assert run("sessions", "upsert", "-", stdin=json.dumps(session_data()).encode()).returncode == 0
    with store.tx() as db:
        db.add(Integration(user_id="u-1", provider="google", credentials=CredentialBox([key]).seal({"t": "x"})))
        db.add(Integration(user_id="u-2", provider="google", credentials=b"", status="disconnected"))
    # When doctor runs
    result = run("doctor", "--json", CALSYNC_SECRET_KEYS=key)
    # Then the keys check passes: only credentials that should open are tried
    ok, detail = checks(result)["secret keys"]
    assert ok and "1 of 1" in detail


def test_doctor_probes_configured_provider_endpoints(run):
    # Given Google configured against a port nothing listens on
    # When doctor runs
    result = run("doctor", "--json", CALSYNC_GOOGLE_CLIENT_ID="client", CALSYNC_SECRET_KEYS=new_key(),
                 CALSYNC_GOOGLE_TOKEN_URL="http://127.0.0.1:1/token", CALSYNC_GOOGLE_API_URL="http://127.0.0.1:1/")
    # Then the google check failed naming the endpoint, exit 1
    assert result.returncode == 1
    found = checks(result)
    assert "providers" not in found
    ok, detail = found["google"]
    assert not ok and "127.0.0.1:1" in detail


# -- pure parts --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [("30m", timedelta(minutes=30)), ("12h", timedelta(hours=12)),
                                            ("7d", timedelta(days=7)), ("2w", timedelta(weeks=2)),
                                            ("45s", timedelta(seconds=45)), (" 7D ", timedelta(days=7))])
def test_durations_parse(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["soon", "7", "d", "-1d", "1.5h", "7 days", ""])
def test_bad_durations_are_refused(text):
    with pytest.raises(InvalidInput, match="--older-than"):
        parse_duration(text)


def test_last_error_is_the_last_non_empty_line():
    assert last_line("Traceback (most recent call last):\n  File x\nValueError: boom\n\n") == "ValueError: boom"
    assert last_line(None) is None and last_line("\n \n") is None


def _store(placements=(), reconnect=0, lag_seconds=None) -> StoreStats:
    lagging = Lagging(0) if lag_seconds is None else Lagging(1, "s-1", utcnow(), lag_seconds)
    return StoreStats(list(placements), reconnect, ["u"] * reconnect, lagging)


def test_problems_thresholds():
    queue = QueueStats("calsync", queued=500, in_flight=4, delayed=30, dead_letters=0)
    # A backlog and a lag under 15 minutes are work in progress, not problems
    assert find_problems(queue, _store([("placed", "email", 3), ("retrying", "google", 2)], lag_seconds=899)) == []
    # Each of these is one
    assert len(find_problems(QueueStats("calsync", 0, 0, 0, dead_letters=2), _store())) == 1
    assert len(find_problems(None, _store([("failed", "email", 1), ("drift", "google", 1)]))) == 2
    assert len(find_problems(None, _store(reconnect=1))) == 1
    assert "s-1" in find_problems(None, _store(lag_seconds=901))[0]
