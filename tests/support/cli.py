"""Test-only helpers for running the ``calsync`` CLI as an operator does: a subprocess with a clean environment.

The CLI test modules build their ``env`` and ``run`` fixtures from these; the
Google emulator fixture ``emu`` they point the CLI at lives in conftest.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from sync.store.crypto import new_key
from sync.testing.emulators.google import GoogleEmulator

ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID, CLIENT_SECRET = "calsync-cli-test", "cli-test-secret"

Run = Callable[..., subprocess.CompletedProcess[str]]


def command(*args: str) -> list[str]:
    """The argv that starts ``calsync`` with this interpreter, for tests that need a Popen."""
    return [sys.executable, "-m", "sync.cli", *args]


def calsync(env: dict[str, str], cwd: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    # cwd is a scratch folder so a .env in the repository is not read.
    result = subprocess.run(command(*args), env=env, cwd=cwd, input=stdin, capture_output=True, timeout=120)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


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
        "CALSYNC_GOOGLE_CLIENT_ID": CLIENT_ID,
        "CALSYNC_GOOGLE_CLIENT_SECRET": CLIENT_SECRET,
        "CALSYNC_GOOGLE_API_URL": emu.url,
        "CALSYNC_GOOGLE_TOKEN_URL": emu.token_url,
        "CALSYNC_GOOGLE_AUTH_URL": emu.auth_url,
        "CALSYNC_GOOGLE_REVOKE_URL": emu.revoke_url,
        "CALSYNC_GOOGLE_USERINFO_URL": emu.userinfo_url,
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


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
