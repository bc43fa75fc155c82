"""The guarantees every channel keeps, run against each one through its real client and a local far side.

``ChannelContract`` holds what any channel (emailed invites, Google, Outlook) must do: one copy
per person however often a change is delivered, retried or crashed through; an update moves
that copy; a cancel removes it; a failure the far side calls temporary is retried, one it
calls final fails the placement with the reason. ``CalendarChannelContract`` adds what only a
calendar calsync can read back and act in with the person's own grant keeps: a copy the person
deleted is neither an error nor gone for good, a dead grant moves them to an emailed invite in
the same reconcile, and support can read the copy back (inspect) and check the grant (probe).

Each channel is driven by a small adapter: how to build a runtime with it, how to connect the
person, how to make the far side fail, and how to read back what the person's calendar app
shows (the emulated calendar's events; for email, the ``.eml`` outbox folded the way a calendar
app folds invites). A new channel (CalDAV, say) needs an adapter and a two-line test class.

The person under test is the example session's mentee (``u-2``); the mentor stays on email.
"""

from __future__ import annotations

import smtplib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, ClassVar

import pytest

from sync import accounts, api
from sync.email_fallback import EmailChannel
from sync.engine.reconcile import reconcile
from sync.engine.runtime import Runtime
from sync.engine.sweep import sweep
from sync.errors import ChannelError
from sync.mail.transport import FileTransport, _channel_error, parse_smtp_url
from sync.ops.diagnose import diagnose_session, diagnose_user
from sync.providers.channel import CalendarChannel
from sync.providers.google import GoogleChannel
from sync.providers.outlook import OutlookChannel
from sync.quota import MemoryQuota
from sync.store import placements
from sync.store.crypto import CredentialBox, new_key
from sync.store.db import Store
from sync.store.models import Integration
from sync.testing.emulators.google import GoogleEmulator
from sync.testing.emulators.graph import GraphEmulator
from sync.testing.mail import read_outbox
from sync.testing.settings import google_settings, outlook_settings
from tests.support.factories import make_settings, reconcile_due, session_data

PERSON, ADDRESS = "u-2", "mentee@example.com"
LATER = {"start": "2026-12-01T17:00:00-05:00", "end": "2026-12-01T18:00:00-05:00"}
LATER_UTC = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)
MENTOR_ONLY = [{"user_id": "u-1", "email": "mentor@example.com", "name": "Ada Lovelace", "role": "mentor"}]
SMTP_SERVER = parse_smtp_url("smtp://127.0.0.1:2525")


@dataclass(frozen=True)
class Shown:
    """One event as the person's calendar app shows it."""

    id: str
    title: str
    start: datetime
    details: str = field(repr=False)


@dataclass(frozen=True)
class Fault:
    """One way the far side can fail a write; ``error`` is what the placement's last error then names."""

    id: str
    error: str
    retry_after: int | None = None
    kind: str = "fail"  # fail | timeout
    spec: dict[str, Any] = field(default_factory=dict)


# -- email: the file transport, failing as the SMTP transport does ---------------------------


def smtp_error(exc: OSError) -> ChannelError:
    """What :class:`sync.mail.transport.SmtpTransport` raises for this smtplib failure."""
    return _channel_error(exc, SMTP_SERVER, 2.0)


def smtp_timeout() -> smtplib.SMTPServerDisconnected:
    """How smtplib reports a server that stopped answering: a disconnect raised while handling TimeoutError."""
    exc = smtplib.SMTPServerDisconnected("Connection unexpectedly closed: timed out")
    exc.__context__ = TimeoutError("timed out")
    return exc


class FlakyTransport:
    """Writes ``.eml`` files like ``file://``; told to, fails a recipient's next sends the way SMTP does.

    A fault with ``delivered=True`` is an answer lost after the server took the message.
    """

    def __init__(self, folder: Path) -> None:
        self.inner = FileTransport(folder)
        self.faults: dict[str, list[tuple[ChannelError, bool]]] = {}

    def fail(self, recipient: str, error: ChannelError, n: int = 1, *, delivered: bool = False) -> None:
        self.faults.setdefault(recipient, []).extend([(error, delivered)] * n)

    def send(self, message: EmailMessage, *, sender: str, recipient: str) -> None:
        pending = self.faults.get(recipient)
        if pending:
            error, delivered = pending.pop(0)
            if delivered:
                self.inner.send(message, sender=sender, recipient=recipient)
            raise error
        self.inner.send(message, sender=sender, recipient=recipient)

    def close(self) -> None:
        pass


class Outbox:
    """The mail calsync sent, read as each recipient's calendar app reads it (RFC 5546 ordering)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.transport = FlakyTransport(folder)

    def to(self, address: str = ADDRESS) -> list[Any]:
        """Every invite mailed to ``address``, in sending order."""
        invites = read_outbox(self.folder) if self.folder.exists() else []
        return [i for i in invites if i.recipient == address]

    def showing(self, address: str = ADDRESS) -> list[Shown]:
        latest: dict[str, Any] = {}
        for invite in self.to(address):
            old = latest.get(invite.uid)
            if old is None or (invite.sequence, invite.dtstamp) >= (old.sequence, old.dtstamp):
                latest[invite.uid] = invite
        return [Shown(i.uid, str(i.event["SUMMARY"]), i.event.decoded("DTSTART").astimezone(UTC),
                      str(i.event.get("DESCRIPTION", ""))) for i in latest.values() if i.method == "REQUEST"]


# -- adapters --------------------------------------------------------------------------------


class Adapter:
    """How the contract drives one channel; subclasses fill in the far side."""

    name: ClassVar[str]
    #: A first placement and an update, as :meth:`calls` lists them.
    CREATE_CALL: ClassVar[str]
    UPDATE_CALL: ClassVar[str]
    transient_faults: ClassVar[tuple[Fault, ...]]
    rejection: ClassVar[Fault]

    def __init__(self, tmp_path: Path) -> None:
        self.outbox = Outbox(tmp_path / "outbox")
        self.secret_keys = new_key()

    def settings(self) -> dict[str, Any]:
        return {}

    def channels(self, settings: Any, store: Store) -> dict[str, Any]:
        return {"email": EmailChannel(store, self.outbox.transport, settings.mail_from)}

    def runtime(self, db_url: str, **overrides: Any) -> Runtime:
        settings = make_settings(db_url, secret_keys=self.secret_keys, io_timeout_seconds=2.0,
                                 **{**self.settings(), **overrides})
        return Runtime(settings, Store(db_url), channels=self.channels)

    def connect(self, rt: Runtime) -> None:
        """Give the person this channel."""

    def shown(self) -> list[Shown]:
        raise NotImplementedError

    def calls(self) -> list[str]:
        raise NotImplementedError

    def forget_calls(self) -> None:
        raise NotImplementedError

    def arm(self, fault: Fault, op: str = "create") -> None:
        raise NotImplementedError

    def lose_answer(self, op: str = "create") -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class EmailAdapter(Adapter):
    name = "email"
    CREATE_CALL = UPDATE_CALL = "REQUEST"
    transient_faults = (
        Fault("451-greylisted", "451", spec={"exc": smtplib.SMTPRecipientsRefused(
            {ADDRESS: (451, b"4.7.1 greylisted, try again later")})}),
        Fault("421-closing", "421", spec={"exc": smtplib.SMTPResponseException(
            421, b"4.3.2 service shutting down")}),
        Fault("timeout", "did not answer", spec={"exc": smtp_timeout()}),
    )
    rejection = Fault("535-auth", "535", spec={"exc": smtplib.SMTPAuthenticationError(
        535, b"5.7.8 authentication credentials invalid")})

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self._seen = 0

    def shown(self) -> list[Shown]:
        return self.outbox.showing()

    def calls(self) -> list[str]:
        return [i.method for i in self.outbox.to()[self._seen:]]

    def forget_calls(self) -> None:
        self._seen = len(self.outbox.to())

    def arm(self, fault: Fault, op: str = "create") -> None:
        self.outbox.transport.fail(ADDRESS, smtp_error(fault.spec["exc"]))

    def lose_answer(self, op: str = "create") -> None:
        error = smtp_error(smtplib.SMTPServerDisconnected("Connection unexpectedly closed"))
        self.outbox.transport.fail(ADDRESS, error, delivered=True)


class CalendarAdapter(Adapter):
    """A provider calendar behind an emulator; the person's invites fall back to the same outbox."""

    emu: Any
    #: The HTTP method of each write, and where its requests go.
    METHODS: ClassVar[dict[str, str]]
    #: Setting holding the OAuth client secret.
    CLIENT_SECRET: ClassVar[str]
    #: How a grant dies, and what the integration's reason then says.
    grant_deaths: ClassVar[tuple[tuple[str, str], ...]]
    #: A 401 answered to every try, and how many tries that takes.
    auth_failure: ClassVar[tuple[str, int]]
    #: What the integration's reason says once the calendar cannot be written.
    unusable_reason: ClassVar[str]
    #: The placement's state right after a change hits an event the person deleted.
    after_person_deleted: ClassVar[str]

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.emu.add_client("calsync-test", "s3cret")
        self.token = ""

    def provider_settings(self) -> dict[str, str]:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        env = self.provider_settings()
        return {key.removeprefix("CALSYNC_").lower(): value for key, value in env.items()}

    def connect(self, rt: Runtime) -> None:
        self.token = self.emu.add_user(ADDRESS)
        self.import_token(rt, self.token)

    def reconnect(self, rt: Runtime) -> None:
        self.token = self.emu.issue_refresh_token(ADDRESS)
        self.import_token(rt, self.token)

    def import_token(self, rt: Runtime, token: str) -> None:
        [result] = accounts.import_integrations(rt, [{"user_id": PERSON, "provider": self.name,
                                                      "account_email": ADDRESS, "refresh_token": token}],
                                                enqueue=lambda sid: None)
        assert result.ok, result

    def calls(self) -> list[str]:
        return [f"{r.method} {r.status}" for r in self.emu.requests(kind="api")]

    def forget_calls(self) -> None:
        self.emu.clear_log()

    def where(self, op: str) -> dict[str, str]:
        return {"method": self.METHODS[op]}

    def arm(self, fault: Fault, op: str = "create") -> None:
        if fault.kind == "timeout":
            self.emu.timeout_next(1, seconds=4, applied=False, **self.where(op))
        else:
            self.emu.fail_next(1, **fault.spec, **self.where(op))

    def lose_answer(self, op: str = "create") -> None:
        self.emu.lose_next_response(1, **self.where(op))

    def fail_auth(self, times: int) -> None:
        self.emu.fail_next(times, 401, self.auth_failure[0], **self.where("create"))

    def kill_grant(self, how: str) -> None:
        raise NotImplementedError

    def person_deletes(self, event_id: str) -> None:
        raise NotImplementedError

    def make_calendar_unusable(self) -> None:
        raise NotImplementedError

    def rotate_client_secret(self, secret: str) -> None:
        self.emu.clients["calsync-test"]["secret"] = secret
        self.emu.expire_access_tokens(ADDRESS)

    def close(self) -> None:
        assert self.emu.internal_errors == [], self.emu.internal_errors[0]
        self.emu.stop()


class GoogleAdapter(CalendarAdapter):
    name = "google"
    CREATE_CALL, UPDATE_CALL = "POST 200", "PUT 200"
    METHODS = {"create": "POST", "update": "PUT", "delete": "DELETE"}
    CLIENT_SECRET = "google_client_secret"
    transient_faults = (
        Fault("403-rateLimitExceeded", "403", spec={"status": 403, "reason": "rateLimitExceeded"}),
        Fault("403-userRateLimitExceeded", "403", spec={"status": 403, "reason": "userRateLimitExceeded"}),
        Fault("429-with-retry-after", "429", 7, spec={"status": 429, "reason": "rateLimitExceeded",
                                                      "retry_after": "7"}),
        Fault("429-without-retry-after", "429", spec={"status": 429, "reason": "rateLimitExceeded"}),
        Fault("500", "500", spec={"status": 500, "reason": "backendError"}),
        Fault("503", "503", spec={"status": 503, "reason": "backendError"}),
        Fault("not-json", "not an event", spec={"status": 200, "body": "<html>proxy error</html>",
                                            "content_type": "text/html"}),
        Fault("timeout", "unreachable", kind="timeout"),
    )
    rejection = Fault("400", "400", spec={"status": 400, "reason": "invalid"})
    grant_deaths = (("revoke", "invalid_grant"),)
    auth_failure = ("authError", 3)  # google-auth refreshes once and retries, twice over
    unusable_reason = "not found"
    after_person_deleted = "placed"  # Google will not revive the id; a fresh one is inserted at once

    def __init__(self, tmp_path: Path) -> None:
        self.emu = GoogleEmulator().start()
        super().__init__(tmp_path)

    def provider_settings(self) -> dict[str, str]:
        return google_settings(self.emu, "calsync-test", "s3cret")

    def channels(self, settings: Any, store: Store) -> dict[str, Any]:
        box = CredentialBox([k.get_secret_value() for k in settings.secret_keys])
        return {**super().channels(settings, store), "google": GoogleChannel(settings, store, box, MemoryQuota())}

    def where(self, op: str) -> dict[str, str]:
        return {"method": self.METHODS[op], "path_contains": "/events"}

    def shown(self) -> list[Shown]:
        return [Shown(e["id"], e["summary"], datetime.fromisoformat(e["start"]["dateTime"]).astimezone(UTC),
                      e.get("description", "")) for e in self.emu.events(ADDRESS)]

    def kill_grant(self, how: str) -> None:
        assert how == "revoke"
        self.emu.revoke(self.token)

    def person_deletes(self, event_id: str) -> None:
        self.emu.cancel_event(ADDRESS, event_id)  # Google keeps it as cancelled: a delete then answers 410

    def make_calendar_unusable(self) -> None:
        self.emu.remove_calendar(ADDRESS, "primary")


class OutlookAdapter(CalendarAdapter):
    name = "outlook"
    CREATE_CALL, UPDATE_CALL = "POST 201", "PATCH 200"
    METHODS = {"create": "POST", "update": "PATCH", "delete": "DELETE"}
    CLIENT_SECRET = "ms_client_secret"
    transient_faults = (
        Fault("429-with-retry-after", "429", 3, spec={"status": 429, "reason": "TooManyRequests",
                                                      "retry_after": "3"}),
        Fault("429-without-retry-after", "429", spec={"status": 429, "reason": "TooManyRequests"}),
        Fault("500", "500", spec={"status": 500, "reason": "InternalServerError"}),
        Fault("503-with-retry-after", "503", 2, spec={"status": 503, "reason": "ServiceUnavailable",
                                                      "retry_after": "2"}),
        Fault("504", "504", spec={"status": 504, "reason": "GatewayTimeout"}),
        Fault("not-json", "not JSON", spec={"status": 201, "body": "<html>gateway</html>",
                                            "content_type": "text/html"}),
        Fault("timeout", "unreachable", kind="timeout"),
    )
    rejection = Fault("400", "400", spec={"status": 400, "reason": "ErrorInvalidRequest"})
    grant_deaths = (("revoke", "invalid_grant"), ("expire_refresh", "invalid_grant"),
                    ("require_interaction", "interaction_required"), ("remove_consent", "invalid_grant"))
    auth_failure = ("InvalidAuthenticationToken", 2)  # calsync forces one refresh, then gives up
    unusable_reason = "MailboxNotEnabledForRESTAPI"
    after_person_deleted = "drift"  # a 404 on update is the person's doing; a resync re-creates it

    def __init__(self, tmp_path: Path) -> None:
        self.emu = GraphEmulator().start()
        super().__init__(tmp_path)

    def provider_settings(self) -> dict[str, str]:
        return outlook_settings(self.emu, "calsync-test", "s3cret")

    def channels(self, settings: Any, store: Store) -> dict[str, Any]:
        box = CredentialBox([k.get_secret_value() for k in settings.secret_keys])
        return {**super().channels(settings, store), "outlook": OutlookChannel(settings, store, box, MemoryQuota())}

    def shown(self) -> list[Shown]:
        return [Shown(e["id"], e["subject"], datetime.fromisoformat(e["start"]["dateTime"][:19]).replace(tzinfo=UTC),
                      (e.get("body") or {}).get("content", "")) for e in self.emu.events(ADDRESS)]

    def kill_grant(self, how: str) -> None:
        getattr(self.emu, how)(ADDRESS)
        self.emu.expire_access_tokens(ADDRESS)

    def person_deletes(self, event_id: str) -> None:
        self.emu.delete_event(ADDRESS, event_id)

    def make_calendar_unusable(self) -> None:
        self.emu.set_licensed(ADDRESS, False)


# -- parametrisation: per-channel data, taken from the class's adapter -----------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    adapter = getattr(metafunc.cls, "adapter", None)
    if adapter is None:
        return
    if "fault" in metafunc.fixturenames:
        metafunc.parametrize("fault", adapter.transient_faults, ids=[f.id for f in adapter.transient_faults])
    if "grant_death" in metafunc.fixturenames:
        metafunc.parametrize("grant_death", adapter.grant_deaths, ids=[d for d, _ in adapter.grant_deaths])


# -- helpers ---------------------------------------------------------------------------------


def book(rt: Runtime, **overrides: Any) -> None:
    assert api.upsert_session(session_data(**overrides), rt=rt, enqueue=False).ok


def placement(rt: Runtime, channel: str, session_id: str = "sess-42") -> Any:
    return {p.channel: p for p in api.get_session(session_id, rt=rt).placements if p.user_id == PERSON}[channel]


def integration(rt: Runtime) -> Any:
    return {r.user_id: r for r in accounts.list_integrations(rt)}[PERSON]


def booked_and_placed(rt: Runtime, a: Adapter) -> Shown:
    a.connect(rt)
    book(rt)
    reconcile_due(rt, "sess-42")
    [shown] = a.shown()
    return shown


# -- the contract ----------------------------------------------------------------------------


class ChannelContract:
    """What every channel guarantees; a subclass names its adapter."""

    adapter: ClassVar[type[Adapter]]

    @pytest.fixture
    def a(self, tmp_path: Path) -> Iterator[Adapter]:
        adapter = self.adapter(tmp_path)
        try:
            yield adapter
        finally:
            adapter.close()

    @pytest.fixture
    def rt(self, a: Adapter, sqlite_url: str) -> Runtime:
        return a.runtime(sqlite_url)

    # -- placing, updating, withdrawing --------------------------------------------------------

    def test_a_booked_session_shows_once_with_its_title_time_link_and_agenda(self, a, rt):
        shown = booked_and_placed(rt, a)
        assert shown.title == "Session 2: Setting goals"
        assert shown.start == datetime(2026, 12, 1, 20, 0, tzinfo=UTC)
        assert "zoom.us/j/123456789" in shown.details and "mentorship agreement" in shown.details
        assert placement(rt, a.name).external_id == shown.id

    def test_a_first_placement_is_one_write(self, a, rt):
        a.connect(rt)
        book(rt)
        a.forget_calls()
        reconcile_due(rt, "sess-42")
        assert a.calls() == [a.CREATE_CALL]

    def test_a_rescheduled_session_moves_the_same_event_and_shows_the_new_agenda(self, a, rt):
        first = booked_and_placed(rt, a)
        book(rt, version=2, **LATER)
        reconcile_due(rt, "sess-42")
        book(rt, version=3, **LATER, agenda_html="<p>Bring your goals</p>")
        reconcile_due(rt, "sess-42")
        [shown] = a.shown()
        assert (shown.id, shown.start) == (first.id, LATER_UTC)
        assert "Bring your goals" in shown.details

    def test_each_change_is_exactly_one_write(self, a, rt):
        booked_and_placed(rt, a)
        a.forget_calls()
        book(rt, version=2, title="Renamed")
        reconcile_due(rt, "sess-42")
        assert a.calls() == [a.UPDATE_CALL]
        assert [s.title for s in a.shown()] == ["Renamed"]

    def test_an_unchanged_resync_and_a_duplicated_message_touch_nothing(self, a, rt):
        booked_and_placed(rt, a)
        a.forget_calls()
        reconcile_due(rt, "sess-42")
        reconcile_due(rt, "sess-42")
        assert a.calls() == []
        assert len(a.shown()) == 1

    def test_a_cancelled_session_disappears_from_the_calendar(self, a, rt):
        booked_and_placed(rt, a)
        api.cancel_session("sess-42", rt=rt, enqueue=False)
        reconcile_due(rt, "sess-42")
        assert a.shown() == []
        assert placement(rt, a.name).state == "withdrawn"

    def test_a_session_cancelled_then_scheduled_again_is_back_once(self, a, rt):
        booked_and_placed(rt, a)
        book(rt, version=2, status="cancelled")
        reconcile_due(rt, "sess-42")
        assert a.shown() == []
        book(rt, version=3, title="Back on")
        reconcile_due(rt, "sess-42")
        assert [s.title for s in a.shown()] == ["Back on"]

    def test_a_participant_removed_and_added_back_sees_the_session_once(self, a, rt):
        booked_and_placed(rt, a)
        book(rt, version=2, participants=MENTOR_ONLY)
        reconcile_due(rt, "sess-42")
        assert a.shown() == []
        book(rt, version=3)
        reconcile_due(rt, "sess-42")
        assert len(a.shown()) == 1
        assert placement(rt, a.name).state == "placed"

    # -- lost answers, crashes ----------------------------------------------------------------

    def test_a_lost_answer_to_the_first_write_still_shows_one_event(self, a, rt):
        # Given the far side applies the write but its answer never arrives
        a.connect(rt)
        book(rt)
        a.lose_answer("create")
        assert reconcile_due(rt, "sess-42").retry_in_ms is not None
        # When the worker retries
        reconcile_due(rt, "sess-42")
        # Then the person sees one event, the one calsync recorded
        [shown] = a.shown()
        assert placement(rt, a.name).external_id == shown.id

    def test_a_crash_between_the_write_and_the_database_still_shows_one_event(self, a, rt, monkeypatch):
        # Given the worker dies right after the far side took the write
        a.connect(rt)
        book(rt)
        real = placements.record_success

        def crash(*args: Any, **kwargs: Any) -> None:
            raise KeyboardInterrupt("worker killed")

        monkeypatch.setattr(placements, "record_success", crash)
        with pytest.raises(KeyboardInterrupt):
            reconcile_due(rt, "sess-42")
        monkeypatch.setattr(placements, "record_success", real)
        # When the message is redelivered
        reconcile_due(rt, "sess-42")
        # Then there is still one event
        assert len(a.shown()) == 1

    # -- failures -----------------------------------------------------------------------------

    def test_a_throttled_or_failed_write_is_retried_and_shows_once(self, a, rt, fault):
        a.connect(rt)
        book(rt)
        a.arm(fault, "create")
        report = reconcile_due(rt, "sess-42")
        # Then the worker is asked to come back (no sooner than Retry-After when given)
        assert report.retry_in_ms is not None
        if fault.retry_after:
            assert report.retry_in_ms >= fault.retry_after * 1000
        held = placement(rt, a.name)
        assert held.state == "retrying" and fault.error in held.last_error
        # And the retry lands one event
        reconcile_due(rt, "sess-42")
        assert len(a.shown()) == 1

    def test_a_failed_update_and_a_failed_cancel_are_retried_too(self, a, rt):
        booked_and_placed(rt, a)
        throttle = a.transient_faults[0]
        book(rt, version=2, title="Renamed")
        a.arm(throttle, "update")
        assert reconcile_due(rt, "sess-42").retry_in_ms is not None
        reconcile_due(rt, "sess-42")
        assert [s.title for s in a.shown()] == ["Renamed"]
        api.cancel_session("sess-42", rt=rt, enqueue=False)
        a.arm(throttle, "delete")
        assert reconcile_due(rt, "sess-42").retry_in_ms is not None
        reconcile_due(rt, "sess-42")
        assert a.shown() == []

    def test_a_rejected_write_fails_the_placement_naming_the_reason_without_retrying(self, a, rt):
        a.connect(rt)
        book(rt)
        a.arm(a.rejection, "create")
        assert reconcile_due(rt, "sess-42").retry_in_ms is None
        failed = placement(rt, a.name)
        assert failed.state == "failed" and a.rejection.error in failed.last_error
        assert a.shown() == []


class CalendarChannelContract(ChannelContract):
    """What a calendar channel adds: the person's own grant, and a calendar calsync can read back."""

    adapter: ClassVar[type[CalendarAdapter]]

    def test_the_channel_can_be_read_back_and_probed(self, a, rt):
        assert isinstance(rt.channel(a.name), CalendarChannel)
        shown = booked_and_placed(rt, a)
        # inspect: support sees the copy the person sees, with nothing to repair
        [check] = [c for c in diagnose_session(rt, "sess-42") if c.user_id == PERSON and c.channel == a.name]
        assert [(c.external_id, c.title, c.cancelled) for c in check.copies] == [(shown.id, shown.title, False)]
        assert check.differences == []
        # probe: one live call with the person's grant says it works
        live = diagnose_user(rt, PERSON).live_check
        assert live is not None and live["ok"] and "token ok" in live["detail"]
        # and a person whose calendar holds the session is not mailed an invite too
        assert a.outbox.to() == []

    def test_a_probe_of_a_dead_grant_moves_the_person_to_email(self, a, rt):
        booked_and_placed(rt, a)
        a.kill_grant(a.grant_deaths[0][0])
        live = diagnose_user(rt, PERSON).live_check
        assert live is not None and live["token_dead"]
        assert integration(rt).status == "needs_reconnect"

    def test_an_event_the_person_deleted_is_removed_quietly_when_the_session_is_cancelled(self, a, rt):
        shown = booked_and_placed(rt, a)
        a.person_deletes(shown.id)
        api.cancel_session("sess-42", rt=rt, enqueue=False)
        report = reconcile_due(rt, "sess-42")
        assert report.retry_in_ms is None and not report.errors
        assert placement(rt, a.name).state == "withdrawn"
        assert a.shown() == []

    def test_an_event_the_person_deleted_is_back_with_the_change_after_a_resync(self, a, rt):
        shown = booked_and_placed(rt, a)
        a.person_deletes(shown.id)
        # When the session changes, the update finds the event gone
        book(rt, version=2, title="Renamed")
        reconcile_due(rt, "sess-42")
        assert placement(rt, a.name).state == a.after_person_deleted
        # Then after a resync the calendar shows it again, once, as a new event
        reconcile_due(rt, "sess-42", retry_failed=True)
        [again] = a.shown()
        assert again.title == "Renamed" and again.id != shown.id
        assert placement(rt, a.name).external_id == again.id

    def test_a_dead_grant_moves_the_session_to_an_emailed_invite_and_reconnecting_moves_it_back(
            self, a, rt, grant_death):
        how, reason = grant_death
        booked_and_placed(rt, a)
        # Given the grant dies (revoked, expired, MFA required, consent withdrawn)
        a.kill_grant(how)
        book(rt, version=2, title="Renamed")
        reconcile_due(rt, "sess-42")
        # Then the integration needs a reconnect, saying why, and the person's mail shows the session
        assert integration(rt).status == "needs_reconnect" and reason in integration(rt).reason
        assert [s.title for s in a.outbox.showing()] == ["Renamed"]
        # When they reconnect
        a.reconnect(rt)
        reconcile_due(rt, "sess-42")
        # Then the emailed invite is cancelled and their one calendar event is current
        assert a.outbox.showing() == [] and a.outbox.to()[-1].method == "CANCEL"
        assert [s.title for s in a.shown()] == ["Renamed"]

    def test_a_401_that_survives_a_token_refresh_moves_the_session_to_an_emailed_invite(self, a, rt):
        a.connect(rt)
        book(rt)
        code, tries = a.auth_failure
        a.fail_auth(tries)
        reconcile_due(rt, "sess-42")
        assert integration(rt).status == "needs_reconnect" and "401" in integration(rt).reason
        assert len(a.outbox.showing()) == 1 and a.shown() == []

    def test_one_401_is_cured_by_a_token_refresh_and_the_event_shows(self, a, rt):
        a.connect(rt)
        book(rt)
        a.fail_auth(1)
        reconcile_due(rt, "sess-42")
        assert len(a.shown()) == 1 and a.outbox.showing() == []
        assert integration(rt).status == "active"

    def test_a_calendar_that_cannot_be_written_moves_the_session_to_an_emailed_invite(self, a, rt):
        a.connect(rt)
        a.make_calendar_unusable()
        book(rt)
        reconcile_due(rt, "sess-42")
        assert integration(rt).status == "needs_reconnect" and a.unusable_reason in integration(rt).reason
        assert len(a.outbox.showing()) == 1

    def test_rate_limiting_longer_than_the_attempt_budget_still_shows_the_event(self, a, rt):
        # Given the far side rate-limits more times in a row than a placement has attempts
        a.connect(rt)
        book(rt)
        throttle = a.transient_faults[0]
        for _ in range(rt.settings.max_attempts + 2):
            a.arm(throttle, "create")
        # When the worker keeps coming back as told
        for _ in range(rt.settings.max_attempts + 3):
            if reconcile_due(rt, "sess-42").retry_in_ms is None:
                break
        # Then the event was placed in the end: slowing down is not failing
        assert len(a.shown()) == 1
        assert (placement(rt, a.name).state, placement(rt, a.name).attempts) == ("placed", 0)

    # -- calsync's own faults are not the person's ----------------------------------------------

    def test_undecryptable_credentials_hold_the_event_until_the_key_is_back(self, a, rt):
        # Given the person's credentials were sealed under a key later dropped from CALSYNC_SECRET_KEYS
        a.connect(rt)
        with rt.store.tx() as db:
            row = db.query(Integration).one()
            readable = row.credentials
            row.credentials = CredentialBox([new_key()]).seal({"refresh_token": "x", "token_cache": "{}"})
        book(rt)
        report = reconcile_due(rt, "sess-42")
        # Then they are neither asked to reconnect nor emailed; the copy is held with the cause
        assert integration(rt).status == "active" and a.outbox.to() == []
        held = placement(rt, a.name)
        assert held.state == "held" and "CALSYNC_SECRET_KEYS" in held.last_error
        assert report.retry_in_ms is not None
        # When the operator puts the key back, the event lands by itself, and still nobody was emailed
        with rt.store.tx() as db:
            db.query(Integration).one().credentials = readable
        reconcile_due(rt, "sess-42")
        assert len(a.shown()) == 1 and placement(rt, a.name).state == "placed"
        assert a.outbox.to() == []

    def test_a_rejected_oauth_client_secret_holds_the_event_until_the_fix_is_deployed(self, a, rt, sqlite_url):
        # Given the person connected while the app's secret was right, and it is then rotated at the provider
        a.connect(rt)
        book(rt)
        a.rotate_client_secret("rotated")
        reconcile_due(rt, "sess-42")
        # Then nobody is marked for a reconnect nor emailed, and the copy is held naming the setting
        assert integration(rt).status == "active" and a.outbox.to() == []
        held = placement(rt, a.name)
        assert held.state == "held" and f"CALSYNC_{a.CLIENT_SECRET.upper()}" in held.last_error
        # When the new secret is deployed (a new process, same store), the event lands without a new consent
        fixed = a.runtime(sqlite_url, **{a.CLIENT_SECRET: "rotated"})
        reconcile_due(fixed, "sess-42")
        assert len(a.shown()) == 1 and placement(fixed, a.name).state == "placed"

    # -- leaving, rerouting, arriving ---------------------------------------------------------

    def test_disconnecting_removes_the_event_and_emails_an_invite_instead(self, a, rt):
        booked_and_placed(rt, a)
        accounts.disconnect(rt, PERSON, reconcile_now=lambda sid: reconcile_due(rt, sid))
        assert a.shown() == [] and len(a.outbox.showing()) == 1
        assert integration(rt).status == "disconnected"

    def test_a_disconnect_keeps_the_grant_until_a_failed_delete_is_retried(self, a, rt):
        # Given the person's event is placed, and the provider's next delete fails with a 5xx
        booked_and_placed(rt, a)
        server_error = next(f for f in a.transient_faults if f.id.startswith("5"))
        a.arm(server_error, "delete")
        # When support disconnects them
        result = accounts.disconnect(rt, PERSON, reconcile_now=lambda sid: reconcile(rt, sid))
        # Then the integration is still disconnecting, with credentials, and the event still shows
        assert (result.status, result.remaining) == ("disconnecting", 1)
        assert integration(rt).status == "disconnecting" and len(a.shown()) == 1
        # When the retry comes due and the sweeper runs
        reconcile_due(rt, "sess-42")
        sweep(rt, lambda sid: None)
        # Then the event is gone, the grant dropped, and the person's mail shows the session once
        assert a.shown() == [] and integration(rt).status == "disconnected"
        assert [i.method for i in a.outbox.to()] == ["REQUEST"]

    def test_a_dead_grant_moves_the_persons_other_sessions_to_email_at_once(self, a, rt):
        from dramatiq import Message

        from sync.engine.runtime import set_runtime
        from sync.engine.tasks import broker, sync_session

        # Given the person is in two sessions on the calendar
        a.connect(rt)
        book(rt)
        book(rt, id="sess-43")
        reconcile_due(rt, "sess-42")
        reconcile_due(rt, "sess-43")
        broker.flush_all()
        # When their grant dies while the worker handles a change to one session
        a.kill_grant(a.grant_deaths[0][0])
        book(rt, version=2, title="Renamed")
        set_runtime(rt)
        try:
            sync_session("sess-42")
        finally:
            set_runtime(None)
        # Then the other session is queued at once, so it too moves to email
        queued = [Message.decode(raw).args[0] for raw in list(broker.queues["calsync"].queue)]
        broker.flush_all()
        assert "sess-43" in queued
        assert placement(rt, a.name).state == "stranded" and placement(rt, "email").state == "placed"

    def test_rerouting_after_a_dead_grant_survives_lost_messages(self, a, rt):
        # Given the person is in two sessions on the calendar
        a.connect(rt)
        book(rt)
        book(rt, id="sess-43")
        reconcile_due(rt, "sess-42")
        reconcile_due(rt, "sess-43")
        # When their grant dies while one session changes, and every queued message is then lost
        a.kill_grant(a.grant_deaths[0][0])
        book(rt, version=2, title="Renamed")
        reconcile(rt, "sess-42")
        queued: list[str] = []
        sweep(rt, queued.append)
        # Then the sweeper still knows the other session must move to email
        assert queued == ["sess-43"]
        reconcile(rt, "sess-43")
        assert sorted(s.title for s in a.outbox.showing()) == ["Renamed", "Session 2: Setting goals"]
        # When they reconnect, and that message is lost too
        a.reconnect(rt)
        queued.clear()
        sweep(rt, queued.append)
        # Then both sessions are swept: the emailed invites are withdrawn and both events are current
        assert sorted(queued) == ["sess-42", "sess-43"]
        for sid in queued:
            reconcile(rt, sid)
        assert a.outbox.showing() == []
        assert sorted(s.title for s in a.shown()) == ["Renamed", "Session 2: Setting goals"]

    def test_connecting_a_calendar_after_a_failed_invite_leaves_one_copy(self, a, rt):
        # Given every attempt to mail the person timed out (the last one may have reached them)
        book(rt)
        a.outbox.transport.fail(ADDRESS, smtp_error(smtp_timeout()), rt.settings.max_attempts)
        for _ in range(rt.settings.max_attempts):
            reconcile_due(rt, "sess-42")
        assert placement(rt, "email").state == "failed"
        # When the person connects their calendar (its message lost: only the store knows)
        a.connect(rt)
        queued: list[str] = []
        sweep(rt, queued.append)
        assert queued == ["sess-42"]
        reconcile(rt, "sess-42")
        # Then the emailed copy is withdrawn and the event placed: one copy, on the calendar
        emailed = placement(rt, "email")
        assert (emailed.state, emailed.live) == ("withdrawn", False)
        # (each timed-out attempt may have reached them, so the CANCEL carries a SEQUENCE above them all)
        assert [(i.method, i.sequence) for i in a.outbox.to()] == [("CANCEL", rt.settings.max_attempts)]
        assert len(a.shown()) == 1

    def test_two_workers_racing_show_one_event(self, a, rt, sqlite_url):
        a.connect(rt)
        book(rt)
        a.forget_calls()
        twin = Runtime(rt.settings, Store(sqlite_url), channels=rt._make_channels)
        a.emu.latency = 0.3
        threads = [threading.Thread(target=reconcile, args=(r, "sess-42")) for r in (rt, twin)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        a.emu.latency = 0
        reconcile_due(rt, "sess-42")
        assert len(a.shown()) == 1
        # (one of them created it; the other did not even try, so nothing collided)
        assert [c for c in a.calls() if c.split()[0] != "GET"] == [a.CREATE_CALL]


class TestEmailChannel(ChannelContract):
    adapter = EmailAdapter


class TestGoogleChannel(CalendarChannelContract):
    adapter = GoogleAdapter


class TestOutlookChannel(CalendarChannelContract):
    adapter = OutlookAdapter
