"""Hostile arguments for every ``calsync`` command: the documented exit status, one line, never a traceback.

The README promises that an error the operator can fix is one ``Error:`` line
on stderr with exit status 2, that a database, broker or provider that is
down is one line with exit status 1, and that calsync never prints a
traceback. Scripts and cron jobs rely on exactly that, so this table throws
what a tired operator, a broken pipeline or a fuzzer would throw at each
command and checks all three promises per case.

Most cases run in-process through click's ``CliRunner`` (a subprocess costs
about a second of imports; the whole table stays well under a minute), with
the same clean ``CALSYNC_*`` environment a subprocess would get. A few run as
real subprocesses, because only a subprocess proves what the operator sees
(Python's own traceback printer, argv encoding) — and ``demo`` always does,
since it rewrites its own process's settings. NUL bytes in ids only run
in-process: no operating system passes a NUL inside an argv string.
"""

from __future__ import annotations

import json
import os
import sqlite3
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from sync.store.crypto import new_key
from tests.support.cli import calsync, cli_env
from tests.support.factories import session_data

pytestmark = pytest.mark.slow

#: Google settings that make ``integrations connect`` get as far as checking the pasted callback.
GOOGLE = {"CALSYNC_SECRET_KEYS": new_key(), "CALSYNC_GOOGLE_CLIENT_ID": "hostile-client",
          "CALSYNC_GOOGLE_CLIENT_SECRET": "hostile-secret", "CALSYNC_GOOGLE_TOKEN_URL": "http://127.0.0.1:1/token"}

NESTED_ARRAYS = b"[" * 100_000
NESTED_OBJECTS = b'{"a":' * 100_000
TEN_THOUSAND_INTS = json.dumps(list(range(10_000))).encode()
HUGE_INT = b'{"id": "s", "version": ' + b"9" * 5_000 + b"}"
NOT_UTF8 = b'{"id": "\xff\xfe"}'


@dataclass(frozen=True)
class Case:
    """One hostile invocation and what the README says must come back.

    ``stream`` says where the documented answer goes: ``stderr`` for an error
    (exactly one ``Error:`` line, nothing on stdout), ``stdout`` for commands
    that report per element or per check (their lines on stdout, stderr empty).
    ``{root}`` in an argument is the module's scratch folder.
    """

    name: str
    args: tuple[str, ...]
    exit: int
    words: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    stdin: bytes | None = None
    env: dict[str, str] = field(default_factory=dict)
    stream: str = "stderr"
    lines: int | None = None
    as_json: bool = False
    subprocess: bool = False


def case(name: str, *args: str, exit: int = 2, xfail: str | None = None, **kw: object) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(Case(name, args, exit, **kw), id=name, marks=marks)  # type: ignore[arg-type]


def upsert_of(**fields: object) -> bytes:
    return json.dumps(session_data(**fields)).encode()


CASES = [
    # -- the root group ------------------------------------------------------------------------------
    case("root-unknown-command", "frobnicate", words=("No such command",), subprocess=True),
    case("root-unknown-flag", "--frobnicate", words=("No such option",)),
    # -- sessions upsert -----------------------------------------------------------------------------
    case("upsert-unknown-flag", "sessions", "upsert", "--frobnicate", "x.json", words=("No such option",)),
    case("upsert-missing-file-arg", "sessions", "upsert", words=("Missing argument",)),
    case("upsert-file-does-not-exist", "sessions", "upsert", "{root}/missing.json", words=("No such file",)),
    case("upsert-directory", "sessions", "upsert", "{root}/folder", words=("directory",)),
    case("upsert-empty-path", "sessions", "upsert", "", words=("FILE",)),
    case("upsert-not-utf8", "sessions", "upsert", "-", stdin=NOT_UTF8, words=("input", "UTF-8")),
    case("upsert-empty-stdin", "sessions", "upsert", "-", stdin=b"", words=("input", "not valid JSON")),
    case("upsert-nested-arrays", "sessions", "upsert", "-", stdin=NESTED_ARRAYS, words=("input", "nested"),
         subprocess=True),
    case("upsert-nested-objects", "sessions", "upsert", "-", "--json", stdin=NESTED_OBJECTS,
         words=("input", "nested")),
    case("upsert-5000-digit-number", "sessions", "upsert", "-", stdin=HUGE_INT, words=("input", "digits")),
    case("upsert-10000-non-objects", "sessions", "upsert", "-", stdin=TEN_THOUSAND_INTS, exit=1,
         stream="stdout", lines=10_000, words=("[9999].session: expected a JSON object",)),
    case("upsert-non-objects-json", "sessions", "upsert", "-", "--json", stdin=b'[null, "x", [], 1.5]', exit=1,
         stream="stdout", as_json=True, words=("expected a JSON object",)),
    case("upsert-negative-version", "sessions", "upsert", "-", stdin=upsert_of(version=-1), exit=1,
         stream="stdout", lines=1, words=("invalid", "version")),
    case("upsert-version-2-to-the-64", "sessions", "upsert", "-", stdin=upsert_of(version=2**64), exit=1,
         stream="stdout", lines=1, words=("invalid", "version")),
    case("upsert-nan-version", "sessions", "upsert", "-", stdin=b'{"id": "s", "version": NaN}', exit=1,
         stream="stdout", lines=1, words=("invalid", "version")),
    case("upsert-nul-in-id", "sessions", "upsert", "-", stdin=upsert_of(id="sess\x00nul"), exit=1,
         stream="stdout", lines=1, words=("invalid", "id")),
    case("upsert-crlf-in-id", "sessions", "upsert", "-", stdin=upsert_of(id="sess\r\nBcc: x@evil.example"),
         exit=1, stream="stdout", lines=1, words=("invalid", "id")),
    case("upsert-year-99999", "sessions", "upsert", "-", stdin=upsert_of(start="99999-01-01T00:00:00+00:00"),
         exit=1, stream="stdout", lines=1, words=("invalid", "start")),
    # -- sessions cancel / show ----------------------------------------------------------------------
    case("cancel-missing-id", "sessions", "cancel", words=("Missing argument",)),
    case("cancel-empty-id", "sessions", "cancel", "", words=("does not exist",)),
    case("cancel-nul-in-id", "sessions", "cancel", "sess\x00nul", words=("does not exist",)),
    case("cancel-crlf-in-id", "sessions", "cancel", "sess\r\nforged", words=("does not exist",)),
    case("cancel-100k-char-id", "sessions", "cancel", "x" * 100_000, words=("does not exist",)),
    case("show-unknown-json", "sessions", "show", "nope", "--json", words=("does not exist",)),
    case("show-lf-in-id", "sessions", "show", "line\nbreak", words=("does not exist",)),
    # (a str argument with a lone surrogate reaches the subprocess as the raw, non-UTF-8 byte 0xff)
    case("show-non-utf8-id", "sessions", "show", "sess\udcff", words=("ID", "UTF-8"), subprocess=True),
    case("upsert-non-utf8-file-name", "sessions", "upsert", "{root}/missing\udcff.json", words=("No such file",),
         subprocess=True),
    case("cancel-non-utf8-id", "sessions", "cancel", "sess\udcff", words=("ID", "UTF-8")),
    case("show-extra-argument", "sessions", "show", "a", "b", words=("unexpected extra argument",)),
    # -- integrations --------------------------------------------------------------------------------
    case("connect-missing-args", "integrations", "connect", words=("Missing argument",)),
    case("connect-unknown-provider", "integrations", "connect", "u-1", "yahoo", words=("yahoo",)),
    case("connect-no-keys", "integrations", "connect", "u-1", "google", "--callback",
         "http://127.0.0.1:8765/oauth/google/callback?code=x&state=y", words=("CALSYNC_SECRET_KEYS",)),
    case("connect-forged-callback", "integrations", "connect", "u-1", "google", "--callback",
         "http://127.0.0.1:8765/oauth/google/callback?code=x&state=forged", env=GOOGLE, words=("state",)),
    case("connect-empty-callback", "integrations", "connect", "u-1", "google", "--callback", "", env=GOOGLE),
    case("import-file-does-not-exist", "integrations", "import", "{root}/missing.json", words=("No such file",)),
    case("import-directory", "integrations", "import", "{root}/folder", words=("directory",)),
    case("import-not-utf8", "integrations", "import", "-", stdin=NOT_UTF8, words=("input", "UTF-8")),
    case("import-nested-arrays", "integrations", "import", "-", stdin=NESTED_ARRAYS, words=("input", "nested")),
    case("import-crlf-in-user-id", "integrations", "import", "-", exit=1, stream="stdout", lines=1,
         stdin=json.dumps({"user_id": "u-1\r\nforged\tok\timported", "provider": "google",
                           "refresh_token": "x"}).encode(), words=("invalid", "user_id"),
         env={**GOOGLE, "CALSYNC_DATABASE_URL": "sqlite:///{root}/scratch.db"}),
    case("import-nul-in-calendar-id", "integrations", "import", "-", exit=1, stream="stdout", lines=1,
         stdin=json.dumps({"user_id": "u-9", "provider": "google", "calendar_id": "primary\u0000",
                           "refresh_token": "x"}).encode(), words=("invalid", "calendar_id"),
         env={**GOOGLE, "CALSYNC_DATABASE_URL": "sqlite:///{root}/scratch.db"}),
    case("import-10000-non-objects", "integrations", "import", "-", stdin=TEN_THOUSAND_INTS, exit=1,
         stream="stdout", lines=10_000, words=("[9999].integration: expected a JSON object",)),
    case("disconnect-non-utf8-user", "integrations", "disconnect", "u\udcff", words=("USER", "UTF-8")),
    case("link-missing-user", "integrations", "link", words=("Missing argument",)),
    case("link-unknown-provider", "integrations", "link", "u-1", "--provider", "yahoo", words=("Invalid value",)),
    case("link-without-secret-keys", "integrations", "link", "u-1", words=("CALSYNC_SECRET_KEYS",)),
    case("serve-port-out-of-range", "serve", "--port", "70000", words=("Invalid value", "--port")),
    case("serve-port-not-a-number", "serve", "--port", "http", words=("Invalid value", "--port")),
    case("list-unknown-status", "integrations", "list", "--status", "bogus", words=("bogus",)),
    case("list-empty-status", "integrations", "list", "--status", "", words=("--status",)),
    case("disconnect-missing-user", "integrations", "disconnect", words=("Missing argument",)),
    case("disconnect-unknown-user", "integrations", "disconnect", "nobody", "--json", words=("nobody",)),
    case("disconnect-empty-user", "integrations", "disconnect", ""),
    # -- resync --------------------------------------------------------------------------------------
    case("resync-no-selector", "resync", words=("exactly one",)),
    case("resync-two-selectors", "resync", "--session", "a", "--all", words=("exactly one",)),
    case("resync-since-not-a-date", "resync", "--all", "--since", "yesterday", words=("--since",)),
    case("resync-since-feb-30", "resync", "--all", "--since", "2026-02-30", words=("--since",)),
    case("resync-since-naive", "resync", "--all", "--since", "2026-02-01T10:00:00", words=("UTC offset",)),
    case("resync-since-year-1-east", "resync", "--all", "--since", "0001-01-01T00:00:00+14:00",
         words=("--since",), absent=("db upgrade",)),
    case("resync-negative-timeout", "resync", "--all", "--timeout", "-1", words=("--timeout",)),
    case("resync-unknown-session", "resync", "--session", "nope", words=("nope",)),
    case("resync-nul-user", "resync", "--user", "u\x00nul", words=("does not exist",)),
    case("resync-non-utf8-session", "resync", "--session", "s\udcff", words=("--session", "UTF-8")),
    # -- diagnose ------------------------------------------------------------------------------------
    case("diagnose-unknown-subcommand", "diagnose", "program", "x", words=("No such command",)),
    case("diagnose-session-missing-id", "diagnose", "session", words=("Missing argument",)),
    case("diagnose-session-unknown", "diagnose", "session", "nope", "--json", words=("nope",)),
    case("diagnose-session-non-utf8", "diagnose", "session", "s\udcff", words=("UTF-8",)),
    case("diagnose-user-crlf", "diagnose", "user", "u\r\n1", words=("does not exist",)),
    # -- drift scan ----------------------------------------------------------------------------------
    case("drift-days-100-million", "drift", "scan", "--days", "100000000", words=("--days",), subprocess=True),
    case("drift-days-huge", "drift", "scan", "--days", "9" * 40, words=("--days",)),
    case("drift-days-zero", "drift", "scan", "--days", "0", words=("--days",)),
    case("drift-days-negative", "drift", "scan", "--days", "-3", words=("--days",)),
    case("drift-days-not-a-number", "drift", "scan", "--days", "two", words=("--days",)),
    case("drift-user-and-all", "drift", "scan", "--user", "u-1", "--all", words=("--user",)),
    case("drift-non-utf8-user", "drift", "scan", "--user", "u\udcff", words=("--user", "UTF-8")),
    case("drift-unknown-user", "drift", "scan", "--user", "nobody", words=("nobody",)),
    # -- status, sweep, database settings ------------------------------------------------------------
    case("status-unknown-flag", "status", "--verbose", words=("No such option",)),
    case("status-url-not-a-url", "status", env={"CALSYNC_DATABASE_URL": "notaurl"},
         words=("CALSYNC_DATABASE_URL",), absent=("db upgrade",), subprocess=True),
    case("cancel-broker-port-not-a-number", "sessions", "cancel", "nope",
         env={"CALSYNC_BROKER_URL": "redis://127.0.0.1:notaport/0"}, words=("CALSYNC_BROKER_URL",), subprocess=True),
    case("show-url-port-not-a-number", "sessions", "show", "x",
         env={"CALSYNC_DATABASE_URL": "postgresql+psycopg://u@h:notaport/db"},
         words=("CALSYNC_DATABASE_URL",), absent=("db upgrade",), subprocess=True),
    case("status-url-password-with-at-sign", "status",
         env={"CALSYNC_DATABASE_URL": "postgresql+psycopg://calsync:hunter2@x:s3cr3t@db.internal/calsync"},
         words=("CALSYNC_DATABASE_URL",), absent=("s3cr3t", "hunter2", "db upgrade")),
    case("status-url-empty", "status", env={"CALSYNC_DATABASE_URL": ""},
         words=("CALSYNC_DATABASE_URL",), absent=("db upgrade",)),
    case("status-url-unknown-dialect", "status", env={"CALSYNC_DATABASE_URL": "cockroach://u@h/db"},
         words=("CALSYNC_DATABASE_URL",), absent=("db upgrade",)),
    case("status-url-driver-missing", "status", env={"CALSYNC_DATABASE_URL": "mysql://u@h/db"},
         words=("CALSYNC_DATABASE_URL",), absent=("db upgrade",)),
    case("status-unmigrated-database", "status", env={"CALSYNC_DATABASE_URL": "sqlite:///{root}/empty.db"},
         exit=1, words=("calsync db upgrade",)),
    case("sweep-extra-argument", "sweep", "now", words=("unexpected extra argument",)),
    case("sweep-url-port-not-a-number", "sweep", "--json",
         env={"CALSYNC_DATABASE_URL": "postgresql+psycopg://u:secret@h:notaport/db"},
         words=("CALSYNC_DATABASE_URL",), absent=("secret", "db upgrade")),
    # -- dead letters --------------------------------------------------------------------------------
    case("dead-letters-list-embedded-broker", "dead-letters", "list", words=("memory://",)),
    case("dead-letters-show-missing-id", "dead-letters", "show", words=("Missing argument",)),
    case("dead-letters-show-broker-down", "dead-letters", "show", "x\x00y",
         env={"CALSYNC_BROKER_URL": "redis://127.0.0.1:1/0"}, exit=1, words=("broker error",)),
    case("dead-letters-retry-nothing", "dead-letters", "retry", words=("--all",)),
    case("dead-letters-retry-id-and-all", "dead-letters", "retry", "abc", "--all", words=("--all",)),
    case("dead-letters-purge-no-age", "dead-letters", "purge", words=("--older-than",)),
    case("dead-letters-purge-bad-age", "dead-letters", "purge", "--older-than", "5x", words=("--older-than",)),
    case("dead-letters-purge-negative-age", "dead-letters", "purge", "--older-than", "-5d",
         words=("--older-than",)),
    case("dead-letters-purge-huge-age", "dead-letters", "purge", "--older-than", "9" * 20 + "w",
         words=("--older-than",)),
    case("dead-letters-purge-age-before-year-1", "dead-letters", "purge", "--older-than", "999999d",
         env={"CALSYNC_BROKER_URL": "redis://127.0.0.1:1/0"}, words=("--older-than",)),
    # -- doctor --------------------------------------------------------------------------------------
    case("doctor-unknown-flag", "doctor", "--fix", words=("No such option",)),
    case("doctor-url-not-a-url", "doctor", env={"CALSYNC_DATABASE_URL": "notaurl"}, exit=1, stream="stdout",
         words=("failed", "database")),
    # -- db upgrade ----------------------------------------------------------------------------------
    case("db-upgrade-url-port-not-a-number", "db", "upgrade",
         env={"CALSYNC_DATABASE_URL": "postgresql+psycopg://u@h:notaport/db"},
         words=("CALSYNC_DATABASE_URL",), absent=("db upgrade",), subprocess=True),
    case("db-upgrade-url-not-a-url", "db", "upgrade", "--json", env={"CALSYNC_DATABASE_URL": "notaurl"},
         words=("CALSYNC_DATABASE_URL",), absent=("db upgrade",)),
    case("db-upgrade-sqlite-unopenable", "db", "upgrade",
         env={"CALSYNC_DATABASE_URL": "sqlite:////proc/no-such-folder/calsync.db"}, exit=1,
         words=("database error", "CALSYNC_DATABASE_URL"), absent=("run `calsync db upgrade`",)),
    case("db-upgrade-revision-from-a-newer-calsync", "db", "upgrade", "--json",
         env={"CALSYNC_DATABASE_URL": "sqlite:///{root}/future.db"}, words=("9999_from_the_future", "newer calsync")),
    case("db-downgrade", "db", "downgrade", words=("No such command",)),
    case("db-upgrade-extra-argument", "db", "upgrade", "head", words=("unexpected extra argument",)),
    # -- keys ----------------------------------------------------------------------------------------
    case("keys-rotate-no-keys", "keys", "rotate", words=("CALSYNC_SECRET_KEYS",)),
    case("keys-rotate-garbage-key", "keys", "rotate", env={"CALSYNC_SECRET_KEYS": "not-a-key"},
         words=("CALSYNC_SECRET_KEYS",)),
    case("keys-rotate-empty-key-list", "keys", "rotate", "--json", env={"CALSYNC_SECRET_KEYS": " , ,"},
         words=("CALSYNC_SECRET_KEYS",)),
    # -- worker (every case stops before the exec of dramatiq) ---------------------------------------
    case("worker-embedded-broker", "worker", words=("CALSYNC_BROKER_URL",)),
    case("worker-zero-processes", "worker", "--processes", "0", words=("--processes",)),
    case("worker-negative-threads", "worker", "--threads", "-8", words=("--threads",)),
    case("worker-threads-not-a-number", "worker", "-t", "many", words=("--threads",)),
    case("worker-log-config-missing", "worker", "--log-config", "{root}/missing.json", words=("does not exist",)),
    case("worker-log-config-escape-sequence", "worker", "--log-config", "{root}/\x1b[2J\x1b]0;pwned\x07\nx.json",
         words=("does not exist", "\\x1b[2J"), absent=("\x1b", "\x07")),
    case("worker-log-config-directory", "worker", "--log-config", "{root}/folder", words=("directory",)),
    # -- demo (always a subprocess: it rewrites its own process's settings) ---------------------------
    case("demo-unknown-flag", "demo", "--frobnicate", words=("No such option",), subprocess=True),
    case("demo-users-folder", "demo", "--out", "{root}/users", words=("--out", "not empty"), subprocess=True),
    case("demo-cwd-holding-users-data", "demo", "--out", "", words=("--out", "not empty"), subprocess=True),
    case("demo-out-is-a-file", "demo", "--out", "{root}/afile", words=("--out",), subprocess=True),
    case("demo-out-under-a-file", "demo", "--out", "{root}/afile/demo", words=("--out",), subprocess=True),
    case("demo-out-unwritable", "demo", "--out", "/proc/calsync-demo", words=("--out",), subprocess=True),
]


@dataclass(frozen=True)
class World:
    """The module's scratch folder and the clean environment every case starts from."""

    root: Path
    env: dict[str, str]


@dataclass(frozen=True)
class Outcome:
    exit: int
    stdout: str
    stderr: str
    crash: str | None  # the traceback, if the command died of an exception


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One migrated SQLite database for the whole table: migrating per case would dominate the run time."""
    from sync.store.migrate import upgrade

    root = tmp_path_factory.mktemp("hostile")
    env = cli_env(root)
    upgrade(env["CALSYNC_DATABASE_URL"])
    upgrade(f"sqlite:///{root / 'scratch.db'}")  # for cases that may store what they should have refused
    # A database a newer calsync migrated: this release does not know its revision.
    with sqlite3.connect(root / "future.db") as future:
        future.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        future.execute("INSERT INTO alembic_version VALUES ('9999_from_the_future')")
    future.close()
    (root / "folder").mkdir()
    (root / "afile").write_text("not a folder\n")
    # A folder holding someone's own database and invites: the demo must leave it alone.
    users = root / "users"
    (users / "outbox").mkdir(parents=True)
    (users / "calsync.db").write_bytes(b"the user's data")
    (users / "outbox" / "kept.eml").write_text("the user's invite\n")
    return World(root, env)


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fresh settings and runtime around each in-process case, so no case sees another's environment."""
    from sync.config import get_settings
    from sync.engine.runtime import set_runtime

    get_settings.cache_clear()
    set_runtime(None)
    yield
    get_settings.cache_clear()
    set_runtime(None)


def run_in_process(world: World, args: list[str], stdin: bytes | None, env: dict[str, str]) -> Outcome:
    from sync.cli import main

    # Only the case's CALSYNC_* settings: the ones conftest.py set for the other tests are removed.
    overrides: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CALSYNC_")}
    overrides.update({k: v for k, v in env.items() if k.startswith("CALSYNC_")})
    result = CliRunner().invoke(main, args, input=stdin, env=overrides, prog_name="calsync")
    crash = None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        crash = "".join(traceback.format_exception(*result.exc_info))  # type: ignore[misc]
    return Outcome(result.exit_code, result.stdout, result.stderr, crash)


def run_subprocess(world: World, args: list[str], stdin: bytes | None, env: dict[str, str]) -> Outcome:
    result = calsync(env, world.root, *args, stdin=stdin, subprocess=True)
    crash = result.stderr if "Traceback" in result.stderr + result.stdout else None
    return Outcome(result.returncode, result.stdout, result.stderr, crash)


@pytest.mark.parametrize("c", CASES)
def test_hostile_argument_gets_the_documented_answer(c: Case, world: World, in_process: None,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the clean environment, with the case's own settings on top
    # (cwd is the scratch folder, so a .env in the repository is not read)
    monkeypatch.chdir(world.root)
    env = {k: v.replace("{root}", str(world.root)) for k, v in {**world.env, **c.env}.items()}
    args = [a.replace("{root}", str(world.root)) for a in c.args]
    # When the operator runs the command
    run = run_subprocess if c.subprocess else run_in_process
    got = run(world, args, c.stdin, env)
    # Then it did not die of an exception
    assert got.crash is None, got.crash
    assert "Traceback" not in got.stdout + got.stderr
    # And the exit status is the documented one
    assert got.exit == c.exit, (got.stdout[-2000:], got.stderr[-2000:])
    if c.stream == "stderr":
        # And the error is exactly one line on stderr, naming what to fix; stdout carries nothing to parse
        lines = got.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), got.stderr[-2000:]
        assert got.stdout == "", got.stdout[-2000:]
        text = lines[0]
    else:
        # And the command's own report is on stdout, with nothing on stderr
        assert got.stderr == "", got.stderr[-2000:]
        text = got.stdout
        if c.lines is not None:
            assert len(got.stdout.splitlines()) == c.lines
        if c.as_json:
            json.loads(got.stdout)
    for word in c.words:
        assert word in text, text[-2000:]
    for word in c.absent:
        assert word not in text, text[-2000:]


def test_the_table_covers_every_command() -> None:
    # Given every command and subcommand calsync has
    import click

    from sync.cli import main

    def paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                yield from paths(command, (*prefix, name))
            else:
                yield (*prefix, name)

    # When the table's cases are read
    covered = {tuple(p.values[0].args[:2]) for p in CASES} | {tuple(p.values[0].args[:1]) for p in CASES}
    # Then each command has hostile cases, and there are at least 40 of them
    assert [p for p in paths(main) if p not in covered] == []
    assert len(CASES) >= 40


@pytest.mark.parametrize("url", [
    "notaurl", "", "postgresql+psycopg://u@h:notaport/db", "postgresql+psycopg://calsync:hunter2@x:s3cr3t@db/calsync",
    "cockroach://u@h/db", "mysql://u@h/db",
])
def test_the_engine_refuses_a_malformed_url_naming_the_variable(url: str) -> None:
    """The engine's own guard, for URLs that reach it without passing through the settings' validation."""
    from sync.errors import ConfigError
    from sync.store.db import make_engine

    # Given a database URL an operator mistyped
    # When an engine is made from it
    with pytest.raises(ConfigError) as refused:
        make_engine(url)
    # Then the error names the variable, in one line, without repeating any of the password or suggesting a migration
    message = str(refused.value)
    assert "CALSYNC_DATABASE_URL" in message and "\n" not in message
    assert "s3cr3t" not in message and "hunter2" not in message and "db upgrade" not in message


def test_a_cell_or_an_error_is_one_printable_line() -> None:
    """Ids and provider texts reach tables and errors; neither may split a line or drive a terminal."""
    from sync.cli.output import cell
    from sync.cli.usage import UsageError

    # Given text with CR/LF, a tab, NUL, a terminal escape sequence and a C1 control
    hostile = "a\r\nb\tc\x00d\x1b[2Je\x9bf"
    # When it becomes a table cell, or the message of a usage error
    shown = [cell(hostile), UsageError(f"no session {hostile}").format_message()]
    # Then each is one line, without a tab or any control character, the controls shown escaped
    assert shown[0] == "a b c\\x00d\\x1b[2Je\\x9bf"
    for text in shown:
        assert text.isprintable() and "\t" not in text


def test_a_providers_hostile_reason_stays_in_its_cell(tmp_path: Path, in_process: None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A status reason is a provider's text; in a pipe it must not add a row or a column, on a terminal no escape."""
    from sync.store.db import Store, utcnow
    from sync.store.migrate import upgrade
    from sync.store.models import Integration, Person

    # Given an integration whose reason, as a provider worded it, holds CR/LF, a tab and a terminal escape
    env = cli_env(tmp_path)
    upgrade(env["CALSYNC_DATABASE_URL"])
    with Store(env["CALSYNC_DATABASE_URL"]).tx() as db:
        db.add(Person(user_id="u-1", email="u1@example.com", updated_at=utcnow()))
        db.flush()
        db.add(Integration(user_id="u-1", provider="google", credentials=b"", status="needs_reconnect",
                           status_reason="invalid_grant\r\nu-2\tgoogle\tforged\x1b[2J"))
    monkeypatch.chdir(tmp_path)
    # When support lists integrations into a pipe
    got = run_in_process(World(tmp_path, env), ["integrations", "list"], None, env)
    # Then it exits 1 (a reconnect is needed) with the header and one row of seven columns, no control characters
    assert got.crash is None and got.exit == 1, (got.stdout, got.stderr)
    lines = got.stdout.splitlines()
    assert len(lines) == 2 and [len(line.split("\t")) for line in lines] == [7, 7]
    assert "\x1b" not in got.stdout and "invalid_grant u-2 google forged\\x1b[2J" in lines[1]
