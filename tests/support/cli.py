"""Test-only helpers for running the ``calsync`` CLI as an operator does, with a clean environment:
in-process through click's CliRunner, or as a subprocess where only a real process shows the behaviour.

The CLI test modules build their ``env`` and ``run`` fixtures from these; the
Google emulator fixture ``emu`` they point the CLI at lives in conftest.py.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess as _subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

from sync.store.crypto import new_key
from sync.testing.emulators.google import GoogleEmulator
from sync.testing.settings import google_settings

ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID, CLIENT_SECRET = "calsync-cli-test", "cli-test-secret"

Run = Callable[..., CompletedProcess[str]]


def command(*args: str) -> list[str]:
    """The argv that starts ``calsync`` with this interpreter, for tests that need a Popen."""
    return [sys.executable, "-m", "sync.cli", *args]


#: Commands that always run in a subprocess: ``worker`` installs signal handlers, forks and configures
#: logging for its process; ``demo`` rewrites its own process's settings and starts emulators.
SUBPROCESS_COMMANDS = frozenset({"worker", "demo"})
#: Commands that never enqueue: they read the queues through a Redis client of their own, so they run
#: in-process whatever CALSYNC_BROKER_URL says. The others enqueue through calsync's actors, which are
#: bound once per process to its broker -- here the embedded one conftest.py sets -- so with another
#: broker they run as a subprocess (and an in-process enqueue on the wrong broker fails the test).
ANY_BROKER_COMMANDS = frozenset({"status", "dead-letters", "doctor", "db"})


def calsync(env: dict[str, str], cwd: Path, *args: str, stdin: bytes | None = None,
            subprocess: bool = False) -> CompletedProcess[str]:
    """``calsync *args`` in ``cwd`` with exactly ``env``'s CALSYNC_* settings: exit status, stdout, stderr.

    In-process through click's ``CliRunner`` (a subprocess costs about a second of imports) unless
    ``subprocess`` is asked for, the command is one of :data:`SUBPROCESS_COMMANDS`, or the broker is
    not ``memory://``: calsync's broker is built once per process and the test process's is the
    embedded one. Tests that must prove what only a real process shows (the exit status the shell
    sees, Python's own traceback printer, argv decoding) pass ``subprocess=True``.
    """
    embedded = env.get("CALSYNC_BROKER_URL", "memory://").startswith("memory://")
    name = args[0] if args else ""
    if subprocess or name in SUBPROCESS_COMMANDS or not (embedded or name in ANY_BROKER_COMMANDS):
        return calsync_subprocess(env, cwd, *args, stdin=stdin)
    return calsync_in_process(env, cwd, *args, stdin=stdin)


def calsync_subprocess(env: dict[str, str], cwd: Path, *args: str,
                       stdin: bytes | None = None) -> CompletedProcess[str]:
    # cwd is a scratch folder so a .env in the repository is not read.
    result = _subprocess.run(command(*args), env=env, cwd=cwd, input=stdin, capture_output=True, timeout=120)
    return CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """``logging.basicConfig``'s handler as ``calsync`` installs it, writing to whatever sys.stderr is now."""

    def __init__(self) -> None:
        super().__init__()
        self.setLevel(logging.ERROR)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # noqa: ANN001
        pass


def _stub_broker():  # noqa: ANN202
    from sync.engine import tasks  # binds the actors to this process's (embedded) broker

    return tasks.broker


def _wrong_broker(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("an in-process calsync with a non-embedded CALSYNC_BROKER_URL enqueued on the test "
                         "process's embedded broker: run this command with subprocess=True")


def calsync_in_process(env: dict[str, str], cwd: Path, *args: str,
                       stdin: bytes | None = None) -> CompletedProcess[str]:
    """The command run by ``sync.cli:main`` in this process, as a subprocess would see it.

    What a fresh process would not share with the test process is reset around the call: the
    cached settings and runtime (built from ``env``), the working directory, the CALSYNC_*
    variables (only ``env``'s are set), and the engine of the command's database. ERROR log
    records go to stderr, as the CLI's ``logging.basicConfig`` sends them in its own process; an
    exception that escapes the CLI is printed to stderr as a traceback, as Python would.
    """
    from click.testing import CliRunner

    from sync.cli import main
    from sync.config import get_settings
    from sync.engine.runtime import set_runtime
    from sync.store.db import engine_for

    overrides: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CALSYNC_")}
    overrides.update({k: v for k, v in env.items() if k.startswith("CALSYNC_")})
    handler = _CurrentStderr()
    embedded = env.get("CALSYNC_BROKER_URL", "memory://").startswith("memory://")
    stub = None if embedded else _stub_broker()  # before the settings are cleared: importing tasks reads them
    root = logging.getLogger()
    before = os.getcwd()
    get_settings.cache_clear()
    set_runtime(None)
    os.chdir(cwd)
    root.addHandler(handler)
    if stub is not None:
        stub.enqueue = _wrong_broker  # type: ignore[method-assign]
    try:
        result = CliRunner().invoke(main, list(args), input=stdin, env=overrides, prog_name="calsync")
    finally:
        if stub is not None:
            del stub.enqueue
        root.removeHandler(handler)
        os.chdir(before)
        get_settings.cache_clear()
        set_runtime(None)
        url = env.get("CALSYNC_DATABASE_URL", "")
        if url.startswith("sqlite:///"):
            engine_for(url).dispose()  # no pooled connection outlives the "process"
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*result.exc_info))  # type: ignore[misc]
    return CompletedProcess(["calsync", *args], result.exit_code, result.stdout, stderr)


def cli_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """A clean environment: only the settings under test, so the developer's own CALSYNC_* cannot leak in.

    A SQLite database and a file outbox in ``tmp_path``, and the embedded memory:// broker,
    so each command delivers before it exits.
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith("CALSYNC_")}
    return {
        **base,
        "PYTHONPATH": str(ROOT),
        "CALSYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "CALSYNC_BROKER_URL": "memory://",
        "CALSYNC_SMTP_URL": (tmp_path / "out").as_uri(),
        "CALSYNC_MAIL_FROM": "sessions@calsync.example",
        "CALSYNC_SWEEP_INTERVAL_SECONDS": "0",
        # The contract's example session (1 Dec 2026) may already be over when the suite runs.
        "CALSYNC_PAST_SESSIONS": "send",
        **overrides,
    }


def google_env(emu: GoogleEmulator) -> dict[str, str]:
    """Settings that point the CLI's Google channel at the emulator, with short retries and timeouts."""
    return {
        "CALSYNC_RETRY_MIN_BACKOFF_MS": "50",
        "CALSYNC_RETRY_MAX_BACKOFF_MS": "200",
        "CALSYNC_IO_TIMEOUT_SECONDS": "5",
        "CALSYNC_SECRET_KEYS": new_key(),
        **google_settings(emu, CLIENT_ID, CLIENT_SECRET),
    }


def runner(env: dict[str, str], cwd: Path) -> Run:
    """``run(*args, stdin=None, **env_overrides)``: calsync in ``cwd`` with ``env``, overridden per call."""
    return lambda *args, stdin=None, **over: calsync({**env, **over}, cwd, *args, stdin=stdin)


_template: Path | None = None


def _migrated_sqlite(target: Path) -> None:
    """A copy of one database migrated once per test run: the schema ``calsync db upgrade`` builds
    (tests/test_cli.py runs the command itself), without a subprocess per test."""
    global _template
    if _template is None:
        from sync.store.db import engine_for
        from sync.store.migrate import upgrade

        folder = Path(tempfile.mkdtemp(prefix="calsync-template-"))
        url = f"sqlite:///{folder / 'template.db'}"
        upgrade(url)
        engine_for(url).dispose()  # the last connection closing checkpoints the WAL into the file
        _template = folder / "template.db"
    shutil.copyfile(_template, target)


def upgraded_runner(env: dict[str, str], cwd: Path) -> Run:
    """A :func:`runner` against a migrated database: a copy of a migrated SQLite file, or
    ``calsync db upgrade`` run for any other database."""
    url = env["CALSYNC_DATABASE_URL"]
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        _migrated_sqlite(Path(url.removeprefix("sqlite:///")))
    else:
        upgraded = calsync(env, cwd, "db", "upgrade")
        assert upgraded.returncode == 0, upgraded.stderr
    return runner(env, cwd)


def assert_one_line_error(result: CompletedProcess[str], *words: str) -> None:
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
