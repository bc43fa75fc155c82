"""The servers some tests need (PostgreSQL, Redis): where they are, and what happens when they are down.

``CALSYNC_TEST_POSTGRES_URL`` and ``CALSYNC_TEST_REDIS_URL`` name the *base* database of a run. Without
pytest-xdist (``-n 0`` or ``-p no:xdist``) the tests use them as they are. Under xdist each worker
(``PYTEST_XDIST_WORKER`` = gw0, gw1, ...) gets its own, so two workers never flush or drop each
other's data:

- PostgreSQL: the base database name with the worker id appended (``test`` -> ``test_gw0``,
  ``test_gw1``), created on the same server if missing (:func:`prepare_postgres`, from conftest.py);
- Redis: the base db number *minus* the worker index (db 15 -> 15 for gw0, 14 for gw1). The derivation
  only goes down, so a run on base db N uses N-W+1 .. N with W workers: two runs at once need bases at
  least W apart (e.g. 15 and 12 with two workers each).

Every test, the chaos rig and the subprocesses they start take their URLs from :data:`POSTGRES_URL` and
:data:`REDIS_URL`, never from the environment variables.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from sqlalchemy.engine import make_url

BASE_POSTGRES_URL = os.environ.get("CALSYNC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BASE_REDIS_URL = os.environ.get("CALSYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
#: "gw0", "gw1", ... in a pytest-xdist worker; "" in a run without xdist (and in xdist's controller).
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
IN_CI = os.environ.get("CI", "").lower() == "true"


def worker_index(worker: str) -> int | None:
    """0 for "gw0", 1 for "gw1", ...; None outside an xdist worker."""
    match = re.fullmatch(r"gw(\d+)", worker)
    return int(match[1]) if match else None


def worker_postgres_url(base: str, worker: str) -> str:
    """``base`` with the worker id appended to its database name (``.../test`` -> ``.../test_gw1``)."""
    if worker_index(worker) is None:
        return base
    url = make_url(base)
    return url.set(database=f"{url.database}_{worker}").render_as_string(hide_password=False)


def worker_redis_url(base: str, worker: str) -> str:
    """``base`` with its db number lowered by the worker index (``/15`` -> ``/14`` for gw1).

    The db is the URL's path (``redis://host:6379/15``) or its ``db`` query parameter (``unix://...?db=15``);
    absent, it is 0, which leaves no db for gw1 and is refused.
    """
    index = worker_index(worker)
    if index is None:
        return base
    head, _, raw_query = base.partition("?")
    query = parse_qsl(raw_query, keep_blank_values=True)
    in_query = any(key == "db" for key, _ in query)
    if in_query:
        db = int(next(value for key, value in query if key == "db"))
    else:
        path = urlsplit(head).path
        db = int(path.strip("/") or 0)
    if db - index < 0:
        raise ValueError(f"CALSYNC_TEST_REDIS_URL {base!r}: xdist worker {worker} would use Redis db {db - index}; "
                         f"pick a base db of at least {index} (each worker takes the base db minus its index)")
    if in_query:
        return f"{head}?" + urlencode([(key, str(db - index) if key == "db" else value) for key, value in query])
    return f"{head.removesuffix(path)}/{db - index}" + (f"?{raw_query}" if raw_query else "")


POSTGRES_URL = worker_postgres_url(BASE_POSTGRES_URL, XDIST_WORKER)
REDIS_URL = worker_redis_url(BASE_REDIS_URL, XDIST_WORKER)


def prepare_postgres(url: str = POSTGRES_URL) -> None:
    """Create ``url``'s database if the server is up and it does not exist yet (trust auth, as on CI).

    Through the server's ``postgres`` database, with psycopg. Any failure is left to the tests:
    the first one that needs PostgreSQL connects through :func:`require_service`, which skips
    locally and fails on CI with the server's own error.
    """
    import psycopg
    from psycopg import errors, sql

    target = make_url(url)
    if not target.drivername.startswith("postgresql") or not target.database:
        return
    admin = target.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target.database,)).fetchone():
                return
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.database)))
            except errors.DuplicateDatabase:  # another run created it meanwhile
                pass
    except psycopg.Error:
        return


def require_service(name: str, check: Callable[[], object]) -> None:
    """Skip locally when a server is absent, but never on CI: there it is a failure."""
    try:
        check()
    except Exception as exc:  # any connection problem
        if IN_CI:
            pytest.fail(f"{name} is required on CI and is not reachable: {exc}")
        pytest.skip(f"{name} not reachable: {exc}")
