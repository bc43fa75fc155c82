"""Support commands as an operator meets them: ``resync``, ``diagnose``, ``drift scan`` as subprocesses.

The Google emulator runs in this test process; each CLI subprocess is pointed
at it through CALSYNC_GOOGLE_*, with a scratch SQLite database and a file
outbox. The embedded memory:// broker delivers inside each command, except in
the `resync --wait` test, which uses real Redis and a `calsync worker` process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import select

from sync import api
from sync.engine.runtime import Runtime
from sync.store.db import Store
from sync.store.models import Placement
from sync.testing.emulators.google import GoogleEmulator
from tests.support.cli import assert_one_line_error, calsync, cli_env, command, google_env, runner
from tests.support.factories import make_settings, session_data
from tests.support.services import REDIS_URL, require_service

MENTOR = "mentor@example.com"
TITLE = "Session 2: Setting goals"

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path, emu: GoogleEmulator) -> dict[str, str]:
    """The CLI's clean environment, pointed at the Google emulator."""
    return cli_env(tmp_path, **google_env(emu))


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `calsync db upgrade` per module; each test starts from a copy of that database."""
    folder = tmp_path_factory.mktemp("template")
    upgraded = calsync(cli_env(folder), folder, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    return folder / "cli.db"


@pytest.fixture
def run(env: dict[str, str], tmp_path: Path, migrated: Path):
    """calsync against a migrated database."""
    shutil.copyfile(migrated, tmp_path / "cli.db")
    return runner(env, tmp_path)


def upcoming(**overrides: object) -> dict[str, object]:
    """The contract's session, a week from now (diagnose and drift look at upcoming sessions)."""
    start = (datetime.now(timezone.utc) + timedelta(days=7)).replace(minute=0, second=0, microsecond=0)
    return session_data(start=start.isoformat(), end=(start + timedelta(hours=1)).isoformat(), **overrides)


def connect_mentor(run, emu: GoogleEmulator) -> str:
    token = emu.add_user(MENTOR)
    imported = run("integrations", "import", "-", stdin=json.dumps({
        "user_id": "u-1", "provider": "google", "account_email": MENTOR, "calendar_id": "primary",
        "refresh_token": token}).encode())
    assert imported.returncode == 0, imported.stdout + imported.stderr
    return token


def book(run, data: dict[str, object]) -> None:
    result = run("sessions", "upsert", "-", stdin=json.dumps(data).encode())
    assert result.returncode == 0, result.stdout + result.stderr


def store_only(env: dict[str, str], data: dict[str, object]) -> None:
    """Store a session as the platform would, but lose its message: nothing is enqueued or delivered."""
    url = env["CALSYNC_DATABASE_URL"]
    assert api.upsert_session(data, rt=Runtime(make_settings(url), Store(url)), enqueue=False).ok


def placements(env: dict[str, str]) -> list[tuple[object, ...]]:
    """Every placement row as stored (read directly: cheaper than a subprocess per look)."""
    with Store(env["CALSYNC_DATABASE_URL"]).tx() as db:
        return [tuple(getattr(p, c.name) for c in Placement.__table__.columns)
                for p in db.scalars(select(Placement).order_by(Placement.id))]


def differences(report: dict[str, object]) -> dict[str, list[str]]:
    return {p["user_id"]: [d["kind"] for d in p["differences"]] for p in report["participants"]}


# -- the drift test --------------------------------------------------------------------------------


def test_event_moved_then_deleted_is_diagnosed_and_resync_repairs_it(run, emu):
    # Given a session on the Google mentor's calendar (and the mentee's emailed invite)
    connect_mentor(run, emu)
    data = upcoming()
    book(run, data)
    [event] = emu.events(MENTOR)
    # When the mentor drags the event a day later in their calendar
    later = {k: {"dateTime": (datetime.fromisoformat(str(data[k])) + timedelta(days=1)).isoformat()}
             for k in ("start", "end")}
    emu.modify_event(MENTOR, event["id"], later)
    moved = run("diagnose", "session", "sess-42")
    # Then diagnose reports the mentor's copy moved (and only that), says what to run, and exits 1
    assert moved.returncode == 1, moved.stderr
    assert "\tmoved: " in moved.stdout and "drift: moved for 1 participant(s)" in moved.stdout
    assert "calsync resync --session sess-42" in moved.stdout
    # When they then delete it
    emu.cancel_event(MENTOR, event["id"])
    deleted = run("diagnose", "session", "sess-42", "--json")
    # Then diagnose reports it deleted by the person, with what was expected and what the calendar holds
    assert deleted.returncode == 1, deleted.stderr
    report = json.loads(deleted.stdout)
    assert report["ok"] is False and differences(report) == {"u-1": ["deleted"], "u-2": []}
    mentor = next(p for p in report["participants"] if p["user_id"] == "u-1")
    assert mentor["channel"] == "google" and mentor["expected"]["title"] == TITLE
    assert [(a["id"], a["cancelled"]) for a in mentor["actual"]] == [(event["id"], True)]
    mentee = next(p for p in report["participants"] if p["user_id"] == "u-2")
    assert mentee["channel"] == "email" and mentee["note"].startswith("last invite REQUEST seq 0")
    # And a drift scan finds it too
    scanned = run("drift", "scan", "--all", "--json")
    assert scanned.returncode == 1, scanned.stderr
    assert json.loads(scanned.stdout)["counts"] == {"deleted": 1}
    # When support resyncs the session (the session is authoritative)
    repaired = run("resync", "--session", "sess-42", "--json")
    # Then the drift is repaired: one event placed again, nothing else touched
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    result = json.loads(repaired.stdout)
    assert result["repaired"] == [{"user_id": "u-1", "channel": "google", "differences": ["deleted"]}]
    assert result["enqueued"] == ["sess-42"]
    assert result["results"] == {"created": 1, "updated": 0, "withdrawn": 0, "unchanged": 1, "failed": 0, "retrying": 0}
    # And diagnose now reports the session clean, exit 0
    after = run("diagnose", "session", "sess-42", "--json")
    assert after.returncode == 0, after.stdout
    assert differences(json.loads(after.stdout)) == {"u-1": [], "u-2": []}
    # And the calendar holds exactly one event, at the session's time and title
    [fixed] = emu.events(MENTOR)
    assert fixed["summary"] == TITLE
    start = datetime.fromisoformat(fixed["start"]["dateTime"].replace("Z", "+00:00"))
    assert start == datetime.fromisoformat(str(data["start"]))
    assert run("drift", "scan", "--user", "u-1").returncode == 0


# -- resync ----------------------------------------------------------------------------------------


def test_resync_dry_run_prints_the_plan_and_changes_nothing(run, env, emu, tmp_path: Path):
    # Given a connected mentor and a session stored but never delivered (its message was lost)
    connect_mentor(run, emu)
    store_only(env, upcoming())
    before = placements(env)
    emu.clear_log()
    # When support dry-runs a resync of everything, as JSON and plain
    dry = run("resync", "--all", "--dry-run", "--json")
    plain = run("resync", "--program", "Spring Cohort", "--since", "2026-01-01", "--dry-run")
    # Then the plan names, per participant, the channel, the action and why
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert [(p["session_id"], p["user_id"], p["channel"], p["action"], p["why"]) for p in report["plan"]] == [
        ("sess-42", "u-1", "google", "create", "new placement"),
        ("sess-42", "u-2", "email", "create", "new placement")]
    assert report["would_enqueue"] == ["sess-42"] and report["enqueued"] == []
    assert plain.returncode == 0, plain.stderr
    assert "sess-42\tu-1\tgoogle\tcreate\tnew placement" in plain.stdout and "nothing changed" in plain.stdout
    # And nothing changed: no placement, no invite, no calendar call
    assert placements(env) == before
    assert not list((tmp_path / "out").glob("*.eml"))
    assert emu.requests(kind="api") == [] and emu.events(MENTOR) == []


def test_resync_of_settled_sessions_enqueues_nothing(run, env, emu, tmp_path: Path):
    # Given a delivered session: an event on the mentor's calendar, an invite to the mentee
    connect_mentor(run, emu)
    book(run, upcoming())
    before = placements(env)
    sent = sorted((tmp_path / "out").glob("*.eml"))
    emu.clear_log()
    # When support resyncs everything, and then the mentor's sessions
    everything = run("resync", "--all", "--json")
    mentor = run("resync", "--user", "u-1")
    # Then nothing is enqueued and every placement is reported unchanged
    assert everything.returncode == 0, everything.stderr
    report = json.loads(everything.stdout)
    assert report["enqueued"] == [] and report["counts"] == {"nothing": 2}
    assert report["results"] == {"created": 0, "updated": 0, "withdrawn": 0, "unchanged": 2, "failed": 0, "retrying": 0}
    assert mentor.returncode == 0 and "enqueued 0" in mentor.stdout
    # And nothing went out: no calendar call, no new invite, placements as they were
    assert emu.requests(kind="api") == []
    assert sorted((tmp_path / "out").glob("*.eml")) == sent
    assert placements(env) == before


# -- diagnose user ---------------------------------------------------------------------------------


def test_diagnose_user_says_reconnect_after_the_token_was_revoked(run, emu):
    # Given a mentor whose session is on their Google calendar
    token = connect_mentor(run, emu)
    book(run, upcoming())
    healthy = run("diagnose", "user", "u-1", "--json")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    report = json.loads(healthy.stdout)
    assert report["channel"] == "google" and report["live_check"]["ok"] is True
    upcoming_ = [(u["session_id"], u["channel"], u["state"]) for u in report["upcoming"]]
    assert upcoming_ == [("sess-42", "google", "placed")]
    # When the mentor revokes calsync in their Google account and the session is then edited
    emu.revoke(token)
    book(run, upcoming(version=2, title="Renamed"))
    # Then diagnose user says to ask them to reconnect, with the reason, and exits 1
    revoked = run("diagnose", "user", "u-1", "--json")
    assert revoked.returncode == 1, revoked.stderr
    report = json.loads(revoked.stdout)
    assert report["ok"] is False and report["channel"] == "email"
    assert "ask them to reconnect; meanwhile invites go by email" in report["verdict"]
    assert [(i["provider"], i["status"]) for i in report["integrations"]] == [("google", "needs_reconnect")]
    assert "invalid_grant" in report["integrations"][0]["reason"]
    # And the plain view ends with the same verdict line
    plain = run("diagnose", "user", "u-1")
    assert plain.returncode == 1 and plain.stdout.strip().splitlines()[-1] == f"verdict: {report['verdict']}"


def test_provider_down_shows_the_live_check_failed(run, emu):
    # Given a mentor whose session is on their Google calendar
    connect_mentor(run, emu)
    book(run, upcoming())
    # When Google cannot be reached
    emu.stop()
    user = run("diagnose", "user", "u-1", "--json")
    session = run("diagnose", "session", "sess-42", "--json")
    # Then diagnose user reports the live check failed, in its verdict, exit 1, without a traceback
    assert user.returncode == 1 and "Traceback" not in user.stderr, user.stderr
    report = json.loads(user.stdout)
    assert report["live_check"]["ok"] is False and "unreachable" in report["live_check"]["detail"]
    assert report["verdict"].startswith("calendar check failed")
    # And diagnose session says the calendar could not be read, exit 1
    assert session.returncode == 1 and "Traceback" not in session.stderr, session.stderr
    mentor = next(p for p in json.loads(session.stdout)["participants"] if p["user_id"] == "u-1")
    assert mentor["note"].startswith("could not read the calendar") and mentor["differences"] == []


# -- bad input -------------------------------------------------------------------------------------


BAD_INPUT = [
    (["resync", "--all", "--frobnicate"], ["--frobnicate"]),
    (["diagnose", "user", "u-1", "--frobnicate"], ["--frobnicate"]),
    (["drift", "scan", "--frobnicate"], ["--frobnicate"]),
    (["resync", "--dry-run"], ["choose exactly one of --session, --user, --program, --all"]),
    (["resync", "--user", "u-1", "--all"], ["choose exactly one of --session, --user, --program, --all"]),
    (["resync", "--all", "--since", "yesterday"], ["--since", "yesterday"]),
    (["resync", "--session", "nope"], ["nope"]),
    (["resync", "--user", "nobody"], ["nobody"]),
    (["resync", "--program", "No Such"], ["No Such"]),
    (["resync", "--program", "No Such", "--dry-run"], ["No Such"]),
    (["diagnose", "session", "nope"], ["nope"]),
    (["diagnose", "user", "nobody"], ["nobody"]),
    (["drift", "scan", "--user", "u-1", "--all"], ["--user", "--all"]),
    (["drift", "scan", "--days", "zero"], ["--days"]),
]


def test_bad_input_is_one_line_exit_2(run):
    # Given a migrated database with no sessions or people
    for args, words in BAD_INPUT:
        # When a support command gets input it cannot use
        result = run(*args)
        # Then it exits 2 with one line naming the problem, and prints nothing on stdout
        assert result.returncode == 2, (args, result.stdout + result.stderr)
        assert_one_line_error(result, *words)
        assert result.stdout == "", args


# -- resync --wait through Redis -------------------------------------------------------------------


@pytest.fixture
def redis_env(env: dict[str, str]):
    client = redis.Redis.from_url(REDIS_URL)
    require_service("Redis", client.ping)  # fails rather than skips when CI=true
    client.flushdb()
    yield {**env, "CALSYNC_BROKER_URL": REDIS_URL}, client
    client.flushdb()


def queued(client: redis.Redis) -> int:
    return client.hlen("dramatiq:calsync.msgs") + client.hlen("dramatiq:calsync.DQ.msgs")


def private_actor(client: redis.Redis, fn, **options: object) -> dramatiq.Actor:
    """A ``sync_session`` actor on a private broker over the test Redis: its messages are what calsync's are."""
    broker = RedisBroker(client=client)
    return dramatiq.actor(fn, broker=broker, queue_name="calsync", actor_name="sync_session", **options)


def someone_elses_delayed_message(client: redis.Redis) -> None:
    """A message another command enqueued, due in ten minutes: a backoff, a throttle, a bulk run's tail."""
    actor = private_actor(client, lambda session_id, retry_failed=False: None)
    actor.send_with_options(args=("someone-else",), delay=10 * 60 * 1000)


@pytest.mark.redis
def test_resync_wait_follows_a_redis_worker_and_counts_what_it_did(run, redis_env, emu, tmp_path: Path):
    environment, client = redis_env
    # Given a delivered session and a second one of the same program whose message was lost
    connect_mentor(run, emu)
    book(run, upcoming())
    store_only(environment, upcoming(id="sess-43", title="Session 3: Habits"))
    # And a dry run through Redis enqueues nothing
    dry = calsync(environment, tmp_path, "resync", "--program", "Spring Cohort", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["would_enqueue"] == ["sess-43"] and queued(client) == 0
    # And someone else's message waits in the delay queue, due long after this test
    someone_elses_delayed_message(client)
    # And a worker process consumes the queue
    worker = subprocess.Popen(command("worker", "--processes", "1", "--threads", "2"),
                              env=environment, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        # When support resyncs the program and waits
        waited = calsync(environment, tmp_path, "resync", "--program", "Spring Cohort", "--wait", "--timeout", "30",
                         "--json")
        # Then it returns once its own message is done, not when the whole queue drains
        assert waited.returncode == 0, waited.stdout + waited.stderr
        report = json.loads(waited.stdout)
        # And only the lost session was enqueued, and the counts come from what the worker did
        assert report["enqueued"] == ["sess-43"] and report["delivered"] is True
        assert report["results"] == {"created": 2, "updated": 0, "withdrawn": 0, "unchanged": 2, "failed": 0,
                                     "retrying": 0}
        assert queued(client) == 1  # someone else's message, still waiting for its time
        assert sorted(e["summary"] for e in emu.events(MENTOR)) == [TITLE, "Session 3: Habits"]
        # Given a third session whose calendar insert Google refuses for good
        store_only(environment, upcoming(id="sess-44", title="Session 4: Review"))
        emu.fail_next(1, status=400, reason="badRequest", method="POST")
        # When it is resynced and waited for, in plain output
        failed = calsync(environment, tmp_path, "resync", "--session", "sess-44", "--wait", "--timeout", "30")
        # Then progress lines and the counts are printed, and the failure makes it exit 1
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "timed out" not in failed.stderr
        lines = failed.stdout.splitlines()
        assert any(line.startswith("waiting\t") for line in lines)
        header = lines.index("created\tupdated\twithdrawn\tunchanged\tfailed\tretrying")
        assert lines[header + 1] == "1\t0\t0\t0\t1\t0"
    finally:
        # Its own process group: dramatiq's main process and its worker child. Nothing is in flight
        # any more, so a kill (instant) is as good as a graceful stop (seconds).
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(30)


@pytest.mark.redis
def test_resync_wait_times_out_without_a_worker(run, redis_env, emu, tmp_path: Path):
    environment, client = redis_env
    # Given a session whose message was lost, and no worker running
    store_only(environment, upcoming())
    started = time.monotonic()
    # When support resyncs it and waits at most one second
    result = calsync(environment, tmp_path, "resync", "--session", "sess-42", "--wait", "--timeout", "1", "--json")
    # Then it gives up with exit 1 and one line, leaving the message queued for a worker
    assert result.returncode == 1
    assert_one_line_error(result, "timed out")
    assert json.loads(result.stdout)["timed_out"] is True and queued(client) == 1
    assert time.monotonic() - started < 30


@pytest.mark.redis
def test_outstanding_follows_a_crash_retry_through_the_delay_queue_and_sees_a_dead_letter(redis_env):
    _, client = redis_env
    from sync.ops.resync import Outstanding

    # Given an actor whose first run crashes (Dramatiq retries it from the delay queue under a new Redis id)
    # and a second message that crashes until its retries run out
    runs: dict[str, int] = {}

    def flaky(session_id: str, retry_failed: bool = False) -> None:
        runs[session_id] = runs.get(session_id, 0) + 1
        if session_id == "doomed" or runs[session_id] == 1:
            raise RuntimeError("crash")

    actor = private_actor(client, flaky, max_retries=1, min_backoff=1500, max_backoff=1500)
    recovers, doomed = actor.send("recovers"), actor.send("doomed")
    # And someone else's message in the delay queue
    someone_elses_delayed_message(client)
    outstanding = Outstanding(client, [recovers, doomed])
    assert outstanding.poll() == 2
    # When a worker runs them
    worker = dramatiq.Worker(actor.broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        seen_waiting_for_retry = False
        deadline = time.monotonic() + 30
        while (left := outstanding.poll()) and time.monotonic() < deadline:
            # Then while a crashed message waits for its retry it still counts as outstanding
            seen_waiting_for_retry = seen_waiting_for_retry or (
                runs.get("recovers") == 1 and left >= 1 and client.hlen("dramatiq:calsync.DQ.msgs") > 1)
            time.sleep(0.1)
    finally:
        worker.stop()
    # And both end done: one after its retry succeeded, one dead-lettered (and named as such),
    # while someone else's message is still waiting
    assert left == 0 and seen_waiting_for_retry
    assert runs == {"recovers": 2, "doomed": 2}
    assert outstanding.dead == [doomed.message_id]
    assert client.hlen("dramatiq:calsync.DQ.msgs") == 1
