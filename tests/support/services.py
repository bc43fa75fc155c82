"""The servers some tests need (PostgreSQL, Redis): where they are, and what happens when they are down."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

POSTGRES_URL = os.environ.get("CALSYNC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CALSYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() == "true"


def require_service(name: str, check: Callable[[], object]) -> None:
    """Skip locally when a server is absent, but never on CI: there it is a failure."""
    try:
        check()
    except Exception as exc:  # any connection problem
        if IN_CI:
            pytest.fail(f"{name} is required on CI and is not reachable: {exc}")
        pytest.skip(f"{name} not reachable: {exc}")
