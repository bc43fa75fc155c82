"""The embedded end-to-end run behind ``calsync demo``: no servers, real invites on disk.

A small mentoring program is booked and then changed the way a platform
would change it — a reschedule, an agenda edit, a participant leaving, a
cancellation — all through :mod:`sync.api`, with the in-process worker
draining the queue after each step. The summary is read back from the
``.eml`` files, so it shows what actually landed, not what the store believes.

Channels other than email join the demo by giving some people a connected
calendar (against the local emulators) and a reader for what landed there.
"""

from __future__ import annotations

import email
import email.policy
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta
from email.utils import getaddresses
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sync.errors import ConfigError

#: Sender and ORGANIZER of the demo's invites (a reserved example domain).
DEMO_MAIL_FROM = "sessions@calsync.example"

PEOPLE: dict[str, dict[str, str]] = {
    "ada": {"user_id": "demo-ada", "email": "ada@example.com", "name": "Ada Lovelace", "role": "mentor"},
    "alan": {"user_id": "demo-alan", "email": "alan@example.com", "name": "Alan Turing", "role": "mentee",
             "timezone": "Europe/London"},
    "grace": {"user_id": "demo-grace", "email": "grace@example.com", "name": "Grace Hopper", "role": "mentee",
              "timezone": "America/Chicago"},
    "katherine": {"user_id": "demo-katherine", "email": "katherine@example.com", "name": "Katherine Johnson",
                  "role": "mentee"},
}


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
    """One person's copy of one session, as the store records it and as it landed."""

    person: str
    session_id: str
    channel: str
    state: str
    method: str | None
    sequence: int | None
    files: int
    history: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    outbox: Path
    database: str
    steps: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def use_embedded_defaults(out: Path) -> Path:
    """Point calsync at a SQLite file and a file outbox in ``out``, whatever the environment says.

    Must run before :mod:`sync.broker` is imported, because the broker is
    chosen and the actors bound to it at import time. A previous demo's
    database and invites in ``out`` are removed so each run starts clean.
    """
    if "sync.broker" in sys.modules:
        from sync.broker import broker, is_embedded

        if not is_embedded(broker):
            raise ConfigError("calsync demo needs a fresh process: a non-embedded broker is already bound")
    from sync.config import get_settings
    from sync.runtime import set_runtime

    out = out.resolve()
    outbox = out / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("calsync.db*"), *outbox.glob("*.eml")]:
        stale.unlink()
    os.environ.update({
        "CALSYNC_DATABASE_URL": f"sqlite:///{out / 'calsync.db'}",
        "CALSYNC_BROKER_URL": "memory://",
        "CALSYNC_SMTP_URL": outbox.as_uri(),
        "CALSYNC_MAIL_FROM": DEMO_MAIL_FROM,
    })
    get_settings.cache_clear()
    set_runtime(None)
    return outbox


def _program(monday: date) -> dict[str, dict[str, Any]]:
    """Version 1 of every session: a group kickoff and two one-to-ones, one of them hybrid."""

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
                           ["ada", "alan", "grace", "katherine"]),
        "alan": session("alan-1", "Session 1: Setting goals", 1, 15, "America/New_York", ["ada", "alan"]),
        "grace": session("grace-1", "Session 1: Setting goals", 2, 12, "America/Chicago", ["ada", "grace"],
                         location="Room 4.2, Innovation Hub"),
    }


def _next_version(data: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**data, **changes, "version": data["version"] + 1}


def run(out: Path, say: Callable[[str], None] = lambda _: None) -> Report:
    """Run the whole demo in ``out``; ``say`` hears each step as it finishes."""
    outbox = use_embedded_defaults(out)

    from sync import api
    from sync import tasks  # noqa: F401  (declares the actors before the worker starts)
    from sync.broker import QUEUE, broker, embedded_worker
    from sync.config import get_settings
    from sync.store.migrate import upgrade

    settings = get_settings()
    upgrade(settings.database_url)
    report = Report(outbox=outbox, database=settings.database_url)
    program = _program(_next_monday())

    def step(description: str, action: Callable[[], object]) -> None:
        action()
        # Drain before the next step, so each change reaches the calendars on its own
        # (one worker for the whole run: each dramatiq.Worker leaves a middleware on the broker).
        broker.join(QUEUE, fail_fast=False)  # type: ignore[attr-defined]
        report.steps.append(description)
        say(f"{len(report.steps)}. {description}")

    def upsert(data: dict[str, Any]) -> None:
        result = api.upsert_session(data)
        if not result.ok:
            report.problems.append(f"{data['id']}: intake said {result.outcome}")

    alan, grace, kickoff = program["alan"], program["grace"], program["kickoff"]
    moved = {k: (datetime.fromisoformat(alan[k]) + timedelta(days=1)).isoformat() for k in ("start", "end")}
    with embedded_worker(broker, settings.embedded_worker_threads):
        step("booked a kickoff for the cohort and two one-to-ones",
             lambda: [upsert(data) for data in program.values()])
        step("rescheduled Alan's session one day later (REQUEST, SEQUENCE rises)",
             lambda: upsert(_next_version(alan, **moved)))
        step("edited the agenda of Grace's session (REQUEST, same SEQUENCE, newer DTSTAMP)",
             lambda: upsert(_next_version(grace, agenda_html="<p>Bring your three goals</p><ul><li>A plan</li></ul>")))
        step("Katherine left the kickoff (CANCEL to her alone)",
             lambda: upsert(_next_version(kickoff, participants=kickoff["participants"][:3])))
        step("cancelled Grace's session (CANCEL to both)", lambda: api.cancel_session(grace["id"]))

    _summarise(report, [data["id"] for data in program.values()])
    return report


def _next_monday() -> date:
    today = datetime.now(ZoneInfo("America/New_York")).date()
    return today + timedelta(days=7 - today.weekday())


def read_outbox(outbox: Path) -> list[Invite]:
    """Parse every ``.eml`` as a mail client would: MIME first, then the text/calendar part."""
    import icalendar

    invites = []
    for path in sorted(outbox.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        part = next(p for p in message.walk() if p.get_content_type() == "text/calendar")
        calendar = icalendar.Calendar.from_ical(part.get_content())
        event = next(iter(calendar.walk("VEVENT")))
        invites.append(Invite(
            path=path,
            recipient=getaddresses([str(message["To"])])[0][1].lower(),
            uid=str(event["UID"]),
            method=str(calendar["METHOD"]),
            sequence=int(event.get("SEQUENCE", 0)),
            dtstamp=event.decoded("DTSTAMP"),
        ))
    return invites


def _summarise(report: Report, session_ids: list[str]) -> None:
    from sync import api

    landed: dict[tuple[str, str], list[Invite]] = {}
    for invite in read_outbox(report.outbox):
        landed.setdefault((invite.recipient, invite.uid), []).append(invite)
    for session_id in session_ids:
        for p in api.get_session(session_id).placements:
            person = p.recipient_name or p.recipient_email
            invites = sorted(landed.get((p.recipient_email, p.uid), []), key=lambda i: i.order)
            last = invites[-1] if invites else None
            report.rows.append(Row(
                person=person, session_id=session_id, channel=p.channel, state=p.state,
                method=last.method if last else None, sequence=last.sequence if last else None,
                files=len(invites), history=" → ".join(f"{i.method}:{i.sequence}" for i in invites),
            ))
            if p.state not in ("placed", "withdrawn"):
                report.problems.append(f"{person} / {session_id}: placement is {p.state} ({p.last_error})")
            elif last is None or last.sequence != p.sequence or last.method != ("REQUEST" if p.live else "CANCEL"):
                report.problems.append(f"{person} / {session_id}: the last invite on disk does not match "
                                       f"the placement ({p.state}, SEQUENCE {p.sequence})")
    report.rows.sort(key=lambda r: (r.person, r.session_id))
