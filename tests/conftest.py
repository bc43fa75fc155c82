"""Shared fixtures: a migrated store on SQLite and PostgreSQL, runtimes, recording channels, the Google emulator.

The broker is forced to ``memory://`` before anything imports ``sync.engine.broker``,
because Dramatiq binds actors to the broker at import time. End-to-end tests
that need real Redis run the worker in a subprocess with their own environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

os.environ["CALSYNC_BROKER_URL"] = "memory://"
os.environ.setdefault("CALSYNC_MAIL_FROM", "sessions@calsync.example")
os.environ["CALSYNC_SWEEP_INTERVAL_SECONDS"] = "0"
# The contract's example session (1 Dec 2026) may already be over when the suite runs.
os.environ["CALSYNC_PAST_SESSIONS"] = "send"

from sqlalchemy import create_engine  # noqa: E402

from sync.config import get_settings  # noqa: E402
from sync.engine.runtime import Runtime  # noqa: E402
from sync.store.db import Store  # noqa: E402
from sync.store.migrate import upgrade  # noqa: E402
from sync.testing.channel import MemoryChannel  # noqa: E402
from sync.testing.emulators.google import GoogleEmulator  # noqa: E402
from sync.testing.postgres import private_schema  # noqa: E402
from tests.support.factories import make_settings  # noqa: E402
from tests.support.services import IN_CI, POSTGRES_URL, REDIS_URL, prepare_postgres, require_service  # noqa: E402

get_settings.cache_clear()

#: Hypothesis profiles: ``dev`` for a quick local run, ``ci`` on every push (CI=true), ``soak``
#: (``pytest --soak``) ten times harder. HYPOTHESIS_PROFILE names one explicitly.
hypothesis_settings.register_profile("ci", max_examples=40, deadline=None)
hypothesis_settings.register_profile("dev", parent=hypothesis_settings.get_profile("ci"), max_examples=10)
hypothesis_settings.register_profile("soak", parent=hypothesis_settings.get_profile("ci"), max_examples=400)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if IN_CI else "dev"))


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    parser.addoption("--soak", action="store_true", help="run the Hypothesis state machines with 10x the examples")
    if not pluginmanager.has_plugin("xdist"):
        # pyproject's addopts name xdist's options; with `-p no:xdist` nothing else would accept them.
        parser.addoption("--numprocesses", dest="numprocesses", help="ignored: pytest-xdist is disabled")
        parser.addoption("--dist", dest="dist", help="ignored: pytest-xdist is disabled")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--soak"):
        hypothesis_settings.load_profile("soak")


#: Tests far longer than the rest (the chaos run alone is a third of the suite's time), started first
#: under xdist so the other worker drains everything else meanwhile instead of waiting on them at the end.
LONGEST_FIRST = ("tests/reliability/test_chaos.py::", "tests/e2e/")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker sorts alike: xdist requires the same order
        items.sort(key=lambda item: next((i for i, p in enumerate(LONGEST_FIRST) if item.nodeid.startswith(p)),
                                         len(LONGEST_FIRST)))


def pytest_sessionstart(session: pytest.Session) -> None:
    # This process's PostgreSQL database (test_gw0, test_gw1, ... under xdist: tests/support/services.py).
    prepare_postgres()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated database: a SQLite file, or a private schema on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'calsync.db'}"
        upgrade(url)
        yield url
        return
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    require_service("PostgreSQL", lambda: admin.connect().close())
    admin.dispose()
    with private_schema(POSTGRES_URL) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'calsync.db'}"
    upgrade(url)
    return url


@pytest.fixture
def channel() -> MemoryChannel:
    return MemoryChannel()


@pytest.fixture
def runtime(db_url: str, channel: MemoryChannel) -> Runtime:
    return Runtime(make_settings(db_url), Store(db_url), channels=lambda s, st: {"email": channel})


@pytest.fixture
def emu() -> Iterator[GoogleEmulator]:
    """The Google emulator on 127.0.0.1, which must answer every request without an internal error.

    Modules that test another provider define their own ``emu``.
    """
    with GoogleEmulator() as emulator:
        yield emulator
        assert emulator.internal_errors == [], emulator.internal_errors[0]


@pytest.fixture
def redis_client() -> Iterator[Any]:
    """The test Redis database, empty before and after (REDIS_URL; a failure on CI, a skip elsewhere)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    require_service("Redis", client.ping)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
