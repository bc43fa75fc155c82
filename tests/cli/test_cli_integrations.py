"""``calsync integrations`` as an operator meets it: a subprocess against the Google emulator.

The emulator runs in this test process (a real HTTP server on 127.0.0.1); the
CLI subprocess is pointed at it through CALSYNC_GOOGLE_*, with SQLite, the
in-process memory:// broker and a file outbox, so each command delivers
before it exits.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from sync.testing.emulators.google import GoogleEmulator
from sync.testing.mail import read_outbox
from tests.support.cli import (
    CLIENT_ID,
    CLIENT_SECRET,
    assert_one_line_error,
    cli_env,
    command,
    google_env,
    upgraded_runner,
)
from tests.support.factories import session_data

MENTOR = "mentor@example.com"
MENTEE = "mentee@example.com"
#: A broker URL nothing listens on.
BROKER_DOWN = "redis://127.0.0.1:1/0"

pytestmark = pytest.mark.slow


def to_mentor(tmp_path: Path) -> list[tuple[str, int]]:
    """(METHOD, SEQUENCE) of each invite mailed to the mentor, read back the way a mail client would."""
    found = [(m.method, m.sequence) for m in read_outbox(tmp_path / "out") if m.recipient == MENTOR]
    return sorted(found, key=lambda f: f[1])


@pytest.fixture
def env(tmp_path: Path, emu: GoogleEmulator) -> dict[str, str]:
    """The CLI's clean environment, pointed at the Google emulator."""
    return cli_env(tmp_path, **google_env(emu))


@pytest.fixture
def run(env: dict[str, str], tmp_path: Path):
    """calsync against a migrated database."""
    return upgraded_runner(env, tmp_path)


def mentor_import(token: str, **overrides: object) -> dict[str, object]:
    return {"user_id": "u-1", "provider": "google", "account_email": MENTOR, "calendar_id": "primary",
            "refresh_token": token, **overrides}


def push(run, data: object, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run("integrations", "import", "-", *args, stdin=json.dumps(data).encode(), **env)


def book(run, **overrides: object) -> None:
    result = run("sessions", "upsert", "-", stdin=json.dumps(session_data(**overrides)).encode())
    assert result.returncode == 0, result.stdout + result.stderr


def assert_no_secret(result: subprocess.CompletedProcess[str], *secrets: str) -> None:
    for secret in secrets:
        assert secret not in result.stdout and secret not in result.stderr


def refresh_works(emu: GoogleEmulator, token: str) -> bool:
    answer = requests.post(emu.token_url, data={"grant_type": "refresh_token", "refresh_token": token,
                                                "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}, timeout=5)
    return answer.status_code == 200


# -- import ----------------------------------------------------------------------------------------


def test_import_moves_the_person_onto_their_calendar_and_never_prints_the_token(run, emu, tmp_path: Path):
    # Given a booked session whose mentor so far gets emailed invites
    book(run)
    assert to_mentor(tmp_path) == [("REQUEST", 0)]
    # When the platform imports the mentor's Google refresh token
    token = emu.add_user(MENTOR)
    result = push(run, mentor_import(token))
    # Then the element is reported imported, and the token appears nowhere in the output
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "u-1\tok\timported"
    assert_no_secret(result, token)
    # And the session moved: the mentor's invite was cancelled and the event is on their calendar
    assert to_mentor(tmp_path) == [("REQUEST", 0), ("CANCEL", 1)]
    [event] = emu.events(MENTOR)
    assert event["summary"] == "Session 2: Setting goals"
    # And the database holds the token only encrypted
    assert token.encode() not in (tmp_path / "cli.db").read_bytes()
    # And `list --json` shows it active, without the token
    listed = run("integrations", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(r["user_id"], r["provider"], r["account_email"], r["status"]) for r in json.loads(listed.stdout)] == [
        ("u-1", "google", MENTOR, "active")]
    assert_no_secret(listed, token)


def test_import_invalid_element_names_the_field_and_stores_only_the_valid_one(run, emu):
    # Given a batch whose second element has an address that is not an email
    good = emu.add_user(MENTOR)
    bad = emu.add_user("mentee@example.com")
    batch = [mentor_import(good), mentor_import(bad, user_id="u-2", account_email="not-an-email")]
    # When it is imported
    result = push(run, batch)
    # Then the command exits 1; the bad element names its field and the good one is imported
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "u-1\tok\timported"
    assert lines[1].startswith("u-2\tinvalid\t") and "[1].account_email" in lines[1]
    assert "Traceback" not in result.stderr
    assert_no_secret(result, good, bad)
    # And only the good one was stored
    listed = json.loads(run("integrations", "list", "--json").stdout)
    assert [r["user_id"] for r in listed] == ["u-1"]


def test_import_without_a_token_names_refresh_token(run):
    # Given an element with no refresh token
    # When it is imported, as JSON
    no_token = {"user_id": "u-1", "provider": "google"}
    result = run("integrations", "import", "-", "--json", stdin=json.dumps(no_token).encode())
    # Then it is rejected naming the field
    assert result.returncode == 1
    [report] = json.loads(result.stdout)
    assert report["ok"] is False and [e["field"] for e in report["errors"]] == ["refresh_token"]


def test_import_unknown_provider_names_provider(run, emu):
    # Given a token for a provider calsync has no channel for
    token = "icloud-app-password-not-for-printing"
    # When it is imported
    result = push(run, mentor_import(token, provider="icloud"))
    # Then the element is rejected naming `provider`, without echoing the token
    assert result.returncode == 1
    assert "\tinvalid\t" in result.stdout and "provider" in result.stdout
    assert_no_secret(result, token)
    # And nothing was stored
    assert json.loads(run("integrations", "list", "--json").stdout) == []


def test_import_with_the_broker_down_stores_and_reports_every_element(run, emu, tmp_path: Path):
    # Given a booked session: mentor and mentee get emailed invites
    book(run)
    mentor, mentee = emu.add_user(MENTOR), emu.add_user(MENTEE)
    batch = [mentor_import(mentor), mentor_import(mentee, user_id="u-2", account_email=MENTEE),
             mentor_import("not-for-printing", user_id="u-3", provider="icloud")]
    # When the platform imports both tokens and a bad element while the broker cannot be reached
    result = push(run, batch, CALSYNC_BROKER_URL=BROKER_DOWN)
    # Then each element has its own line: both tokens stored but not queued, the bad one invalid; exit 1
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split("\t")[:2] for line in lines] == [["u-1", "not queued"], ["u-2", "not queued"],
                                                         ["u-3", "invalid"]]
    assert "imported" in lines[0] and "calsync sweep" in lines[0] and "[2].provider" in lines[2]
    assert_no_secret(result, mentor, mentee, "not-for-printing")
    # And both integrations are stored and active
    listed = json.loads(run("integrations", "list", "--json").stdout)
    assert [(r["user_id"], r["status"]) for r in listed] == [("u-1", "active"), ("u-2", "active")]
    # And --json says the same per element
    again = push(run, batch[:1], "--json", CALSYNC_BROKER_URL=BROKER_DOWN)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    [report] = json.loads(again.stdout)
    assert report["ok"] is True and report["queued"] is False and "broker error" in report["broker_error"]
    # When the sweeper runs once a broker answers
    swept = run("sweep")
    # Then it found the re-plan the imports recorded: the session moved to both calendars
    assert swept.returncode == 0, swept.stderr
    assert to_mentor(tmp_path) == [("REQUEST", 0), ("CANCEL", 1)]
    assert len(emu.events(MENTOR)) == 1 and len(emu.events(MENTEE)) == 1


def test_import_with_the_broker_up_says_queued_in_json(run, emu):
    # Given a token and a working (embedded) broker
    token = emu.add_user(MENTOR)
    # When it is imported as JSON
    result = push(run, mentor_import(token), "--json")
    # Then the element is ok and queued
    assert result.returncode == 0, result.stderr
    [report] = json.loads(result.stdout)
    assert report["ok"] is True and report["queued"] is True and report["errors"] == []


# -- list ------------------------------------------------------------------------------------------


def test_list_exits_1_when_a_token_died_and_the_person_still_gets_an_invite(run, emu, tmp_path: Path):
    # Given a mentor on Google with the session on their calendar
    token = emu.add_user(MENTOR)
    assert push(run, mentor_import(token)).returncode == 0
    book(run)
    assert len(emu.events(MENTOR)) == 1 and to_mentor(tmp_path) == []
    # When the mentor revokes calsync in their Google account and the session is then moved
    emu.revoke(token)
    book(run, version=2, start="2026-12-01T17:00:00-05:00", end="2026-12-01T18:00:00-05:00")
    # Then `list --json` reports the integration needs a reconnect, with the reason, and exits 1
    listed = run("integrations", "list", "--json")
    assert listed.returncode == 1
    [row] = json.loads(listed.stdout)
    assert row["status"] == "needs_reconnect" and "invalid_grant" in row["reason"]
    assert_no_secret(listed, token)
    # And the mentor got the moved session as an emailed invite instead
    assert to_mentor(tmp_path) == [("REQUEST", 0)]
    # And a filter that leaves it out exits 0
    active = run("integrations", "list", "--status", "active", "--json")
    assert active.returncode == 0 and json.loads(active.stdout) == []
    # And the plain view is a table with the status
    plain = run("integrations", "list")
    assert plain.returncode == 1 and "\tneeds_reconnect\t" in plain.stdout


# -- connect ---------------------------------------------------------------------------------------


def consent(url: str) -> str:
    """The person opens the consent URL and agrees; the browser is sent to the Location we return."""
    answer = requests.get(url, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"]


@pytest.mark.parametrize("paste", ["redirected URL", "bare code"])
def test_connect_takes_the_pasted_redirect_and_moves_the_person_to_their_calendar(env, run, emu, tmp_path: Path,
                                                                                    paste: str):
    # Given a booked session whose mentor gets emailed invites, and a Google account for them
    book(run)
    emu.add_user(MENTOR)
    # When support starts the connect flow at a terminal
    proc = subprocess.Popen(command("integrations", "connect", "u-1", "google"),
                            env=env, cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = None
        while url is None:
            line = proc.stdout.readline()
            if not line:
                break
            url = line.strip() if line.startswith("http") else None
        assert url is not None, proc.stderr.read()
        # Then the URL asks for offline access with PKCE and the narrow events scope, for the mentor
        query = parse_qs(urlsplit(url).query)
        assert query["access_type"] == ["offline"] and query["code_challenge_method"] == ["S256"]
        assert "https://www.googleapis.com/auth/calendar.events.owned" in query["scope"][0].split()
        assert query["login_hint"] == [MENTOR]
        # When the mentor consents and the redirected URL (or only the code in it) is pasted back
        redirected = consent(url)
        pasted = redirected if paste == "redirected URL" else parse_qs(urlsplit(redirected).query)["code"][0]
        proc.stdin.write(pasted + "\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Then the mentor is connected, and no token was printed
    assert proc.returncode == 0, err
    assert out.strip().endswith("u-1\tconnected\tgoogle")
    assert "1//emu-" not in out + err and "ya29." not in out + err
    listed = json.loads(run("integrations", "list", "--json").stdout)
    assert [(r["user_id"], r["account_email"], r["status"]) for r in listed] == [("u-1", MENTOR, "active")]
    # And their session moved from email to their calendar: the invite cancelled, one event placed
    assert to_mentor(tmp_path) == [("REQUEST", 0), ("CANCEL", 1)]
    assert [e["summary"] for e in emu.events(MENTOR)] == ["Session 2: Setting goals"]


def printed_url(run, user: str = "u-1") -> str:
    """Start a connect and walk away at the prompt: the URL it printed can be completed later."""
    started = run("integrations", "connect", user, "google")
    assert started.returncode != 0  # EOF at the prompt
    return next(line for line in started.stdout.splitlines() if line.startswith("http"))


def test_connect_with_callback_completes_a_consent_started_earlier(run, emu):
    # Given the consent URL from an earlier connect, which the mentor opened and agreed to
    emu.add_user(MENTOR)
    emu.consent_user = MENTOR
    redirected = consent(printed_url(run))
    # When support completes it with --callback
    result = run("integrations", "connect", "u-1", "google", "--callback", redirected)
    # Then the mentor is connected; the output is only the result (no new consent URL nobody would open)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "u-1\tconnected\tgoogle"
    assert result.stderr == "" and "1//emu-" not in result.stdout
    listed = json.loads(run("integrations", "list", "--json").stdout)
    assert [(r["user_id"], r["account_email"], r["status"]) for r in listed] == [("u-1", MENTOR, "active")]


def test_connect_refuses_a_callback_from_someone_elses_consent_and_changes_nothing(run, emu):
    # Given the mentee (u-2) opened the consent URL printed for them and agreed
    emu.add_user(MENTEE)
    emu.consent_user = MENTEE
    theirs = consent(printed_url(run, "u-2"))
    # When support pastes that redirect into the mentor's (u-1) connect
    result = run("integrations", "connect", "u-1", "google", "--callback", theirs)
    # Then the command refuses in one line naming both people, exit 2, and prints no success
    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_line_error(result, "'u-2'", "'u-1'")
    assert result.stdout == ""
    # And nobody's integration changed
    assert json.loads(run("integrations", "list", "--json").stdout) == []
    # When it is pasted for the wrong provider instead
    wrong_provider = run("integrations", "connect", "u-2", "outlook", "--callback", theirs)
    # Then that is refused the same way
    assert wrong_provider.returncode == 2
    assert_one_line_error(wrong_provider, "google", "outlook")
    # And the consent was not used up: it still connects the person it belongs to
    own = run("integrations", "connect", "u-2", "google", "--callback", theirs)
    assert own.returncode == 0, own.stderr
    assert own.stdout.strip() == "u-2\tconnected\tgoogle"
    listed = json.loads(run("integrations", "list", "--json").stdout)
    assert [(r["user_id"], r["account_email"]) for r in listed] == [("u-2", MENTEE)]


def test_connect_callback_with_a_bare_code_asks_for_the_whole_url(run, emu):
    # Given a consent the mentor agreed to, and only the code out of its redirect
    emu.add_user(MENTOR)
    emu.consent_user = MENTOR
    redirected = consent(printed_url(run))
    code = parse_qs(urlsplit(redirected).query)["code"][0]
    # When support passes just the code with --callback
    result = run("integrations", "connect", "u-1", "google", "--callback", code)
    # Then the command says the whole redirected URL is needed, in one line, exit 2, and connects nobody
    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_line_error(result, "whole", "redirected URL")
    assert json.loads(run("integrations", "list", "--json").stdout) == []
    # And the code was not spent: the whole URL still completes the connect
    assert run("integrations", "connect", "u-1", "google", "--callback", redirected).returncode == 0
    # And the help says the same
    helped = " ".join(run("integrations", "connect", "--help").stdout.split())
    assert "whole URL" in helped and "(or code)" not in helped


def test_connect_with_a_code_already_used_is_one_line(run, emu):
    # Given a redirected URL that already completed a connect
    emu.add_user(MENTOR)
    emu.consent_user = MENTOR
    redirected = consent(printed_url(run))
    assert run("integrations", "connect", "u-1", "google", "--callback", redirected).returncode == 0
    # When it is pasted again
    result = run("integrations", "connect", "u-1", "google", "--callback", redirected)
    # Then Google's refusal is one line, without a traceback
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "invalid_grant" in result.stderr.splitlines()[-1]


def test_connect_with_a_tampered_state_is_one_line_naming_state(run, emu):
    # Given a redirected URL whose state was altered on the way back
    emu.add_user(MENTOR)
    emu.consent_user = MENTOR
    parts = urlsplit(consent(printed_url(run)))
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    body, _, mac = query["state"].partition(".")
    query["state"] = f"{body}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}"
    # When it is pasted back
    result = run("integrations", "connect", "u-1", "google", "--callback",
                 parts._replace(query=urlencode(query)).geturl())
    # Then the command refuses in one line naming the state, and nobody is connected
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "state" in result.stderr.splitlines()[-1]
    assert json.loads(run("integrations", "list", "--json").stdout) == []


def test_connect_refused_consent_is_one_line(run, emu):
    # Given a mentor who clicks "Cancel" on Google's consent page
    emu.add_user(MENTOR)
    emu.consent_user = MENTOR
    emu.consent_decision = "deny"
    redirected = consent(printed_url(run))
    # When the redirected URL is pasted back
    result = run("integrations", "connect", "u-1", "google", "--callback", redirected)
    # Then the command says consent was refused, in one line, exit 2
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "access_denied" in result.stderr.splitlines()[-1]


# -- disconnect ------------------------------------------------------------------------------------


def test_disconnect_removes_the_event_revokes_the_token_and_mails_an_invite(run, emu, tmp_path: Path):
    # Given a mentor on Google with the session on their calendar and no emailed invite
    token = emu.add_user(MENTOR)
    assert push(run, mentor_import(token)).returncode == 0
    book(run)
    assert len(emu.events(MENTOR)) == 1 and to_mentor(tmp_path) == []
    # When support disconnects them
    result = run("integrations", "disconnect", "u-1")
    # Then the command reports the session moved to email, and the token was revoked
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "u-1\tdisconnected\t1 sessions moved to email"
    assert not refresh_works(emu, token)
    # And the event is gone from their calendar, and the session reached them as an invite
    assert emu.events(MENTOR) == []
    assert to_mentor(tmp_path) == [("REQUEST", 0)]
    listed = json.loads(run("integrations", "list", "--json").stdout)
    assert [(r["user_id"], r["status"]) for r in listed] == [("u-1", "disconnected")]


def test_disconnect_of_someone_never_connected_is_one_line_exit_2(run):
    # Given nobody connected u-9
    # When support disconnects them
    result = run("integrations", "disconnect", "u-9")
    # Then the answer is one line, exit 2
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "u-9" in result.stderr
