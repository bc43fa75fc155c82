"""The ``calsync`` CLI as an operator meets it: exit codes, stdout, stderr, files on disk.

Commands run in-process (tests/support/cli.py); a few run as real processes (``subprocess=True``,
the worker, the demo, a broker other than the embedded one).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sync.testing.mail import read_outbox
from tests.support.cli import assert_one_line_error, calsync, cli_env, upgraded_runner
from tests.support.factories import session_data

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path)


@pytest.fixture
def run(env: dict[str, str], tmp_path: Path):
    """calsync against a migrated database."""
    return upgraded_runner(env, tmp_path)


def invites(folder: Path) -> list[tuple[str, str, str, int]]:
    """(recipient, METHOD, UID, SEQUENCE) of every .eml, read back the way a mail client would."""
    return [(m.recipient, m.method, m.uid, m.sequence) for m in read_outbox(folder)]


def test_db_upgrade_reports_the_revision_and_is_repeatable(env, tmp_path: Path):
    # Given an empty SQLite database
    # When it is upgraded twice
    first = calsync(env, tmp_path, "db", "upgrade", subprocess=True)  # a real process: its exit status and stdout
    second = calsync(env, tmp_path, "db", "upgrade", "--json")
    # Then the first run migrates to head and the second finds nothing to do
    assert first.returncode == 0 and "→" in first.stdout
    report = json.loads(second.stdout)
    assert second.returncode == 0 and report["from"] == report["to"] == report["head"]


def test_upsert_delivers_an_invite_to_each_participant(run, tmp_path: Path):
    # Given a session file with a private field the platform should not have sent
    path = tmp_path / "session.json"
    path.write_text(json.dumps(session_data(private_notes="do not store")))
    # When it is pushed in with the embedded broker
    result = run("sessions", "upsert", str(path))
    # Then it is reported created and each participant's invite is on disk
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\t")[:2] == ["sess-42", "created"]
    sent = invites(tmp_path / "out")
    assert sorted(to for to, *_ in sent) == ["mentee@example.com", "mentor@example.com"]
    assert {(method, seq) for _, method, _, seq in sent} == {("REQUEST", 0)}
    # And `sessions show --json` lists both placements as placed
    shown = run("sessions", "show", "sess-42", "--json")
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert "private_notes" not in view["session"]
    assert [(p["recipient"], p["state"], p["live"]) for p in view["placements"]] == [
        ("mentor@example.com", "placed", True), ("mentee@example.com", "placed", True)]
    # And the plain view has the same placements, one line each
    plain = run("sessions", "show", "sess-42")
    assert plain.returncode == 0 and plain.stdout.count("\tplaced\t") == 2


def test_cancel_mails_a_cancel_with_the_same_uid_and_a_higher_sequence(run, tmp_path: Path):
    # Given a delivered session
    assert run("sessions", "upsert", "-", stdin=json.dumps(session_data()).encode()).returncode == 0
    # When it is cancelled from the CLI
    result = run("sessions", "cancel", "sess-42", "--json")
    # Then each participant gets a CANCEL for the same calendar entry
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outcome"] == "updated"
    sent = invites(tmp_path / "out")
    requests = {to: (uid, seq) for to, method, uid, seq in sent if method == "REQUEST"}
    cancels = {to: (uid, seq) for to, method, uid, seq in sent if method == "CANCEL"}
    assert cancels.keys() == requests.keys()
    assert all(cancels[to][0] == requests[to][0] and cancels[to][1] > requests[to][1] for to in cancels)
    # And a second cancel changes nothing
    again = run("sessions", "cancel", "sess-42")
    assert again.returncode == 0 and "already cancelled" in again.stdout
    assert len(invites(tmp_path / "out")) == len(sent)


def test_naive_datetime_names_the_field_and_stores_nothing(run):
    # Given a session whose start has no UTC offset
    data = session_data(start="2026-12-01T15:00:00")
    # When it is pushed in on stdin
    result = run("sessions", "upsert", "-", stdin=json.dumps(data).encode())
    # Then the element is reported invalid, naming the field, without a traceback
    assert result.returncode == 1
    assert result.stdout.strip().splitlines() == [result.stdout.strip()]
    assert "invalid" in result.stdout and "start:" in result.stdout
    assert "Traceback" not in result.stderr
    # And nothing was stored
    assert run("sessions", "show", "sess-42").returncode == 2


def test_non_utf8_input_is_one_line_error(run):
    # Given bytes that are not UTF-8
    # When they arrive on stdin
    result = run("sessions", "upsert", "-", stdin=b'{"id": "\xff\xfe"}')
    # Then the command exits 2 with one line naming the input
    assert result.returncode == 2
    assert_one_line_error(result, "input", "UTF-8")


def test_batch_with_one_bad_element_stores_the_good_one(run):
    # Given an array whose first element ends before it starts
    bad = session_data(id="sess-bad", end="2026-12-01T14:00:00-05:00")
    good = session_data(id="sess-good")
    # When the batch is pushed in
    result = run("sessions", "upsert", "-", stdin=json.dumps([bad, good]).encode())
    # Then each element gets its own line: the bad one names its field, the good one is created
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("sess-bad\tinvalid\t") and "[0].end" in lines[0]
    assert lines[1].startswith("sess-good\tcreated\t")
    assert "Traceback" not in result.stderr
    # And only the good element was stored
    assert run("sessions", "show", "sess-good").returncode == 0
    assert run("sessions", "show", "sess-bad").returncode == 2


def test_stale_version_is_reported_and_not_applied(run):
    # Given version 2 of a session is stored
    assert run("sessions", "upsert", "-", stdin=json.dumps(session_data(version=2)).encode()).returncode == 0
    # When version 1 arrives late with another title
    late = session_data(version=1, title="Old title")
    result = run("sessions", "upsert", "-", stdin=json.dumps(late).encode())
    # Then it is reported stale and the stored session keeps its title
    assert result.returncode == 1 and "\tstale\t" in result.stdout
    shown = json.loads(run("sessions", "show", "sess-42", "--json").stdout)
    assert shown["session"]["title"] == "Session 2: Setting goals"


def test_unknown_session_is_one_line_exit_2(run):
    # Given no session "nope"
    # When an operator asks for it
    result = run("sessions", "show", "nope")
    # Then the answer is one line, exit 2
    assert result.returncode == 2
    assert_one_line_error(result, "nope")


def test_unknown_flag_is_a_usage_error(run):
    # Given a flag upsert does not have
    # When it is used
    result = run("sessions", "upsert", "--frobnicate", "x.json")
    # Then click reports a usage error
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_missing_smtp_setting_is_one_line_naming_the_variable(env, tmp_path: Path):
    # Given a migrated database but no CALSYNC_SMTP_URL
    assert calsync(env, tmp_path, "db", "upgrade").returncode == 0
    del env["CALSYNC_SMTP_URL"]
    # When a session is pushed in with the embedded broker (which must deliver)
    result = calsync(env, tmp_path, "sessions", "upsert", "-", stdin=json.dumps(session_data()).encode())
    # Then the command says which variable is missing
    assert result.returncode == 2
    assert_one_line_error(result, "CALSYNC_SMTP_URL")


def test_unmigrated_database_is_one_line_pointing_at_db_upgrade(env, tmp_path: Path):
    # Given a database nobody has migrated
    # When a session is looked up
    result = calsync(env, tmp_path, "sessions", "show", "sess-42", subprocess=True)
    # Then the operator is told what to run, in one line (a real process: nothing else reaches its stderr)
    assert result.returncode == 1
    assert_one_line_error(result, "calsync db upgrade")


def test_unreachable_redis_is_one_line_and_the_sweeper_repairs_it(run, env, tmp_path: Path):
    # Given a Redis broker that is down
    down = {**env, "CALSYNC_BROKER_URL": "redis://127.0.0.1:1/0"}
    # When a session is pushed in
    result = calsync(down, tmp_path, "sessions", "upsert", "-", stdin=json.dumps(session_data()).encode())
    # Then the failed enqueue is one line, and the session was stored but not delivered
    assert result.returncode == 1
    assert_one_line_error(result, "broker error", "CALSYNC_BROKER_URL")
    assert not invites(tmp_path / "out")
    # When the sweeper runs with a working broker
    swept = run("sweep", "--json")
    # Then it finds the session lagging and delivers it
    assert json.loads(swept.stdout) == {"enqueued": 1, "sessions": ["sess-42"]}
    assert len(invites(tmp_path / "out")) == 2


def test_with_the_broker_down_each_element_and_a_cancel_say_stored_not_enqueued(run, env, tmp_path: Path):
    # Given a stored session, an unchanged re-push, an invalid element, and a Redis broker that is down
    assert run("sessions", "upsert", "-", stdin=json.dumps(session_data()).encode()).returncode == 0
    down = {**env, "CALSYNC_BROKER_URL": "redis://127.0.0.1:1/0"}
    batch = [session_data(), session_data(id="sess-43"), {"id": "bad"}]
    # When the batch is pushed in
    result = calsync(down, tmp_path, "sessions", "upsert", "-", "--json", stdin=json.dumps(batch).encode())
    # Then only the element that needed a message says it was not queued; exit 1
    assert result.returncode == 1
    queued = {r["session_id"]: (r["outcome"], r["queued"]) for r in json.loads(result.stdout)}
    assert queued == {"sess-42": ("unchanged", None), "sess-43": ("created", False), "bad": ("invalid", None)}
    # When a cancellation comes in while it is still down
    cancelled = calsync(down, tmp_path, "sessions", "cancel", "sess-42")
    # Then it is stored, reported as not enqueued on one line each, and the exit status is 1
    assert cancelled.returncode == 1
    assert cancelled.stdout.strip() == "sess-42\tcancelled\tstored, not enqueued (broker unreachable)"
    assert_one_line_error(cancelled, "broker error", "CALSYNC_BROKER_URL")
    # And the sweeper finds both once the broker is back
    swept = run("sweep", "--json")
    assert sorted(json.loads(swept.stdout)["sessions"]) == ["sess-42", "sess-43"]


def test_worker_refuses_the_embedded_broker(env, tmp_path: Path):
    # Given CALSYNC_BROKER_URL=memory://, whose queue lives inside each command
    # When a standalone worker is started
    result = calsync(env, tmp_path, "worker")
    # Then it refuses in one line instead of idling forever
    assert result.returncode == 2
    assert_one_line_error(result, "CALSYNC_BROKER_URL")


def test_sweep_reports_nothing_lagging_after_delivery(run):
    # Given a delivered session
    assert run("sessions", "upsert", "-", stdin=json.dumps(session_data()).encode()).returncode == 0
    # When the sweeper runs
    result = run("sweep", "--json")
    # Then it finds nothing to re-enqueue
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"enqueued": 0, "sessions": []}


def users_folder(root: Path) -> dict[str, bytes]:
    """A folder holding someone's own calsync database and outbox: what the demo must never touch."""
    (root / "outbox").mkdir(parents=True)
    (root / "calsync.db").write_bytes(b"SQLite format 3\x00 the user's sessions")
    (root / "calsync.db-wal").write_bytes(b"the user's last writes")
    (root / "outbox" / "sent.eml").write_bytes(b"Subject: the user's invite\r\n\r\n")
    return snapshot(root)


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_refuses_a_folder_it_did_not_create_and_leaves_it_as_it_was(env, tmp_path: Path):
    # Given the operator's working folder holds their calsync.db and outbox/, and CALSYNC_DATABASE_URL points there
    work = tmp_path / "work"
    before = users_folder(work)
    env = {**env, "CALSYNC_DATABASE_URL": f"sqlite:///{work / 'calsync.db'}"}
    # When the demo is told to use that folder, by name and as "."
    by_name = calsync(env, tmp_path, "demo", "--out", str(work))
    dot = calsync(env, work, "demo", "--out", ".", "--json")
    # Then each refuses in one line, exit 2, naming --out
    for result in (by_name, dot):
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert_one_line_error(result, "--out", "not empty")
        assert result.stdout == ""
    # And not one byte of the user's database or invites changed, and nothing was added
    assert snapshot(work) == before


def test_demo_into_an_unwritable_place_is_one_line(env, tmp_path: Path):
    # Given places no folder can be created in: under a file, and inside /proc
    (tmp_path / "a-file").write_text("x")
    for place in (tmp_path / "a-file" / "demo", Path("/proc/calsync-demo")):
        # When the demo is pointed there
        result = calsync(env, tmp_path, "demo", "--out", str(place))
        # Then it is one line, exit 2, naming --out
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert_one_line_error(result, "--out")


def test_demo_claims_only_folders_it_created(tmp_path: Path):
    from sync.demo.folder import MARKER, FolderRefused, claim_folder

    # Given a folder that does not exist yet
    fresh = tmp_path / "fresh" / "demo"
    # When the demo claims it
    assert claim_folder(fresh) == fresh.resolve()
    # Then it is created with the demo's marker in it
    assert (fresh / MARKER).is_file()
    # Given an empty folder the operator made for the demo
    empty = tmp_path / "empty"
    empty.mkdir()
    # When the demo claims it, Then it adopts it
    claim_folder(empty)
    assert (empty / MARKER).is_file()
    # Given a folder an earlier demo created, holding that demo's files and one of the operator's
    (fresh / "outbox").mkdir()
    (fresh / "calsync.db").write_text("old demo")
    (fresh / "outbox" / "old.eml").write_text("old demo")
    (fresh / "notes.txt").write_text("mine")
    # When the demo claims it again, Then it is accepted and the operator's file is still there
    claim_folder(fresh)
    assert (fresh / "notes.txt").read_text() == "mine"
    # Given folders the demo did not create: holding the user's data, a file, a place under a file
    users = tmp_path / "users"
    before = users_folder(users)
    (tmp_path / "a-file").write_text("x")
    for place in (users, tmp_path / "a-file", tmp_path / "a-file" / "demo"):
        # When the demo claims one, Then it refuses, naming --out, and leaves everything as it was
        with pytest.raises(FolderRefused, match="--out"):
            claim_folder(place)
    assert snapshot(users) == before
    # And a marker that is a folder, not the file the demo writes, does not make a folder the demo's
    fake = tmp_path / "fake"
    (fake / MARKER).mkdir(parents=True)
    with pytest.raises(FolderRefused):
        claim_folder(fake)


def test_demo_prints_a_table_and_leaves_readable_invites(env, tmp_path: Path):
    # Given settings that point at servers that do not exist, and at the operator's own SQLite database
    work = tmp_path / "work"
    users = users_folder(work / "mine")
    env = {**env, "CALSYNC_BROKER_URL": "redis://127.0.0.1:1/0",
           "CALSYNC_DATABASE_URL": f"sqlite:///{work / 'mine' / 'calsync.db'}",
           "CALSYNC_GOOGLE_API_URL": "http://127.0.0.1:1/", "CALSYNC_GOOGLE_TOKEN_URL": "http://127.0.0.1:1/token",
           "CALSYNC_MS_CLIENT_ID": "elsewhere", "CALSYNC_MS_AUTHORITY_URL": "https://127.0.0.1:1",
           "CALSYNC_GRAPH_URL": "https://127.0.0.1:1/v1.0"}
    out = work / "demo-out"
    # When the demo runs with its default folder
    result = calsync(env, work, "demo")
    # Then it ignores them, runs embedded with its own Google and Graph emulators, and prints the summary tables
    assert result.returncode == 0, result.stderr
    # And it wrote only into ./demo-out, which it created and marked as its own; the user's database is untouched
    assert (out / ".calsync-demo").is_file() and (out / "calsync.db").is_file()
    assert snapshot(work / "mine") == users
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("person\t"))
    assert header.split("\t") == ["person", "session", "channel", "state", "what landed"]
    assert next(line for line in lines if line.startswith("user\t")).split("\t")[:3] == ["user", "provider", "status"]
    assert str(out / "outbox") in result.stdout
    # And the step where Alan's token died shows him switched to email and needing a reconnect
    assert any("needs_reconnect" in line and "invalid_grant" in line for line in lines)
    # And the table shows every channel: Katherine's one-to-one is an event on her Outlook calendar
    rows = {tuple(line.split("\t")[:4]): line.split("\t")[4] for line in lines if line.count("\t") == 4}
    assert rows[("Katherine Johnson", "katherine-1", "outlook", "placed")].endswith("“Session 1: Setting goals”")
    assert rows[("Katherine Johnson", "kickoff", "outlook", "withdrawn")] == "no event (deleted)"
    # And every invite parses; only the people by email got any, besides Alan while his token was dead
    sent = invites(out / "outbox")
    assert len(sent) >= 8
    assert {to for to, *_ in sent} == {"alan@example.com", "grace@example.com", "margaret@example.com"}
    # (each of Alan's two sessions went out by email, then was withdrawn when he reconnected)
    alans: dict[str, list[str]] = {}
    for to, method, uid, _ in sent:
        if to == "alan@example.com":
            alans.setdefault(uid, []).append(method)
    assert list(alans.values()) == [["REQUEST", "CANCEL"], ["REQUEST", "CANCEL"]]
    # And Katherine leaving the kickoff on Outlook mailed no one: the only CANCELs are Alan's withdrawn
    # invites and Grace's cancelled session
    assert {to for to, method, *_ in sent if method == "CANCEL"} == {"alan@example.com", "grace@example.com"}
    # When it runs again in the folder it created, named explicitly, as JSON
    again = calsync(env, tmp_path, "demo", "--out", str(out), "--json")
    # Then it starts from scratch and reports the same outcome, with its database in that folder
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["problems"] == [] and len(invites(out / "outbox")) == len(sent)
    assert report["database"] == f"sqlite:///{out / 'calsync.db'}"
    assert snapshot(work / "mine") == users
    assert {r["state"] for r in report["rows"]} == {"placed", "withdrawn"}
    assert report["google"].startswith("http://127.0.0.1:") and report["outlook"].startswith("https://127.0.0.1:")
    # And what landed on the calendars was read back: Alan's kickoff is a Google event again,
    # Katherine's one-to-one an Outlook event, and her kickoff event is gone
    alan = {r["channel"]: r for r in report["rows"] if r["person"] == "Alan Turing" and r["session_id"] == "kickoff"}
    assert alan["google"]["state"] == "placed" and alan["google"]["event_summary"] == "Kickoff: meet your cohort"
    assert alan["email"]["state"] == "withdrawn" and alan["email"]["history"].endswith("CANCEL:1")
    katherine = {r["session_id"]: r for r in report["rows"] if r["person"] == "Katherine Johnson"}
    assert {r["channel"] for r in katherine.values()} == {"outlook"}
    one_to_one = katherine["katherine-1"]
    assert one_to_one["event_id"] and one_to_one["event_summary"] == "Session 1: Setting goals"
    assert katherine["kickoff"]["state"] == "withdrawn" and katherine["kickoff"]["event_id"] is None
    assert {i["user_id"]: (i["provider"], i["status"], i["history"]) for i in report["integrations"]} == {
        "demo-ada": ("google", "active", "active"),
        "demo-alan": ("google", "active", "active → needs_reconnect → active"),
        "demo-katherine": ("outlook", "active", "active")}


def test_times_print_to_the_minute_in_utc_without_microseconds():
    from datetime import datetime, timedelta, timezone

    from sync.cli.output import cell

    # Given times as the store and the JSON output hold them
    stored = datetime(2026, 12, 3, 2, 19, 11, 123456, tzinfo=timezone(timedelta(hours=1)))
    # Then a table cell shows them to the minute, in UTC
    assert cell(stored) == "2026-12-03 01:19 UTC"
    assert cell(stored.isoformat()) == "2026-12-03 01:19 UTC"
    assert cell("sess-2026-12-03") == "sess-2026-12-03"
