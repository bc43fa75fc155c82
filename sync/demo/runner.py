"""The embedded end-to-end run behind ``calsync demo``: no servers, real invites and real events.

A small mentoring program is booked and then changed the way a platform
would change it — a reschedule, an agenda edit, a participant leaving, a
cancellation — all through :mod:`sync.api`, with the in-process worker
draining the queue after each step. Every channel is on show: two people
have connected Google Calendar (the local emulator in
:mod:`sync.testing.emulators.google`, a real HTTP server on 127.0.0.1 that the real
google-api-python-client talks to), one has connected Outlook (the Microsoft
identity platform + Graph emulator in :mod:`sync.testing.emulators.graph`, over
HTTPS, for the real msal and requests), and the others get emailed invites,
written as ``.eml`` files. One of the Google pair loses their access mid-run
and reconnects later.

The summary is read back from what landed — the ``.eml`` files, and each
emulator's calendars through that provider's own reader, found by calsync's
tag — and compared with what the store believes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sync.errors import ConfigError

if TYPE_CHECKING:
    from sync.core.drift import Observed
    from sync.testing.emulators.google import GoogleEmulator
    from sync.testing.emulators.graph import GraphEmulator

#: Sender and ORGANIZER of the demo's invites (a reserved example domain).
DEMO_MAIL_FROM = "sessions@calsync.example"

#: The file that makes a folder the demo's own. Each run deletes its previous database and invites, so it
#: may only do that where this file says an earlier demo created (or adopted an empty) folder.
MARKER = ".calsync-demo"
MARKER_TEXT = ("This folder belongs to `calsync demo`: every run deletes and rewrites calsync.db* and\n"
               "outbox/*.eml here. Delete the folder when you no longer want the demo's output.\n")


class FolderRefused(ConfigError):
    """``--out`` names a folder the demo may not use: not its own, or not writable.

    A :class:`ConfigError`, so the CLI reports it as one line with exit status 2
    (the operator picks another folder); the message names ``--out``.
    """


def claim_folder(out: Path) -> Path:
    """Make ``out`` the demo's own folder and return it resolved, or refuse.

    The demo deletes its earlier database and invites before each run, so it
    must never run in a folder that might hold someone's real ``calsync.db`` or
    ``outbox/`` (``--out .`` in a deployment folder once deleted both). A
    folder is the demo's when it holds :data:`MARKER`; an absent or empty one
    is created or adopted, and marked before anything else is written, so an
    interrupted run still owns its folder. Any other folder is refused.

    Raises:
      FolderRefused: the folder is not empty and not the demo's, is a file, or cannot be created or written.
    """
    out = out.resolve()
    shown = repr(str(out))
    marker = out / MARKER
    if out.exists() and not out.is_dir():
        raise FolderRefused(f"--out {shown} is a file, not a folder; give a new or empty folder")
    if out.is_dir():
        if marker.is_file() and not marker.is_symlink():
            return out
        try:
            empty = next(out.iterdir(), None) is None
        except OSError as exc:
            raise FolderRefused(f"--out {shown} cannot be read ({exc.strerror}); give a new or empty folder") from None
        if not empty:
            raise FolderRefused(f"--out {shown} is not empty and was not created by calsync demo, which deletes "
                                "its database and invites on every run; give a new or empty folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        marker.write_text(MARKER_TEXT)
    except OSError as exc:
        raise FolderRefused(f"--out {shown} cannot be created or written ({exc.strerror or exc}); "
                            "give a folder you can write to") from None
    return out

PEOPLE: dict[str, dict[str, str]] = {
    "ada": {"user_id": "demo-ada", "email": "ada@example.com", "name": "Ada Lovelace", "role": "mentor"},
    "margaret": {"user_id": "demo-margaret", "email": "margaret@example.com", "name": "Margaret Hamilton",
                 "role": "mentor"},
    "alan": {"user_id": "demo-alan", "email": "alan@example.com", "name": "Alan Turing", "role": "mentee",
             "timezone": "Europe/London"},
    "grace": {"user_id": "demo-grace", "email": "grace@example.com", "name": "Grace Hopper", "role": "mentee",
              "timezone": "America/Chicago"},
    "katherine": {"user_id": "demo-katherine", "email": "katherine@example.com", "name": "Katherine Johnson",
                  "role": "mentee"},
}

#: People who connected a calendar, and which one; everyone else gets emailed invites.
CONNECTED: dict[str, str] = {"ada": "google", "alan": "google", "katherine": "outlook"}


@dataclass(frozen=True)
class Calendars:
    """The emulators behind the calendar channels, read back the way each provider answers."""

    google: GoogleEmulator
    outlook: GraphEmulator

    def add_user(self, channel: str, email: str) -> str:
        """A refresh token for ``email``, as if they had just consented to calsync on that provider."""
        emulator: GoogleEmulator | GraphEmulator = self.google if channel == "google" else self.outlook
        return emulator.add_user(email)

    def copies(self, channel: str, owner: str, user_id: str, session_id: str) -> list[Observed]:
        """Live copies of one session on ``owner``'s calendar, found by calsync's tag, in provider-neutral terms."""
        if channel == "google":
            from sync.providers.google import observed
            from sync.providers.google_events import TAG_SESSION, TAG_USER

            tag = {TAG_SESSION: session_id, TAG_USER: user_id}
            items = [e for e in self.google.events(owner)
                     if tag.items() <= e.get("extendedProperties", {}).get("private", {}).items()]
        elif channel == "outlook":
            from sync.providers.outlook import observed
            from sync.providers.outlook_events import TAG_PROPERTY, tag_value

            value = tag_value(session_id, user_id)
            items = [e for e in self.outlook.events(owner)
                     if any(p.get("id") == TAG_PROPERTY and p.get("value") == value
                            for p in e.get("singleValueExtendedProperties", []))]
        else:
            raise ValueError(f"no calendar emulator for the {channel} channel")
        return [copy for copy in map(observed, items) if not copy.cancelled]


@dataclass(frozen=True)
class Invite:
    """One ``.eml`` file in the outbox, reduced to what a calendar matches and orders by."""

    path: Path
    recipient: str
    uid: str
    method: str
    sequence: int
    dtstamp: datetime

    @property
    def order(self) -> tuple[int, datetime, int, str]:
        # SEQUENCE first, then DTSTAMP (RFC 5546 §2.1.5); DTSTAMP has one-second
        # resolution, so the file's write time breaks ties within a second.
        return self.sequence, self.dtstamp, self.path.stat().st_mtime_ns, self.path.name


@dataclass(frozen=True)
class Row:
    """One person's copy of one session through one channel: as the store records it, and as it landed."""

    person: str
    session_id: str
    channel: str
    state: str
    #: What landed, in one line: the invites' METHOD:SEQUENCE history, or the event on the calendar now.
    landed: str
    method: str | None = None
    sequence: int | None = None
    files: int = 0
    history: str = ""
    event_id: str | None = None
    event_start: str | None = None
    event_summary: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    outbox: Path
    database: str
    google_url: str | None = None
    outlook_url: str | None = None
    steps: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    integrations: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def calendars_settings(calendars: Calendars) -> dict[str, str]:
    from sync.store.crypto import new_key
    from sync.testing.settings import google_settings, outlook_settings

    return {
        **google_settings(calendars.google, "calsync-demo", "calsync-demo-secret"),
        **outlook_settings(calendars.outlook, "calsync-demo", "calsync-demo-secret"),
        # A fresh key per run: the demo's tokens are the emulators' and die with them.
        "CALSYNC_SECRET_KEYS": new_key(),
    }


def use_embedded_defaults(out: Path, calendars: Calendars | None = None) -> Path:
    """Point calsync at a SQLite file, a file outbox in ``out`` and (if given) the calendar emulators.

    Whatever the environment says is overridden for these, the database
    above all: the demo's is always ``out/calsync.db``, never the operator's
    ``CALSYNC_DATABASE_URL``. Must run before :mod:`sync.engine.broker` is imported,
    because the broker is chosen and the actors bound to it at import time.
    ``out`` must be the demo's own folder (:func:`claim_folder`); a previous
    demo's database and invites in it are removed so each run starts clean.
    """
    if "sync.engine.broker" in sys.modules:
        from sync.engine.broker import broker, is_embedded

        if not is_embedded(broker):
            raise ConfigError("calsync demo needs a fresh process: a non-embedded broker is already bound")
    from sync.config import get_settings
    from sync.engine.runtime import set_runtime

    out = claim_folder(out)
    outbox = out / "outbox"
    try:
        outbox.mkdir(exist_ok=True)
        for stale in [*out.glob("calsync.db*"), *outbox.glob("*.eml")]:
            stale.unlink()
    except OSError as exc:
        raise FolderRefused(f"--out {str(out)!r}: cannot clear the previous demo's files ({exc.strerror or exc})") \
            from None
    os.environ.update({
        "CALSYNC_DATABASE_URL": f"sqlite:///{out / 'calsync.db'}",
        "CALSYNC_BROKER_URL": "memory://",
        "CALSYNC_SMTP_URL": outbox.as_uri(),
        "CALSYNC_MAIL_FROM": DEMO_MAIL_FROM,
        **(calendars_settings(calendars) if calendars is not None else {}),
    })
    get_settings.cache_clear()
    set_runtime(None)
    return outbox


def _program(monday: date) -> dict[str, dict[str, Any]]:
    """Version 1 of every session: a group kickoff and three one-to-ones, one of them hybrid."""

    def at(day: int, hour: int, zone: str) -> str:
        return datetime.combine(monday + timedelta(days=day), time(hour), ZoneInfo(zone)).isoformat()

    def session(sid: str, title: str, day: int, hour: int, zone: str, who: list[str], **extra: Any) -> dict[str, Any]:
        return {
            "id": sid, "version": 1, "title": title, "program": "Spring Cohort (demo)",
            "start": at(day, hour, zone), "end": at(day, hour + 1, zone), "timezone": zone,
            "status": "scheduled", "meeting_url": f"https://video.example.com/{sid}",
            "agenda_html": "<p>Introductions and what you want from the program</p>",
            "view_url": f"https://platform.example/sessions/{sid}",
            "participants": [PEOPLE[name] for name in who], **extra,
        }

    return {
        "kickoff": session("kickoff", "Kickoff: meet your cohort", 0, 10, "America/New_York",
                           ["ada", "margaret", "alan", "grace", "katherine"]),
        "alan": session("alan-1", "Session 1: Setting goals", 1, 15, "America/New_York", ["ada", "alan"]),
        "grace": session("grace-1", "Session 1: Setting goals", 2, 12, "America/Chicago", ["ada", "grace"],
                         location="Room 4.2, Innovation Hub"),
        "katherine": session("katherine-1", "Session 1: Setting goals", 3, 11, "America/New_York",
                             ["margaret", "katherine"]),
    }


def _next_version(data: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**data, **changes, "version": data["version"] + 1}


def _later(data: dict[str, Any], delta: timedelta) -> dict[str, str]:
    return {k: (datetime.fromisoformat(data[k]) + delta).isoformat() for k in ("start", "end")}


def run(out: Path, say: Callable[[str], None] = lambda _: None) -> Report:
    """Run the whole demo in ``out``; ``say`` hears each step (and what it showed) as it finishes.

    Raises:
      FolderRefused: ``out`` is not the demo's to use (checked before any emulator starts).
    """
    from sync.testing.emulators.google import GoogleEmulator
    from sync.testing.emulators.graph import GraphEmulator

    out = claim_folder(out)
    with GoogleEmulator() as google, GraphEmulator() as outlook:
        return _run(out, Calendars(google=google, outlook=outlook), say)


def _run(out: Path, calendars: Calendars, say: Callable[[str], None]) -> Report:
    outbox = use_embedded_defaults(out, calendars)

    from sync import accounts, api
    from sync.config import get_settings
    from sync.engine import tasks  # tasks declares the actors before the worker starts
    from sync.engine.broker import QUEUE, broker, embedded_worker
    from sync.engine.runtime import get_runtime
    from sync.store.migrate import upgrade

    settings = get_settings()
    upgrade(settings.database_url)
    rt = get_runtime()
    report = Report(outbox=outbox, database=settings.database_url, google_url=calendars.google.url,
                    outlook_url=calendars.outlook.graph_url)
    program = _program(_next_monday())
    alan, grace, kickoff = program["alan"], program["grace"], program["kickoff"]
    alan_p, katherine_p = PEOPLE["alan"], PEOPLE["katherine"]
    statuses: dict[str, list[str]] = {}  # each integration's status as it changed during the run

    def step(description: str, action: Callable[[], object], check: Callable[[], Iterable[str]] | None = None) -> None:
        action()
        # Drain before the next step, so each change reaches the calendars on its own
        # (one worker for the whole run: each dramatiq.Worker leaves a middleware on the broker).
        broker.join(QUEUE, fail_fast=False)  # type: ignore[attr-defined]
        report.steps.append(description)
        say(f"{len(report.steps)}. {description}")
        for row in accounts.list_integrations(rt):
            seen = statuses.setdefault(row.user_id, [])
            if not seen or seen[-1] != row.status:
                seen.append(row.status)
        for line in check() if check else ():
            say(f"   → {line}")

    def upsert(data: dict[str, Any]) -> None:
        result = api.upsert_session(data)
        if not result.ok:
            report.problems.append(f"{data['id']}: intake said {result.outcome}")

    def connect(tokens: dict[str, str]) -> None:
        items = [{"user_id": PEOPLE[n]["user_id"], "provider": CONNECTED[n], "account_email": PEOPLE[n]["email"],
                  "calendar_id": "primary" if CONNECTED[n] == "google" else None, "refresh_token": token}
                 for n, token in tokens.items()]
        for result in accounts.import_integrations(rt, items, tasks.enqueue):
            if not result.ok:
                report.problems.append(f"import of {result.user_id}: {'; '.join(map(str, result.errors))}")

    def integration_of(person: dict[str, str]) -> accounts.IntegrationInfo:
        rows = [r for r in accounts.list_integrations(rt) if r.user_id == person["user_id"]]
        return rows[0] if rows else accounts.IntegrationInfo(person["user_id"], "", None, None, "none", None, "")

    def invites_to(person: dict[str, str], session_id: str) -> str:
        uid = next(p.uid for p in api.get_session(session_id).placements)
        mine = sorted((i for i in read_outbox(outbox) if i.recipient == person["email"] and i.uid == uid),
                      key=lambda i: i.order)
        return " → ".join(f"{i.method}:{i.sequence}" for i in mine) or "none"

    def copies(name: str, session_id: str) -> list[Observed]:
        return calendars.copies(CONNECTED[name], PEOPLE[name]["email"], PEOPLE[name]["user_id"], session_id)

    alan_sessions = (kickoff["id"], alan["id"])

    def token_died() -> list[str]:
        row = integration_of(alan_p)
        mailed = {sid: invites_to(alan_p, sid) for sid in alan_sessions}
        if row.status != "needs_reconnect":
            report.problems.append(f"Alan's integration is {row.status} after his token died, not needs_reconnect")
        for sid, history in mailed.items():
            if not history.split(" → ")[-1].startswith("REQUEST"):
                report.problems.append(f"Alan got no emailed {sid} invite after his token died ({history})")
        stale = copies("alan", "kickoff")
        return [f"Alan's Google integration: {row.status}: {row.reason}",
                f"in the same reconcile both his sessions went out by email instead: {_per_session(mailed)}",
                f"his old Google kickoff stays at {_event_time(stale[0], kickoff['timezone']) if stale else '(none)'}"
                " until he reconnects: a dead token can neither move nor delete it"]

    def left_kickoff() -> list[str]:
        mailed = invites_to(katherine_p, "kickoff")
        left = copies("katherine", "kickoff")
        if left:
            report.problems.append(f"Katherine left the kickoff, yet {len(left)} Outlook event(s) remain")
        if mailed != "none":
            report.problems.append(f"Katherine is on Outlook, yet she was mailed kickoff invites ({mailed})")
        return [f"her Outlook calendar, read back from the Graph emulator: "
                f"{'no kickoff event' if not left else _event_line(left[0], kickoff['timezone'])}"]

    def reconnected(kickoff_start: str) -> list[str]:
        row = integration_of(alan_p)
        mailed = {sid: invites_to(alan_p, sid) for sid in alan_sessions}
        events = copies("alan", "kickoff")
        if row.status != "active":
            report.problems.append(f"Alan's integration is {row.status} after reconnecting, not active")
        for sid, history in mailed.items():
            if not history.split(" → ")[-1].startswith("CANCEL"):
                report.problems.append(f"Alan's emailed {sid} invite was not cancelled on reconnect ({history})")
        if len(events) != 1 or events[0].start != datetime.fromisoformat(kickoff_start):
            report.problems.append(f"Alan's calendar holds {len(events)} kickoff event(s), not one at the new time")
        shown = _event_line(events[0], kickoff["timezone"]) if events else "no event"
        return [f"Alan's Google integration: {row.status}",
                f"his emailed invites were withdrawn: {_per_session(mailed)}",
                f"and the kickoff is back on his Google calendar: {shown}"]

    kickoff_v2 = _next_version(kickoff, **_later(kickoff, timedelta(hours=1)))
    tokens = {name: calendars.add_user(channel, PEOPLE[name]["email"]) for name, channel in CONNECTED.items()}
    with embedded_worker(broker, settings.embedded_worker_threads):
        step("Ada (mentor) and Alan (mentee) connected Google Calendar, Katherine (mentee) Outlook: "
             "their refresh tokens were imported", lambda: connect(tokens))
        step("booked a kickoff for the cohort and three one-to-ones "
             "(calendar events for Ada, Alan and Katherine; invites for the rest)",
             lambda: [upsert(data) for data in program.values()])
        step("rescheduled Alan's session one day later (both Google events move; no email)",
             lambda: upsert(_next_version(alan, **_later(alan, timedelta(days=1)))))
        step("edited the agenda of Grace's session (Ada's event updated; Grace: REQUEST, same SEQUENCE)",
             lambda: upsert(_next_version(grace, agenda_html="<p>Bring your three goals</p><ul><li>A plan</li></ul>")))
        calendars.google.revoke(tokens["alan"])
        say("   (meanwhile Alan removes calsync's access in his Google account: his refresh token is now dead)")
        step("moved the kickoff an hour later", lambda: upsert(kickoff_v2), token_died)
        step("Katherine left the kickoff (her Outlook event deleted; no email to anyone)",
             lambda: upsert(_next_version(kickoff_v2, participants=[
                 p for p in kickoff_v2["participants"] if p is not katherine_p])), left_kickoff)
        step("Alan reconnected Google Calendar (a fresh refresh token was imported)",
             lambda: connect({"alan": calendars.google.issue_refresh_token(alan_p["email"])}),
             lambda: reconnected(kickoff_v2["start"]))
        step("cancelled Grace's session (Ada's event deleted; CANCEL to Grace)",
             lambda: api.cancel_session(grace["id"]))

    _summarise(report, calendars, [data["id"] for data in program.values()])
    report.integrations = [{**{k: getattr(r, k) for k in ("user_id", "provider", "account_email", "status", "reason")},
                            "history": " → ".join(statuses.get(r.user_id, [r.status]))}
                           for r in accounts.list_integrations(rt)]
    return report


def _per_session(histories: dict[str, str]) -> str:
    return ", ".join(f"{sid} {history}" for sid, history in histories.items())


def _next_monday() -> date:
    today = datetime.now(ZoneInfo("America/New_York")).date()
    return today + timedelta(days=7 - today.weekday())


def read_outbox(outbox: Path) -> list[Invite]:
    """Parse every ``.eml`` as a mail client would (:func:`sync.testing.mail.read_outbox`)."""
    from sync.testing.mail import read_outbox as read_mails

    return [Invite(path=m.path or outbox, recipient=m.recipient, uid=m.uid, method=m.method, sequence=m.sequence,
                   dtstamp=m.dtstamp) for m in read_mails(outbox)]


def _event_time(copy: Observed, zone: str) -> str:
    """An event's start as a calendar shows it: local time in the session's zone."""
    start = copy.start.astimezone(ZoneInfo(zone))
    return f"{start:%a %d %b %H:%M} {start.tzname()}"


def _event_line(copy: Observed, zone: str) -> str:
    return f"{_event_time(copy, zone)} “{copy.title}”"


def _summarise(report: Report, calendars: Calendars, session_ids: list[str]) -> None:
    from sync import api

    landed: dict[tuple[str, str], list[Invite]] = {}
    for invite in read_outbox(report.outbox):
        landed.setdefault((invite.recipient, invite.uid), []).append(invite)
    for session_id in session_ids:
        view = api.get_session(session_id)
        session = view.session
        participating = {p.user_id for p in session.participants} if session.status == "scheduled" else set()
        for p in view.placements:
            person = p.recipient_name or p.recipient_email
            where = f"{person} / {session_id} / {p.channel}"
            if p.state not in ("placed", "withdrawn"):
                report.problems.append(f"{where}: placement is {p.state} ({p.last_error})")
            if p.channel == "email":
                invites = sorted(landed.get((p.recipient_email, p.uid), []), key=lambda i: i.order)
                last = invites[-1] if invites else None
                history = " → ".join(f"{i.method}:{i.sequence}" for i in invites)
                report.rows.append(Row(
                    person=person, session_id=session_id, channel=p.channel, state=p.state,
                    landed=history or "nothing", method=last.method if last else None,
                    sequence=last.sequence if last else None, files=len(invites), history=history,
                ))
                if last is None or last.sequence != p.sequence or last.method != ("REQUEST" if p.live else "CANCEL"):
                    report.problems.append(f"{where}: the last invite on disk does not match the placement "
                                           f"({p.state}, SEQUENCE {p.sequence})")
                continue
            # A calendar channel (Google or Outlook): what is on the person's calendar now, read back
            # from that provider's emulator by calsync's tag.
            copies = calendars.copies(p.channel, p.recipient_email, p.user_id, session_id)
            copy = copies[0] if len(copies) == 1 else None
            report.rows.append(Row(
                person=person, session_id=session_id, channel=p.channel, state=p.state,
                landed=_event_line(copy, session.timezone) if copy else (
                    "no event (deleted)" if not copies else f"{len(copies)} events (duplicates!)"),
                event_id=copy.external_id if copy else None,
                event_start=copy.start.isoformat() if copy else None,
                event_summary=copy.title if copy else None,
            ))
            if p.live:
                if copy is None or copy.external_id != p.external_id:
                    report.problems.append(f"{where}: expected one event {p.external_id} on the calendar, "
                                           f"found {[c.external_id for c in copies]}")
                elif copy.start != session.start or copy.title != session.title:
                    report.problems.append(f"{where}: the event on the calendar does not match the session "
                                           f"({copy.start.isoformat()} “{copy.title}”)")
            elif copies:
                report.problems.append(f"{where}: withdrawn, yet {len(copies)} event(s) are still on the calendar")
        # One copy per person, never two: exactly one live placement per participant, none for the rest.
        live: dict[str, int] = {}
        for p in view.placements:
            live[p.user_id] = live.get(p.user_id, 0) + (1 if p.state == "placed" else 0)
        for user_id, count in live.items():
            want = 1 if user_id in participating else 0
            if count != want:
                report.problems.append(f"{user_id} / {session_id}: {count} live copies, expected {want}")
    report.rows.sort(key=lambda r: (r.person, r.session_id, r.channel))
