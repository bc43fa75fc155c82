"""Invites through the Dramatiq actor and a real SMTP server, including refusals."""

from __future__ import annotations

import email
import email.policy

import dramatiq
import pytest
import vobject
from icalendar import Calendar

from sync import api
from sync.engine.broker import QUEUE
from sync.engine.runtime import Runtime, default_channels, set_runtime
from sync.store.db import Store
from tests.support.factories import make_settings, session_data
from tests.support.smtpserver import SmtpServer


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


@pytest.fixture
def worker_rt(db_url: str, smtp: SmtpServer):
    """The actor's runtime, pointed at the test SMTP server, and an in-process worker."""
    from sync.engine.tasks import broker

    rt = Runtime(make_settings(db_url, smtp_url=smtp.url), Store(db_url), channels=default_channels)
    set_runtime(rt)
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=2)
    worker.start()
    yield rt
    worker.stop()
    broker.flush_all()
    set_runtime(None)


def drain() -> None:
    from sync.engine.tasks import broker

    broker.join(QUEUE, fail_fast=True, timeout=30_000)


def calendar_part(raw: bytes):
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    part = next(p for p in msg.walk() if p.get_content_type() == "text/calendar")
    return part, Calendar.from_ical(part.get_content())


def test_invites_reach_the_smtp_server_and_parse(worker_rt: Runtime, smtp: SmtpServer):
    # Given a session with two participants
    api.upsert_session(session_data(), rt=worker_rt)
    # When the worker drains the queue
    drain()
    # Then each got exactly one REQUEST that icalendar and vobject accept, listing only them
    for address in ("mentor@example.com", "mentee@example.com"):
        (raw,) = smtp.mailbox.to(address)
        part, cal = calendar_part(raw)
        assert part.get_param("method") == "REQUEST" == str(cal["METHOD"])
        (event,) = cal.events
        assert [str(a) for a in event.get("ATTENDEE") if a] == [f"mailto:{address}"] or \
            str(event.get("ATTENDEE")) == f"mailto:{address}"
        vobject.readOne(part.get_content(), validate=True)


def test_reschedule_then_cancel_keep_uid_and_raise_sequence(worker_rt: Runtime, smtp: SmtpServer):
    api.upsert_session(session_data(), rt=worker_rt)
    drain()
    api.upsert_session(session_data(version=2, start="2026-12-01T17:00:00-05:00", end="2026-12-01T18:00:00-05:00"),
                       rt=worker_rt)
    drain()
    api.cancel_session("sess-42", rt=worker_rt)
    drain()
    seen = []
    for raw in smtp.mailbox.to("mentee@example.com"):
        _, cal = calendar_part(raw)
        (event,) = cal.events
        seen.append((str(cal["METHOD"]), str(event["UID"]), int(event["SEQUENCE"]), str(event.get("STATUS"))))
    assert [(m, s, st) for m, _, s, st in seen] == [
        ("REQUEST", 0, "CONFIRMED"), ("REQUEST", 1, "CONFIRMED"), ("CANCEL", 2, "CANCELLED")]
    assert len({uid for _, uid, _, _ in seen}) == 1


def test_smtp_refusal_is_retried_then_fails_the_placement_with_the_reason(worker_rt: Runtime, smtp: SmtpServer):
    # Given the server refuses the mentee's address with a 5xx
    smtp.mailbox.refuse["mentee@example.com"] = "550 5.1.1 mailbox unavailable"
    # When the session is booked and the worker drains (retries included)
    api.upsert_session(session_data(), rt=worker_rt)
    drain()
    # Then the refusal was tried max_attempts times and the placement failed, naming the reason
    assert smtp.mailbox.refused.count("mentee@example.com") == worker_rt.settings.max_attempts
    view = api.get_session("sess-42", rt=worker_rt)
    by_user = {p.user_id: p for p in view.placements}
    assert by_user["u-2"].state == "failed" and "550" in (by_user["u-2"].last_error or "")
    # And the mentor still got their invite, once
    assert len(smtp.mailbox.to("mentor@example.com")) == 1


def test_refused_attempts_do_not_raise_the_sequence_of_a_persons_first_invite(worker_rt: Runtime,
                                                                              smtp: SmtpServer):
    # Given the server greylists the mentee (451) for every quick retry of their first invite
    smtp.mailbox.refuse["mentee@example.com"] = "451 4.7.1 greylisted, try again later"
    api.upsert_session(session_data(), rt=worker_rt)
    drain()
    assert smtp.mailbox.refused.count("mentee@example.com") == worker_rt.settings.max_attempts
    # When the server accepts again and the session changes (which re-arms the failed copy)
    del smtp.mailbox.refuse["mentee@example.com"]
    api.upsert_session(session_data(version=2, title="Goals, revised"), rt=worker_rt)
    drain()
    # Then the first invite the mentee ever receives carries SEQUENCE 0: the refusals reached nobody
    (raw,) = smtp.mailbox.to("mentee@example.com")
    _, cal = calendar_part(raw)
    (event,) = cal.events
    assert int(event["SEQUENCE"]) == 0 and str(event["SUMMARY"]) == "Goals, revised"
