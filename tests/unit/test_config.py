"""Settings are typed and range-checked when they load, and every invalid one is named at once.

In-process tests read the settings from a scrubbed environment (no CALSYNC_*
but the ones each test sets) in an empty working directory, so neither the
developer's own variables nor a ``.env`` can leak in, and the cached settings
are re-read afterwards. CLI tests run ``calsync`` as a subprocess with
:func:`cli_env`, so nothing they set reaches other tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.config import Settings, get_settings
from sync.errors import ConfigError
from tests.support.cli import ROOT, assert_one_line_error, calsync, cli_env, command

#: Seconds a `calsync worker` that should refuse to start may take before it counts as started.
WORKER_START_TIMEOUT = 20


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """No CALSYNC_* variables and no .env; monkeypatch restores both, and the settings are re-read after."""
    for name in [n for n in os.environ if n.startswith("CALSYNC_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def load_error(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    """The ConfigError message the settings give with these CALSYNC_* variables set."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        get_settings()
    return str(raised.value)


def load(monkeypatch: pytest.MonkeyPatch, **variables: str) -> Settings:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return get_settings()


# -- what loads ----------------------------------------------------------------------------------------


def test_the_defaults_load(clean_env):
    # Given no CALSYNC_* variable at all
    # When the settings load
    settings = load(clean_env)
    # Then they are the documented defaults
    assert settings.max_attempts == 6 and settings.metrics_port == 0 and settings.mail_from is None


def test_the_example_env_file_loads(clean_env, tmp_path: Path):
    # Given config/example.env copied to .env, as the README suggests (blank values included)
    shutil.copy(ROOT / "config" / "example.env", tmp_path / ".env")
    # When the settings load
    settings = load(clean_env)
    # Then its placeholders are valid, and blank values mean "not set"
    assert settings.mail_from == "sessions@calsync.example"
    assert settings.google_client_id is None and settings.secret_keys == []


def test_blank_optional_settings_mean_unset(clean_env):
    # Given optional settings exported empty (as `CALSYNC_MAIL_FROM=` in a shell or a .env does)
    # When the settings load
    settings = load(clean_env, CALSYNC_MAIL_FROM="", CALSYNC_SMTP_URL=" ", CALSYNC_MS_CA_BUNDLE="",
                    CALSYNC_GOOGLE_CLIENT_ID="")
    # Then they are unset, not invalid, and a path that needs them says so
    assert settings.mail_from is None and settings.smtp_url is None and settings.ms_ca_bundle is None
    assert settings.google_client_id is None
    with pytest.raises(ConfigError, match="CALSYNC_MAIL_FROM is not set"):
        settings.require("mail_from")


@pytest.mark.parametrize("variables", [
    {"CALSYNC_SWEEP_INTERVAL_SECONDS": "0"},  # 0 disables the periodic sweep
    {"CALSYNC_METRICS_PORT": "0"},  # 0 is off
    {"CALSYNC_METRICS_PORT": "65535"},
    {"CALSYNC_RETRY_MIN_BACKOFF_MS": "0", "CALSYNC_RETRY_MAX_BACKOFF_MS": "0"},
    {"CALSYNC_RETRY_MIN_BACKOFF_MS": "700", "CALSYNC_RETRY_MAX_BACKOFF_MS": "700"},
    {"CALSYNC_MAX_ATTEMPTS": "1", "CALSYNC_EMBEDDED_WORKER_THREADS": "1", "CALSYNC_OUTLOOK_MAX_CONCURRENT": "1"},
    {"CALSYNC_IO_TIMEOUT_SECONDS": "0.5", "CALSYNC_QUOTA_WINDOW_SECONDS": "0.1"},
    {"CALSYNC_DATABASE_URL": "postgresql+psycopg://calsync:pw@db.internal:5432/calsync"},
    {"CALSYNC_BROKER_URL": "rediss://:pw@redis.internal:6380/0"},
    {"CALSYNC_BROKER_URL": "unix:///run/redis.sock?db=1"},
    {"CALSYNC_BROKER_URL": "memory://"},
    {"CALSYNC_SMTP_URL": "smtp://user:pw@mail.example.com:587?starttls=true"},
    {"CALSYNC_SMTP_URL": "smtps://mail.example.com"},
    {"CALSYNC_SMTP_URL": "file:///tmp/outbox"},
    {"CALSYNC_GOOGLE_API_URL": "http://127.0.0.1:8080/", "CALSYNC_GRAPH_URL": "https://graph.example/v1.0"},
    {"CALSYNC_MAIL_FROM": "sessions@calsync.example"},
])
def test_edge_values_that_make_sense_load(clean_env, variables: dict[str, str]):
    # Given a setting at the edge of its range, or a URL of each accepted kind
    # When the settings load
    # Then nothing is refused
    load(clean_env, **variables)


# -- what is refused -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("CALSYNC_MAX_ATTEMPTS", "0", "CALSYNC_MAX_ATTEMPTS: must be at least 1, got 0"),
    ("CALSYNC_MAX_ATTEMPTS", "lots", "CALSYNC_MAX_ATTEMPTS: must be a whole number, got 'lots'"),
    ("CALSYNC_EMBEDDED_WORKER_THREADS", "0", "CALSYNC_EMBEDDED_WORKER_THREADS: must be at least 1, got 0"),
    ("CALSYNC_QUOTA_WINDOW_SECONDS", "-5", "CALSYNC_QUOTA_WINDOW_SECONDS: must be greater than 0, got -5"),
    ("CALSYNC_OUTLOOK_QUOTA_WINDOW_SECONDS", "0",
     "CALSYNC_OUTLOOK_QUOTA_WINDOW_SECONDS: must be greater than 0, got 0"),
    ("CALSYNC_IO_TIMEOUT_SECONDS", "-1", "CALSYNC_IO_TIMEOUT_SECONDS: must be greater than 0, got -1"),
    ("CALSYNC_IO_TIMEOUT_SECONDS", "inf", "CALSYNC_IO_TIMEOUT_SECONDS: must be a finite number, got inf"),
    ("CALSYNC_IO_TIMEOUT_SECONDS", "nan", "CALSYNC_IO_TIMEOUT_SECONDS: must be a finite number, got nan"),
    ("CALSYNC_METRICS_PORT", "99999", "CALSYNC_METRICS_PORT: must be at most 65535, got 99999"),
    ("CALSYNC_METRICS_PORT", "-1", "CALSYNC_METRICS_PORT: must be at least 0, got -1"),
    ("CALSYNC_LEASE_SECONDS", "0", "CALSYNC_LEASE_SECONDS: must be at least 1, got 0"),
    ("CALSYNC_RETRY_MIN_BACKOFF_MS", "-1", "CALSYNC_RETRY_MIN_BACKOFF_MS: must be at least 0, got -1"),
    ("CALSYNC_SWEEP_INTERVAL_SECONDS", "-1", "CALSYNC_SWEEP_INTERVAL_SECONDS: must be at least 0, got -1"),
    ("CALSYNC_GOOGLE_QUOTA_PER_USER", "0", "CALSYNC_GOOGLE_QUOTA_PER_USER: must be at least 1, got 0"),
    ("CALSYNC_GOOGLE_QUOTA_PER_PROJECT", "0", "CALSYNC_GOOGLE_QUOTA_PER_PROJECT: must be at least 1, got 0"),
    ("CALSYNC_OUTLOOK_QUOTA_PER_WINDOW", "0", "CALSYNC_OUTLOOK_QUOTA_PER_WINDOW: must be at least 1, got 0"),
    ("CALSYNC_OUTLOOK_MAX_CONCURRENT", "0", "CALSYNC_OUTLOOK_MAX_CONCURRENT: must be at least 1, got 0"),
    ("CALSYNC_METRICS_HOST", "", "CALSYNC_METRICS_HOST: must not be empty"),
])
def test_an_out_of_range_number_is_one_line_naming_it(clean_env, variable: str, value: str, expected: str):
    # Given one numeric setting that makes no sense
    # When the settings load
    message = load_error(clean_env, **{variable: value})
    # Then the error is exactly one line: the variable, the range, the value given
    assert message == expected


def test_the_largest_backoff_cannot_be_below_the_first(clean_env):
    # Given a first retry delay longer than the cap on any delay
    # When the settings load
    message = load_error(clean_env, CALSYNC_RETRY_MIN_BACKOFF_MS="5000", CALSYNC_RETRY_MAX_BACKOFF_MS="100")
    # Then one line names the cap and the setting it must not undercut
    assert message == ("CALSYNC_RETRY_MAX_BACKOFF_MS: must be at least CALSYNC_RETRY_MIN_BACKOFF_MS (5000), "
                       "got 100")


def test_mail_from_must_be_an_email_address(clean_env):
    # Given a sender that is not an email address
    # When the settings load
    message = load_error(clean_env, CALSYNC_MAIL_FROM="not an email")
    # Then one line names the variable, why, and what was given
    assert message.startswith("CALSYNC_MAIL_FROM: must be an email address")
    assert message.endswith("got 'not an email'") and "\n" not in message


@pytest.mark.parametrize(("variable", "value", "words"), [
    ("CALSYNC_DATABASE_URL", "not a url", "must be a SQLAlchemy URL"),
    ("CALSYNC_BROKER_URL", "http://redis.internal:6379/0", "redis://, rediss://, unix:// or memory://"),
    ("CALSYNC_BROKER_URL", "redis.internal:6379", "redis://, rediss://, unix:// or memory://"),
    ("CALSYNC_SMTP_URL", "http://mail.example.com", "smtp://, smtps:// or file://"),
    ("CALSYNC_SMTP_URL", "smtp://mail.example.com?startls=true", "unknown option(s) startls"),
    ("CALSYNC_SMTP_URL", "smtp://mail.example.com:99999", "port"),
    ("CALSYNC_GOOGLE_API_URL", "ftp://www.googleapis.com/", "http:// or https://"),
    ("CALSYNC_GOOGLE_TOKEN_URL", "oauth2.googleapis.com/token", "http:// or https://"),
    ("CALSYNC_GOOGLE_REDIRECT_URI", "urn:ietf:wg:oauth:2.0:oob", "http:// or https://"),
    ("CALSYNC_MS_AUTHORITY_URL", "https://", "http:// or https://"),
    ("CALSYNC_GRAPH_URL", "graph", "http:// or https://"),
    ("CALSYNC_MS_REDIRECT_URI", "localhost:8765/cb", "http:// or https://"),
])
def test_a_url_of_the_wrong_kind_is_one_line_naming_it(clean_env, variable: str, value: str, words: str):
    # Given a URL setting of a kind calsync cannot use
    # When the settings load
    message = load_error(clean_env, **{variable: value})
    # Then one line names the variable and what it must be
    assert message.startswith(f"{variable}: ") and words in message and "\n" not in message


@pytest.mark.parametrize(("variable", "value"), [
    ("CALSYNC_DATABASE_URL", "postgresql+psycopg://calsync:hunter2@db.internal:notaport/calsync"),
    ("CALSYNC_BROKER_URL", "http://:hunter2@redis.internal:6379/0"),
    ("CALSYNC_SMTP_URL", "smtp://mailer:hunter2@mail.example.com:99999"),
    ("CALSYNC_SMTP_URL", "ftp://mailer:hunter2@mail.example.com"),
])
def test_a_refused_url_never_shows_its_password(clean_env, variable: str, value: str):
    # Given a malformed URL that carries a password
    # When the settings load
    message = load_error(clean_env, **{variable: value})
    # Then the error names the variable but not the password
    assert message.startswith(f"{variable}: ") and "hunter2" not in message


def test_every_invalid_setting_is_reported_at_once(clean_env):
    # Given six settings that are wrong in six different ways
    # When the settings load
    message = load_error(clean_env, CALSYNC_MAIL_FROM="not an email", CALSYNC_QUOTA_WINDOW_SECONDS="-5",
                         CALSYNC_MAX_ATTEMPTS="0", CALSYNC_METRICS_PORT="99999", CALSYNC_IO_TIMEOUT_SECONDS="-1",
                         CALSYNC_EMBEDDED_WORKER_THREADS="0")
    # Then one ConfigError names all six, one line each, in the order the README lists them
    assert [line.split(":")[0] for line in message.splitlines()] == [
        "CALSYNC_MAIL_FROM", "CALSYNC_QUOTA_WINDOW_SECONDS", "CALSYNC_MAX_ATTEMPTS", "CALSYNC_IO_TIMEOUT_SECONDS",
        "CALSYNC_EMBEDDED_WORKER_THREADS", "CALSYNC_METRICS_PORT"]


def test_settings_built_in_code_are_checked_the_same_way(clean_env):
    # Given settings built directly, as tests and benchmarks do
    # When two of them are out of range
    with pytest.raises(ConfigError) as raised:
        Settings(max_attempts=0, lease_seconds=-1)
    # Then the same one-line-per-variable ConfigError comes back
    assert str(raised.value).splitlines() == ["CALSYNC_MAX_ATTEMPTS: must be at least 1, got 0",
                                              "CALSYNC_LEASE_SECONDS: must be at least 1, got -1"]


def test_a_dotenv_that_is_not_utf8_is_one_line_naming_the_file(clean_env, tmp_path: Path):
    # Given a .env in the working directory saved in Latin-1
    (tmp_path / ".env").write_bytes("CALSYNC_MAIL_FROM=sessions@calsync.example\n# caf\xe9\n".encode("latin-1"))
    # When the settings load
    message = load_error(clean_env)
    # Then one line names the file and what is wrong with it
    assert str(tmp_path / ".env") in message and "UTF-8" in message and "\n" not in message


def test_an_invalid_value_in_the_dotenv_is_named_too(clean_env, tmp_path: Path):
    # Given a .env with an out-of-range knob
    (tmp_path / ".env").write_text("CALSYNC_MAX_ATTEMPTS=0\n", encoding="utf-8")
    # When the settings load
    # Then it is reported like an environment variable
    assert load_error(clean_env) == "CALSYNC_MAX_ATTEMPTS: must be at least 1, got 0"


# -- the CLI -----------------------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path)


@pytest.mark.slow
def test_doctor_fails_configuration_naming_each_invalid_setting(env, tmp_path: Path):
    # Given a migrated database and two invalid settings
    assert calsync(env, tmp_path, "db", "upgrade").returncode == 0
    bad = {**env, "CALSYNC_MAIL_FROM": "not an email", "CALSYNC_MAX_ATTEMPTS": "0"}
    # When doctor runs
    result = calsync(bad, tmp_path, "doctor", "--json")
    # Then the configuration check fails naming both, one line each, and the exit status is 1
    assert result.returncode == 1, result.stdout + result.stderr
    configuration = json.loads(result.stdout)["checks"][0]
    assert configuration["name"] == "configuration" and not configuration["ok"]
    assert [line.split(":")[0] for line in configuration["detail"].splitlines()] == [
        "CALSYNC_MAIL_FROM", "CALSYNC_MAX_ATTEMPTS"]
    # And the plain form keeps it on the one configuration line
    plain = calsync(bad, tmp_path, "doctor")
    [line] = [x for x in plain.stdout.splitlines() if x.split()[1] == "configuration"]
    assert line.split()[0] == "failed" and "CALSYNC_MAIL_FROM" in line and "CALSYNC_MAX_ATTEMPTS" in line


@pytest.mark.slow
def test_a_command_with_invalid_settings_is_one_line_exit_2(env, tmp_path: Path):
    # Given no threads for the embedded worker (sweep would wait forever) and a bad sender
    bad = {**env, "CALSYNC_EMBEDDED_WORKER_THREADS": "0", "CALSYNC_MAIL_FROM": "not an email"}
    # When sweep runs
    result = calsync(bad, tmp_path, "sweep")
    # Then it refuses on one line naming both, exit 2
    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_line_error(result, "CALSYNC_EMBEDDED_WORKER_THREADS", "CALSYNC_MAIL_FROM")


@pytest.mark.slow
def test_a_dotenv_that_is_not_utf8_is_one_line_exit_2(env, tmp_path: Path):
    # Given a Latin-1 .env in the working directory
    (tmp_path / ".env").write_bytes("# caf\xe9\n".encode("latin-1"))
    # When a command runs
    result = calsync(env, tmp_path, "sweep")
    # Then one line names the file, exit 2
    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_line_error(result, str(tmp_path / ".env"))


# -- calsync worker ----------------------------------------------------------------------------------------


def start_worker(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``calsync worker`` expected to refuse; if it starts dramatiq instead, its whole process group is killed."""
    proc = subprocess.Popen(command("worker", *args), env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=WORKER_START_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"calsync worker started instead of refusing:\n{err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture
def worker_env(env: dict[str, str]) -> dict[str, str]:
    """Valid worker settings on a Redis address nothing listens on: a dramatiq started by mistake does nothing."""
    return {**env, "CALSYNC_BROKER_URL": "redis://127.0.0.1:1/0"}


@pytest.mark.slow
def test_worker_refuses_invalid_settings_before_starting_dramatiq(worker_env, tmp_path: Path):
    # Given two invalid settings
    bad = {**worker_env, "CALSYNC_MAX_ATTEMPTS": "0", "CALSYNC_METRICS_PORT": "99999"}
    # When the worker starts
    result = start_worker(bad, tmp_path)
    # Then it refuses on one line naming both, exit 2, without starting dramatiq
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, "CALSYNC_MAX_ATTEMPTS", "CALSYNC_METRICS_PORT")


@pytest.mark.slow
@pytest.mark.parametrize(("content", "words"), [
    (None, "does not exist"),
    ("{not json", "not JSON"),
    ("[1, 2]", "JSON object"),
    ('{"handlers": {}}', "version"),
    ('{"version": 1, "handlers": {"h": {"class": "logging.NoSuchHandler"}}}', "NoSuchHandler"),
    ('{"version": 1, "handlers": {"f": {"class": "logging.FileHandler", "filename": "/nonexistent/dir/w.log"}}}',
     "/nonexistent/dir/w.log"),
])
def test_worker_refuses_a_log_config_it_cannot_apply(worker_env, tmp_path: Path, content: str | None, words: str):
    # Given a --log-config file that is missing, not JSON, or a dictConfig logging refuses
    path = tmp_path / "logging.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    # When the worker starts with it
    result = start_worker(worker_env, tmp_path, "--log-config", str(path))
    # Then it refuses on one line naming the option and why, exit 2, without starting dramatiq
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, "--log-config", words)
