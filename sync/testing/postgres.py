"""A private, migrated PostgreSQL schema for one test or one benchmark run, dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text


@contextmanager
def private_schema(server_url: str, prefix: str = "t") -> Iterator[str]:
    """Create a new schema on the server, migrate it, and yield the URL that uses it.

    Runs on one shared database side by side with other runs, each in its own
    ``search_path``; the schema and its engine are gone on exit.
    """
    from sync.store.db import engine_for
    from sync.store.migrate import upgrade

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{server_url}{'&' if '?' in server_url else '?'}options=-csearch_path%3D{schema}"
        try:
            upgrade(url)
            yield url
        finally:
            engine_for(url).dispose()
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()
