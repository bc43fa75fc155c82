"""What each person's calendar app shows, compared with the store's truth: a pure checker.

The reliability suite must judge an end state the way a participant would see it, not the
way calsync records it: a placement row that says ``placed`` proves nothing if the event is
not on the calendar, and a CANCEL that went out with a lower SEQUENCE than the REQUEST
before it leaves the session on the person's calendar. So :func:`check` takes

- :class:`Truth` — the store's current sessions (status, title, start, each participant's
  address) and each person's route (the provider of their *active* integration, else email),
  plus what the test knows about the outside world: every address a person ever had, the
  accounts whose token the test killed, and which invite UID belongs to which session;
- :class:`Seen` — every live event in the emulated Google and Outlook calendars, read by
  calsync's tag, and every invite the SMTP server accepted;

and returns a :class:`Verdict`: for each (session, person), a calendar app must show exactly
one copy, on the channel the person uses now, with the current title and start — or none
at all when the session is cancelled or the person is no longer in it.

Email is read as RFC 5546 §2.1.5 says a calendar app reads it: per (recipient, UID) the
message with the highest SEQUENCE wins, then the latest DTSTAMP (then arrival, which a real
client cannot see but which only matters when both tie); the session shows while the winner
is a REQUEST. A copy left in a calendar whose token the test revoked and that was never
reconnected is *stranded*: calsync cannot delete with a dead token, so it is counted on its
own and never as a duplicate.

Everything here is pure (no I/O) so ``test_calendar_view.py`` can prove, with hand-built
inputs, that the checker fails when it should.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

CALENDARS = ("google", "outlook")
#: extendedProperties.private keys calsync tags Google events with (sync.providers.google_events).
GOOGLE_TAG_SESSION, GOOGLE_TAG_USER = "calsyncSession", "calsyncUser"
#: The Outlook single-value extended property's name (sync.providers.outlook_events.TAG_PROPERTY).
OUTLOOK_TAG_NAME = "calsyncplacement"


# ---- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionTruth:
    """One session as the store holds it now."""

    session_id: str
    status: str  # "scheduled" | "cancelled"
    title: str
    start: datetime  # aware
    #: user_id → the address this session's invites go to.
    participants: Mapping[str, str]

    @property
    def scheduled(self) -> bool:
        return self.status == "scheduled"


@dataclass(frozen=True)
class Route:
    """The one channel a person uses now: an active integration's calendar, or email."""

    channel: str  # "google" | "outlook" | "email"
    account: str | None = None  # the calendar's owner (google/outlook)


EMAIL = Route("email")


@dataclass(frozen=True)
class Truth:
    sessions: Mapping[str, SessionTruth]
    #: user_id → route, for people with an active integration; everyone else is on email.
    routes: Mapping[str, Route]
    #: user_id → every address the person ever had (attributes each invite to a person).
    addresses: Mapping[str, frozenset[str]]
    #: invite UID → session id.
    uids: Mapping[str, str]
    #: (provider, account) whose token is dead and was not reconnected: copies there are stranded.
    dead: frozenset[tuple[str, str]] = frozenset()
    #: (session, person) pairs that ever existed: judged too, so a withdrawal counts as "correctly absent".
    ever: frozenset[tuple[str, str]] = frozenset()

    def route(self, user_id: str) -> Route:
        return self.routes.get(user_id, EMAIL)


@dataclass(frozen=True)
class EventCopy:
    """One live event in an emulated calendar, tagged by calsync with (session, person)."""

    provider: str
    account: str
    event_id: str
    session_id: str
    user_id: str
    title: str
    start: datetime


@dataclass(frozen=True)
class Invite:
    """One iMIP message as one recipient received it."""

    recipient: str
    uid: str
    method: str  # "REQUEST" | "CANCEL"
    sequence: int
    dtstamp: datetime
    title: str
    start: datetime | None
    arrival: int  # order in which the SMTP server accepted it


@dataclass(frozen=True)
class Seen:
    events: Sequence[EventCopy]
    invites: Sequence[Invite]


# ---- outputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Copy:
    """One copy a person can see, on any channel, in provider-neutral terms."""

    channel: str
    where: str  # account (calendars) or address (email)
    ident: str  # event id or UID
    title: str
    start: datetime | None
    history: str = ""  # email: METHOD:SEQUENCE of every message for this (address, UID)

    def describe(self) -> str:
        what = f'{self.channel} {self.where}: "{self.title}" at {fmt_time(self.start)}'
        if self.channel == "email":
            return f"{what} [{self.history}]"
        return f"{what} (event {self.ident[:14]})"


@dataclass(frozen=True)
class Problem:
    """One (session, person) whose calendar is wrong, with what was expected and what was found."""

    session_id: str
    user_id: str
    kinds: tuple[str, ...]  # subset of ("missing", "duplicate", "stale")
    expected: str
    found: str

    def line(self) -> str:
        kinds = "+".join(self.kinds)
        return f"{self.session_id} × {self.user_id}: {kinds}: expected {self.expected}; found {self.found}"


@dataclass
class Verdict:
    pairs: int = 0  # (session, person) pairs judged
    shown_ok: int = 0  # should show, and shows exactly one current copy on the right channel
    absent_ok: int = 0  # should show nothing, and shows nothing (stranded copies aside)
    missing: int = 0  # should show, but nothing on the channel the person uses now
    duplicate: int = 0  # every copy beyond the first one the person sees
    stale: int = 0  # the copy shows an old title or time, sits on a channel no longer used, or was not withdrawn
    stranded: int = 0  # copies left behind a dead token (expected; not duplicates)
    problems: list[Problem] = field(default_factory=list)
    stranded_copies: list[str] = field(default_factory=list)
    #: Things that are wrong but belong to no (session, person): unknown tags, addresses, UIDs.
    anomalies: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.missing == self.duplicate == self.stale == 0 and not self.anomalies

    def counts(self) -> dict[str, int]:
        return {"pairs": self.pairs, "shown_ok": self.shown_ok, "absent_ok": self.absent_ok,
                "missing": self.missing, "duplicate": self.duplicate, "stale": self.stale,
                "stranded_expected": self.stranded, "anomalies": len(self.anomalies)}

    def headline(self) -> str:
        return (f"missing={self.missing} duplicate={self.duplicate} stale={self.stale} "
                f"stranded (expected)={self.stranded} anomalies={len(self.anomalies)} "
                f"[{self.pairs} (session, person) pairs: {self.shown_ok} shown correctly, "
                f"{self.absent_ok} correctly absent]")

    def summary(self, limit: int = 40) -> str:
        lines = [self.headline()]
        for p in self.problems[:limit]:
            lines.append("  " + p.line())
        if len(self.problems) > limit:
            lines.append(f"  … and {len(self.problems) - limit} more problems")
        for a in self.anomalies[:limit]:
            lines.append("  anomaly: " + a)
        return "\n".join(lines)


# ---- the checker -----------------------------------------------------------------------------


def fmt_time(at: datetime | None) -> str:
    return "?" if at is None else at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%MZ")


def _same_instant(a: datetime | None, b: datetime) -> bool:
    return a is not None and a.astimezone(timezone.utc).replace(microsecond=0) == b.astimezone(
        timezone.utc).replace(microsecond=0)


@dataclass(frozen=True)
class Thread:
    """All messages for one (recipient, UID), and the one a calendar app applies."""

    recipient: str
    uid: str
    winner: Invite
    history: str

    @property
    def live(self) -> bool:
        return self.winner.method == "REQUEST"


def inbox_view(invites: Iterable[Invite]) -> dict[tuple[str, str], Thread]:
    """Per (recipient, UID): highest SEQUENCE wins, then latest DTSTAMP, then latest arrival."""
    grouped: dict[tuple[str, str], list[Invite]] = defaultdict(list)
    for inv in invites:
        grouped[(inv.recipient.lower(), inv.uid)].append(inv)
    out = {}
    for key, items in grouped.items():
        items.sort(key=lambda i: i.arrival)
        winner = max(items, key=lambda i: (i.sequence, i.dtstamp, i.arrival))
        history = " → ".join(f"{i.method}:{i.sequence}" for i in items)
        out[key] = Thread(key[0], key[1], winner, history)
    return out


def identical_resends(invites: Iterable[Invite]) -> list[str]:
    """Messages that repeat the previous one of their (recipient, UID) in METHOD, SEQUENCE, title and start.

    A calendar app shows them as one entry, so they are no duplicate copy; they are counted
    because each is an extra email in the person's inbox.
    """
    last: dict[tuple[str, str], Invite] = {}
    out = []
    for inv in sorted(invites, key=lambda i: i.arrival):
        key = (inv.recipient.lower(), inv.uid)
        prev = last.get(key)
        if prev is not None and (prev.method, prev.sequence, prev.title, prev.start) == (
                inv.method, inv.sequence, inv.title, inv.start):
            out.append(f"{inv.recipient} {inv.uid[:8]} {inv.method}:{inv.sequence}")
        last[key] = inv
    return out


def check(truth: Truth, seen: Seen) -> Verdict:
    """Judge every (session, person) the store knows of or that any copy is tagged for."""
    verdict = Verdict()
    owner = {addr.lower(): uid for uid, addrs in truth.addresses.items() for addr in addrs}
    found: dict[tuple[str, str], list[Copy]] = defaultdict(list)

    for ev in seen.events:
        if ev.session_id not in truth.sessions:
            verdict.anomalies.append(f"{ev.provider} event {ev.event_id} in {ev.account} is tagged for unknown "
                                     f"session {ev.session_id!r} (person {ev.user_id!r})")
            continue
        found[(ev.session_id, ev.user_id)].append(
            Copy(ev.provider, ev.account.lower(), ev.event_id, ev.title, ev.start))
    for thread in inbox_view(seen.invites).values():
        sid, user = truth.uids.get(thread.uid), owner.get(thread.recipient)
        if sid is None or user is None:
            verdict.anomalies.append(f"invites to {thread.recipient} for UID {thread.uid} [{thread.history}]: "
                                     + ("unknown UID" if sid is None else "address belongs to nobody"))
            continue
        if thread.live:
            w = thread.winner
            found[(sid, user)].append(Copy("email", thread.recipient, thread.uid, w.title, w.start, thread.history))

    pairs = ({(sid, u) for sid, s in truth.sessions.items() for u in s.participants} | set(found)
             | {(sid, u) for sid, u in truth.ever if sid in truth.sessions})
    for sid, user in sorted(pairs):
        verdict.pairs += 1
        _judge(truth, truth.sessions[sid], user, found.get((sid, user), []), verdict)
    return verdict


def _judge(truth: Truth, s: SessionTruth, user: str, copies: list[Copy], verdict: Verdict) -> None:
    should_show = s.scheduled and user in s.participants
    route = truth.route(user)
    where = (s.participants.get(user, "").lower() if route.channel == "email" else (route.account or "").lower())
    on_route = [c for c in copies if should_show and c.channel == route.channel and c.where == where]
    elsewhere = [c for c in copies if not any(c is r for r in on_route)]
    stranded = [c for c in elsewhere if c.channel in CALENDARS and (c.channel, c.where) in truth.dead]
    extra = [c for c in elsewhere if not any(c is d for d in stranded)]
    verdict.stranded += len(stranded)
    verdict.stranded_copies += [f"{s.session_id} × {user}: {c.describe()}" for c in stranded]

    kinds: list[str] = []
    if should_show:
        expected = f'{route.channel} {where}: "{s.title}" at {fmt_time(s.start)}'
        if not on_route:
            kinds.append("missing")
            verdict.missing += 1
            if extra:  # on a channel or address the person no longer uses
                kinds.append("stale")
                verdict.stale += len(extra)
        else:
            current = [c for c in on_route if c.title == s.title and _same_instant(c.start, s.start)]
            if len(on_route) + len(extra) > 1:
                kinds.append("duplicate")
                verdict.duplicate += len(on_route) + len(extra) - 1
            if not current:
                kinds.append("stale")
                verdict.stale += 1
    else:
        expected = "nothing (" + ("session cancelled" if not s.scheduled else "not a participant") + ")"
        if extra:
            kinds.append("stale")
            verdict.stale += len(extra)

    if not kinds:
        if should_show:
            verdict.shown_ok += 1
        else:
            verdict.absent_ok += 1
        return
    shown = on_route + extra
    text = "; ".join(c.describe() for c in shown) or "nothing"
    if stranded:
        text += f" (+{len(stranded)} stranded)"
    verdict.problems.append(Problem(s.session_id, user, tuple(kinds), expected, text))


# ---- reading what landed (pure parsers for the emulators' and the SMTP server's data) ----------


def _aware(value: Any) -> datetime | None:
    """An icalendar date-time as an aware datetime (a floating one is taken as UTC)."""
    if value is None:
        return None
    dt = getattr(value, "dt", value)
    if not isinstance(dt, datetime):
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


def parse_invites(raw: bytes, recipients: Sequence[str], arrival: int) -> list[Invite]:
    """The invite in one accepted message, once per envelope recipient; [] if it holds no calendar.

    Raises ValueError when the text/calendar part is unreadable, so a malformed invite is
    reported rather than silently not shown.
    """
    from sync.testing.mail import read_invite

    invite = read_invite(raw)
    if invite is None:
        return []
    method, ev = invite.method, invite.event
    dtstamp = _aware(ev.get("DTSTAMP"))
    if dtstamp is None:
        raise ValueError("VEVENT without DTSTAMP")
    return [Invite(recipient=r.lower(), uid=str(ev["UID"]), method=method, sequence=int(ev.get("SEQUENCE", 0)),
                   dtstamp=dtstamp, title=str(ev.get("SUMMARY", "")), start=_aware(ev.get("DTSTART")),
                   arrival=arrival) for r in recipients]


def google_copy(account: str, event: Mapping[str, Any]) -> EventCopy | None:
    """A live Google event as a copy, or None if calsync did not tag it."""
    tags = event.get("extendedProperties", {}).get("private", {})
    if GOOGLE_TAG_SESSION not in tags:
        return None
    start = datetime.fromisoformat(event["start"]["dateTime"].replace("Z", "+00:00"))
    return EventCopy("google", account.lower(), str(event["id"]), tags[GOOGLE_TAG_SESSION],
                     tags.get(GOOGLE_TAG_USER, "?"), str(event.get("summary", "")), start)


def outlook_copy(mailbox: str, event: Mapping[str, Any]) -> EventCopy | None:
    """A live Outlook event as a copy, or None if calsync did not tag it."""
    value = next((p.get("value") for p in event.get("singleValueExtendedProperties", [])
                  if OUTLOOK_TAG_NAME in str(p.get("id", "")).lower()), None)
    if not value or "/" not in value:
        return None
    session_id, user_id = value.rsplit("/", 1)
    when = event["start"]
    zone = when.get("timeZone") or "UTC"
    start = datetime.fromisoformat(when["dateTime"][:19]).replace(
        tzinfo=timezone.utc if zone.upper() == "UTC" else ZoneInfo(zone))
    return EventCopy("outlook", mailbox.lower(), str(event["id"]), session_id, user_id,
                     str(event.get("subject", "")), start)
