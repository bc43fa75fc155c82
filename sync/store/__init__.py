"""Persistence: tables, the engine, migrations and the queries the engine needs."""
