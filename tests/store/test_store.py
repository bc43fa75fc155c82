"""The store on SQLite and PostgreSQL: times, secrets, intake rules."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy import event, text

from sync import api
from sync.engine.runtime import Runtime
from sync.errors import ConfigError, Misconfigured
from sync.store.crypto import CredentialBox, new_key
from sync.store.models import Integration, Person
from tests.support.factories import session_data


def dump(rt: Runtime) -> str:
    """Every value in every table, as text: for asserting what never reaches the store."""
    out = []
    with rt.store.engine.connect() as conn:
        for table in ("sessions", "participants", "people", "placements", "outbox", "sync_log", "integrations"):
            out += [repr(tuple(r)) for r in conn.execute(text(f"SELECT * FROM {table}"))]
    return "\n".join(out)


def test_times_come_back_utc_aware(runtime: Runtime):
    api.upsert_session(session_data(), rt=runtime, enqueue=False)
    s = api.get_session("sess-42", rt=runtime).session
    assert s.start == datetime(2026, 12, 1, 20, 0, tzinfo=timezone.utc)
    assert s.start.tzinfo is not None and s.start.utcoffset().total_seconds() == 0


def test_unknown_fields_are_dropped_never_stored(runtime: Runtime):
    data = session_data(private_notes="mentee struggles with anxiety")
    data["participants"][0]["private_notes"] = "salary 90k"
    api.upsert_session(data, rt=runtime, enqueue=False)
    stored = dump(runtime)
    assert "anxiety" not in stored and "90k" not in stored
    assert "Setting goals" in stored


def test_agenda_is_sanitised_before_it_is_stored(runtime: Runtime):
    html = '<p onclick="x()">Hi</p><script>steal()</script><a href="javascript:alert(1)">x</a>'
    api.upsert_session(session_data(agenda_html=html), rt=runtime, enqueue=False)
    stored = dump(runtime)
    assert "steal" not in stored and "onclick" not in stored and "javascript:" not in stored


def test_batch_with_a_bad_element_stores_only_the_good_ones(runtime: Runtime):
    good = session_data(id="good")
    bad = session_data(id="bad", start="2026-12-01T15:00:00")
    results = api.upsert_sessions([good, bad], rt=runtime, enqueue=False)
    assert [r.outcome for r in results] == ["created", "invalid"]
    assert [(e.field, e.reason) for e in results[1].errors] == [
        ("[1].start", "needs a UTC offset, e.g. 2026-12-01T15:00:00-05:00")]
    assert "'bad'" not in dump(runtime)


def at_once(rt: Runtime, *calls: Callable[[], Any]) -> list[Any]:
    """Run each call in its own thread, holding every thread just before its first insert
    into ``people`` until all have got there: the moment two get-then-add writers collide.

    Returns each call's result, or the exception it raised.
    """
    barrier = threading.Barrier(len(calls))
    waited: set[int] = set()

    def hold(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("INSERT INTO PEOPLE") and threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            barrier.wait(timeout=30)

    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as exc:  # reported to the test, not swallowed
            results[i] = exc

    event.listen(rt.store.engine, "before_cursor_execute", hold)
    try:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        event.remove(rt.store.engine, "before_cursor_execute", hold)
    return results


def test_two_bookings_naming_the_same_new_person_at_once_both_succeed(runtime: Runtime):
    # Given two sessions that both name a person the store has never seen
    newcomer = {"user_id": "u-new", "email": "new@example.com", "name": "Newcomer"}
    first = session_data(id="first", participants=[
        {"user_id": "u-1", "email": "mentor@example.com"}, newcomer])
    second = session_data(id="second", participants=[
        newcomer, {"user_id": "u-3", "email": "other@example.com"}])
    # When both are taken in at once, each in its own transaction
    results = at_once(runtime, lambda: api.upsert_session(first, rt=runtime, enqueue=False),
                      lambda: api.upsert_session(second, rt=runtime, enqueue=False))
    # Then both are stored, and the newcomer exists once
    assert [getattr(r, "outcome", r) for r in results] == ["created", "created"]
    with runtime.store.tx() as db:
        assert [(p.user_id, p.email, p.name) for p in db.query(Person).filter_by(user_id="u-new")] == [
            ("u-new", "new@example.com", "Newcomer")]


def test_a_booking_updates_a_known_person(runtime: Runtime):
    # Given a person stored by an earlier session
    api.upsert_session(session_data(), rt=runtime, enqueue=False)
    # When a later session gives them a new address, name and time zone
    data = session_data(id="later")
    data["participants"][0].update(email="ada@example.org", name="Ada King", timezone="Europe/Paris")
    api.upsert_session(data, rt=runtime, enqueue=False)
    # Then the person carries what the platform sent last
    with runtime.store.tx() as db:
        ada = db.get(Person, "u-1")
        assert (ada.email, ada.name, ada.timezone) == ("ada@example.org", "Ada King", "Europe/Paris")


def test_connecting_while_a_booking_creates_the_person_both_succeed(db_url: str):
    # Given a person the store has never seen, who connects a calendar just as a booking names them
    from sync.accounts.grants import save_grant
    from sync.providers.connector import Grant
    from sync.store.crypto import new_key
    from sync.store.db import Store
    from tests.support.factories import make_settings

    rt = Runtime(make_settings(db_url, secret_keys=new_key()), Store(db_url))
    booking = session_data(participants=[{"user_id": "u-new", "email": "new@example.com"}])
    # When both run at once, each in its own transaction
    results = at_once(rt, lambda: api.upsert_session(booking, rt=rt, enqueue=False),
                      lambda: save_grant(rt, "u-new", "google", Grant({"refresh_token": "t"}, "account@gmail.example")))
    # Then both succeed
    assert [type(r).__name__ for r in results] == ["IntakeResult", "int"], results
    # And the person keeps the address the platform sent, not the calendar account's
    with rt.store.tx() as db:
        assert db.get(Person, "u-new").email == "new@example.com"


def test_connecting_keeps_a_known_email(db_url: str):
    # Given a person stored by a session
    from sync.accounts.grants import save_grant
    from sync.providers.connector import Grant
    from sync.store.crypto import new_key
    from sync.store.db import Store
    from tests.support.factories import make_settings

    rt = Runtime(make_settings(db_url, secret_keys=new_key()), Store(db_url))
    api.upsert_session(session_data(), rt=rt, enqueue=False)
    # When they connect a calendar under another account address
    save_grant(rt, "u-1", "google", Grant({"refresh_token": "t"}, "ada.personal@gmail.example"))
    # Then the person's email is still the platform's, and the account address sits on the integration
    with rt.store.tx() as db:
        assert db.get(Person, "u-1").email == "mentor@example.com"
        assert db.query(Integration).one().account_email == "ada.personal@gmail.example"


def test_same_version_with_other_content_is_a_conflict(runtime: Runtime):
    api.upsert_session(session_data(), rt=runtime, enqueue=False)
    same = api.upsert_session(session_data(), rt=runtime, enqueue=False)
    other = api.upsert_session(session_data(title="Changed"), rt=runtime, enqueue=False)
    assert same.outcome == "unchanged"
    assert other.outcome == "conflict" and other.errors[0].field == "version"


def test_credentials_are_ciphertext_at_rest_and_rotate(runtime: Runtime):
    old, new = new_key(), new_key()
    box = CredentialBox([old])
    with runtime.store.tx() as db:
        db.add(Person(user_id="u-1", email="mentor@example.com"))
        db.flush()
        db.add(Integration(user_id="u-1", provider="google", credentials=box.seal({"refresh_token": "1//0gSECRET"})))
    assert "SECRET" not in dump(runtime)
    # When a new key is prepended and the row rewritten, the old key alone no longer opens it
    rotated = CredentialBox([new, old])
    with runtime.store.tx() as db:
        row = db.query(Integration).one()
        row.credentials = rotated.rotate(row.credentials)
        blob = row.credentials
    assert CredentialBox([new]).open(blob) == {"refresh_token": "1//0gSECRET"}
    with pytest.raises(Misconfigured):
        CredentialBox([old]).open(blob)


def test_secret_keys_must_be_fernet_keys():
    with pytest.raises(ConfigError, match="CALSYNC_SECRET_KEYS"):
        CredentialBox(["not-a-key"])
    with pytest.raises(ConfigError, match="CALSYNC_SECRET_KEYS"):
        CredentialBox([])


def test_keys_rotate_reencrypts_under_the_first_key(db_url: str):
    # Given credentials sealed under an old key
    from sync.accounts import rotate_keys
    from sync.store.db import Store
    from tests.support.factories import make_settings

    old, new = new_key(), new_key()
    rt = Runtime(make_settings(db_url, secret_keys=old), Store(db_url))
    with rt.store.tx() as db:
        db.add(Person(user_id="u-1", email="mentor@example.com"))
        db.flush()
        db.add(Integration(user_id="u-1", provider="google", credentials=CredentialBox([old]).seal({"t": "x"})))
    # When the new key is prepended and keys are rotated
    rotated = Runtime(make_settings(db_url, secret_keys=f"{new},{old}"), Store(db_url))
    assert rotate_keys(rotated).as_dict() == {"rotated": 1, "unreadable": 0}
    # Then the new key alone opens them
    with rt.store.tx() as db:
        assert CredentialBox([new]).open(db.query(Integration).one().credentials) == {"t": "x"}
    # And a key set that cannot open them reports them as unreadable, untouched
    assert rotate_keys(Runtime(make_settings(db_url, secret_keys=new_key()), Store(db_url))).as_dict() == \
        {"rotated": 0, "unreadable": 1}


def test_migrations_match_the_models(db_url: str):
    # Given a database built by the migrations alone
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    from sync.store.models import Base

    engine = create_engine(db_url)
    # Then the models describe exactly that schema: nobody changed a table without a migration
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []
