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

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync.demo import scenario
from sync.demo.folder import claim_folder, use_embedded_defaults
from sync.demo.readback import Calendars, Report, event_line, event_time, per_session, read_outbox, summarise
from sync.demo.scenario import CONNECTED, PEOPLE, later, next_monday, next_version

if TYPE_CHECKING:
    from sync.core.drift import Observed


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
    program = scenario.program(next_monday())
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
                f"in the same reconcile both his sessions went out by email instead: {per_session(mailed)}",
                f"his old Google kickoff stays at {event_time(stale[0], kickoff['timezone']) if stale else '(none)'}"
                " until he reconnects: a dead token can neither move nor delete it"]

    def left_kickoff() -> list[str]:
        mailed = invites_to(katherine_p, "kickoff")
        left = copies("katherine", "kickoff")
        if left:
            report.problems.append(f"Katherine left the kickoff, yet {len(left)} Outlook event(s) remain")
        if mailed != "none":
            report.problems.append(f"Katherine is on Outlook, yet she was mailed kickoff invites ({mailed})")
        return [f"her Outlook calendar, read back from the Graph emulator: "
                f"{'no kickoff event' if not left else event_line(left[0], kickoff['timezone'])}"]

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
        shown = event_line(events[0], kickoff["timezone"]) if events else "no event"
        return [f"Alan's Google integration: {row.status}",
                f"his emailed invites were withdrawn: {per_session(mailed)}",
                f"and the kickoff is back on his Google calendar: {shown}"]

    kickoff_v2 = next_version(kickoff, **later(kickoff, timedelta(hours=1)))
    tokens = {name: calendars.add_user(channel, PEOPLE[name]["email"]) for name, channel in CONNECTED.items()}
    with embedded_worker(broker, settings.embedded_worker_threads):
        step("Ada (mentor) and Alan (mentee) connected Google Calendar, Katherine (mentee) Outlook: "
             "their refresh tokens were imported", lambda: connect(tokens))
        step("booked a kickoff for the cohort and three one-to-ones "
             "(calendar events for Ada, Alan and Katherine; invites for the rest)",
             lambda: [upsert(data) for data in program.values()])
        step("rescheduled Alan's session one day later (both Google events move; no email)",
             lambda: upsert(next_version(alan, **later(alan, timedelta(days=1)))))
        step("edited the agenda of Grace's session (Ada's event updated; Grace: REQUEST, same SEQUENCE)",
             lambda: upsert(next_version(grace, agenda_html="<p>Bring your three goals</p><ul><li>A plan</li></ul>")))
        calendars.google.revoke(tokens["alan"])
        say("   (meanwhile Alan removes calsync's access in his Google account: his refresh token is now dead)")
        step("moved the kickoff an hour later", lambda: upsert(kickoff_v2), token_died)
        step("Katherine left the kickoff (her Outlook event deleted; no email to anyone)",
             lambda: upsert(next_version(kickoff_v2, participants=[
                 p for p in kickoff_v2["participants"] if p is not katherine_p])), left_kickoff)
        step("Alan reconnected Google Calendar (a fresh refresh token was imported)",
             lambda: connect({"alan": calendars.google.issue_refresh_token(alan_p["email"])}),
             lambda: reconnected(kickoff_v2["start"]))
        step("cancelled Grace's session (Ada's event deleted; CANCEL to Grace)",
             lambda: api.cancel_session(grace["id"]))

    summarise(report, calendars, [data["id"] for data in program.values()])
    report.integrations = [{**{k: getattr(r, k) for k in ("user_id", "provider", "account_email", "status", "reason")},
                            "history": " → ".join(statuses.get(r.user_id, [r.status]))}
                           for r in accounts.list_integrations(rt)]
    return report
