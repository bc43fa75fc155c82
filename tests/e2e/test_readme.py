"""The README's promises that are easy to break silently: the published intake schema, and the
by-hand walkthrough against a local emulator, run as written."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import jsonschema

from sync.api import intake_schema
from sync.store.crypto import new_key
from tests.support.cli import calsync, cli_env, upgraded_runner
from tests.support.factories import session_data

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "docs" / "session.schema.json"


def test_the_published_schema_is_the_one_intake_validates_with():
    # Given the schema file the README points platforms at
    published = json.loads(SCHEMA.read_text(encoding="utf-8"))
    # Then it is exactly what the model generates (regenerate it when the model changes)
    assert published == intake_schema()
    # And the README's example session is valid against it, while a session without participants is not
    jsonschema.Draft202012Validator.check_schema(published)
    validator = jsonschema.Draft202012Validator(published)
    assert list(validator.iter_errors(session_data())) == []
    assert list(validator.iter_errors({**session_data(), "participants": []}))


def readme_block(heading: str) -> list[str]:
    """The commands of the first ```sh block after ``heading`` in README.md, comments stripped."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    after = text[text.index(heading):]
    block = re.search(r"```sh\n(.*?)```", after, re.S)
    assert block is not None, heading
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_emulator_walkthrough_runs_as_written(tmp_path: Path):
    # Given the commands the README gives for trying calsync against a local Google emulator
    commands = readme_block("### Trying it against a local emulator")
    start = commands[0]
    assert start.startswith("python -m sync.testing.emulators google")
    # When the emulator is started exactly as written
    emulator = subprocess.Popen([sys.executable, *start.split()[1:]], cwd=tmp_path, stdout=subprocess.PIPE,
                                text=True, start_new_session=True)
    try:
        exports, token = {}, None
        for line in emulator.stdout:  # type: ignore[union-attr]
            if line.startswith("export "):
                name, _, value = line[len("export "):].strip().partition("=")
                exports[name] = value
            elif line.startswith("# refresh token for "):
                token = line.rsplit(": ", 1)[1].strip()
            elif line.startswith("# serving"):
                break
        assert token and "CALSYNC_GOOGLE_API_URL" in exports
        env = cli_env(tmp_path, **exports, CALSYNC_SECRET_KEYS=new_key())
        run = upgraded_runner(env, tmp_path)
        # And the calsync commands that follow run as written, with the token it printed
        (tmp_path / "session.json").write_text(json.dumps(session_data()))
        (tmp_path / "tokens.json").write_text(json.dumps(
            {"user_id": "u-1", "provider": "google", "account_email": "mentor@example.com", "refresh_token": token}))
        for command in commands[1:]:
            result = run(*command.split()[1:])
            assert result.returncode == 0, (command, result.stdout, result.stderr)
        # Then the mentor's copy is an event on the emulated Google calendar, not an invite
        shown = json.loads(calsync(env, tmp_path, "sessions", "show", "sess-42", "--json").stdout)
        mentor = [p for p in shown["placements"] if p["user_id"] == "u-1"]
        assert [(p["channel"], p["state"]) for p in mentor] == [("google", "placed")]
    finally:
        # Ctrl-C, as the README says; a loaded CI machine may take a while to unwind its threads.
        os.killpg(emulator.pid, signal.SIGINT)
        try:
            emulator.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(emulator.pid, signal.SIGKILL)
            raise
