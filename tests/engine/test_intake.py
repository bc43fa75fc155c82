"""Intake through the API: a batch survives its bad elements, and the organizer is never a participant."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError

from sync import api
from sync.engine.runtime import Runtime
from sync.store import sessions
from sync.store.db import Store
from tests.support.factories import make_settings, session_data


def stored(rt: Runtime, table: str, column: str) -> set[str]:
    """One column of one table, for asserting what reached the store (and what did not)."""
    with rt.store.engine.connect() as conn:
        return set(conn.scalars(text(f"SELECT {column} FROM {table}")))


def element(session_id: str, **overrides: Any) -> dict[str, Any]:
    """A session with a participant of its own, so a half-stored element would show in ``people``."""
    data = session_data(id=session_id, **overrides)
    data["participants"][1] = {"user_id": f"u-{session_id}", "email": f"{session_id}@example.com"}
    return data


@pytest.mark.parametrize(("bad", "fields"), [
    ({"start": "9999-12-31T23:00:00-05:00", "end": "9999-12-31T23:30:00-05:00"}, ["[1].start", "[1].end"]),
    ({"start": "0001-01-01T00:30:00+01:00"}, ["[1].start"]),
    ({"version": 2**63}, ["[1].version"]),
    ({"start": "2026-12-01T15:00:00"}, ["[1].start"]),
])
def test_an_invalid_element_does_not_stop_the_batch(runtime: Runtime, bad: dict[str, Any], fields: list[str]):
    # Given a batch whose middle element fails validation
    items = [element("first"), element("middle", **bad), element("last")]
    # When it is taken in
    results = api.upsert_sessions(items, rt=runtime, enqueue=False)
    # Then the middle element is invalid with its field named, and both neighbours are stored
    assert [(r.session_id, r.outcome) for r in results] == [
        ("first", "created"), ("middle", "invalid"), ("last", "created")]
    assert [e.field for e in results[1].errors] == fields
    # And nothing of the middle element reached the store
    assert stored(runtime, "sessions", "id") == {"first", "last"}
    assert "u-middle" not in stored(runtime, "people", "user_id")


def test_a_database_error_does_not_stop_the_batch_and_rolls_back(runtime: Runtime, monkeypatch: pytest.MonkeyPatch):
    # Given a store that fails on the middle element only after writing its rows
    real_save = sessions.save

    class NumericValueOutOfRange(Exception):
        """Stands in for the driver's exception."""

    def failing_save(db, session):  # type: ignore[no-untyped-def]
        result = real_save(db, session)
        if session.id == "middle":
            raise DataError("INSERT INTO sessions ...", {"title": "secret title"},
                            NumericValueOutOfRange("integer out of range\nDETAIL: more"))
        return result

    monkeypatch.setattr(sessions, "save", failing_save)
    items = [element("first"), element("middle"), element("last")]
    # When the batch is taken in
    results = api.upsert_sessions(items, rt=runtime, enqueue=False)
    # Then the middle element is an error with a one-line reason, and both neighbours are stored
    assert [(r.session_id, r.outcome) for r in results] == [
        ("first", "created"), ("middle", "error"), ("last", "created")]
    [err] = results[1].errors
    assert err.field == "[1].session"
    assert err.reason == "could not store: NumericValueOutOfRange: integer out of range"
    # And what was written for the middle element was rolled back
    assert stored(runtime, "sessions", "id") == {"first", "last"}
    assert "u-middle" not in stored(runtime, "people", "user_id")


def organizer_as_participant(address: str) -> dict[str, Any]:
    data = session_data()
    data["participants"][1]["email"] = address
    return data


def test_the_organizer_address_cannot_be_a_participant(runtime: Runtime):
    # Given a session naming the organizer address (CALSYNC_MAIL_FROM), in another case, as a participant
    data = organizer_as_participant(runtime.settings.mail_from.upper())
    # When it is taken in
    [result] = api.upsert_sessions([data], rt=runtime, enqueue=False)
    # Then it is invalid, naming that participant's email, and nothing is stored
    assert result.outcome == "invalid"
    assert [e.field for e in result.errors] == ["participants[1].email"]
    assert "organizer" in result.errors[0].reason
    assert stored(runtime, "sessions", "id") == set()


def test_the_organizer_check_names_the_element_in_a_batch(runtime: Runtime):
    # Given a batch whose second element names the organizer as a participant
    items = [element("first"), organizer_as_participant(runtime.settings.mail_from)]
    # When it is taken in
    results = api.upsert_sessions(items, rt=runtime, enqueue=False)
    # Then the error carries the element's index
    assert [r.outcome for r in results] == ["created", "invalid"]
    assert [e.field for e in results[1].errors] == ["[1].participants[1].email"]


def test_without_an_organizer_address_the_check_is_skipped(db_url: str):
    # Given no CALSYNC_MAIL_FROM (intake works without mail settings)
    rt = Runtime(make_settings(db_url, mail_from=None), Store(db_url))
    # When a session naming the usual organizer address is taken in
    [result] = api.upsert_sessions([organizer_as_participant("sessions@calsync.example")], rt=rt, enqueue=False)
    # Then it is stored
    assert result.outcome == "created"
