"""How fast ``calsync resync --all --dry-run`` plans: placements planned per second.

Builds a store with N placements in the steady state (every placement already
placed with the content it should have, which is the common case and makes the
planner compare every hash), then times the bulk planner over all of them.

    python -m bench.resync_plan [--placements 100000] [--per-session 2] [--db URL]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import insert


def build(url: str, placements: int, per_session: int, placed_revision: int) -> int:
    from sync.core.render import render, session_uid
    from sync.core.session import Participant, Session
    from sync.store.db import Store
    from sync.store.migrate import upgrade
    from sync.store.models import ParticipantRow, Person, Placement, SessionRow

    upgrade(url)
    store = Store(url)
    n_sessions = placements // per_session
    start = datetime(2026, 12, 1, 15, tzinfo=timezone.utc)
    people = [{"user_id": f"u-{i}", "email": f"p{i}@example.com", "name": f"Person {i}"} for i in range(2000)]
    sessions, parts, rows = [], [], []
    for s in range(n_sessions):
        sid = f"s-{s}"
        members = [people[(s * per_session + k) % len(people)] for k in range(per_session)]
        begin = start + timedelta(hours=s % 2000)
        model = Session.model_construct(
            id=sid, version=1, title=f"Session {s}", program=f"Cohort {s % 20}", start=begin,
            end=begin + timedelta(hours=1), timezone="America/New_York", status="scheduled",
            meeting_url="https://zoom.us/j/1", location=None, agenda_html="<p>Goals <b>and</b> next steps</p>",
            view_url=f"https://platform.example/s/{sid}",
            participants=tuple(Participant.model_construct(timezone=None, role="mentee", **m) for m in members))
        sessions.append({"id": sid, "version": 1, "revision": 1, "synced_revision": 1, "title": model.title,
                         "program": model.program, "start": model.start, "end": model.end,
                         "timezone": model.timezone, "status": "scheduled", "meeting_url": model.meeting_url,
                         "location": None, "agenda_html": model.agenda_html, "view_url": model.view_url})
        for pos, p in enumerate(model.participants):
            ev = render(model, p)
            parts.append({"session_id": sid, "user_id": p.user_id, "position": pos, "email": p.email,
                          "name": p.name, "role": p.role, "timezone": None})
            rows.append({"session_id": sid, "user_id": p.user_id, "channel": "email", "address": p.email,
                         "recipient_email": p.email,
                         "recipient_name": p.name, "recipient_timezone": ev.recipient.timezone,
                         "uid": session_uid(sid), "sequence": 0, "content_hash": ev.content_hash,
                         "material_hash": ev.material_hash, "revision": placed_revision, "live": True,
                         "state": "placed",
                         "attempts": 0})
    with store.tx() as db:
        db.execute(insert(Person), [{"user_id": p["user_id"], "email": p["email"], "name": p["name"]} for p in people])
        db.execute(insert(SessionRow), sessions)
        db.execute(insert(ParticipantRow), parts)
        db.execute(insert(Placement), rows)
    return n_sessions


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--placements", type=int, default=100_000)
    ap.add_argument("--per-session", type=int, default=2)
    ap.add_argument("--db", help="SQLAlchemy URL (default: a fresh SQLite file)")
    args = ap.parse_args(argv)

    tmp = tempfile.TemporaryDirectory()
    url = args.db or f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    os.environ.setdefault("CALSYNC_MAIL_FROM", "sessions@calsync.example")
    os.environ.setdefault("CALSYNC_SMTP_URL", f"file://{tmp.name}/out")
    os.environ["CALSYNC_BROKER_URL"] = "memory://"

    from sync.config import Settings
    from sync.engine.runtime import Runtime
    from sync.ops.resync import Selection, resync

    print(f"command: python -m bench.resync_plan {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {url.split(':')[0]}")
    figures: dict[str, float] = {}
    # Two stores: placed from the session's current revision (the steady state after
    # a sync), and placed from an older revision, which forces a content-hash check.
    for label, placed_revision in (("steady state", 1), ("hash check", 0)):
        db_url = url if args.db else f"sqlite:///{Path(tmp.name) / f'bench-{placed_revision}.db'}"
        t0 = time.perf_counter()
        n_sessions = build(db_url, args.placements, args.per_session, placed_revision)
        built = time.perf_counter() - t0
        rt = Runtime(Settings(database_url=db_url))
        t0 = time.perf_counter()
        result = resync(rt, Selection(everything=True), dry_run=True, enqueue=lambda sid: None, keep_steps=False)
        took = time.perf_counter() - t0
        rate = result.placements / took
        print(f"{label}: {n_sessions} sessions, {result.placements} placements (built in {built:.1f} s); "
              f"planned in {took:.2f} s = {rate:,.0f} placements/s (target >= 20,000/s); "
              f"actions: {dict(result.counts)}")
        figures[label] = rate
        if args.db:
            break
    tmp.cleanup()
    return figures


if __name__ == "__main__":
    main()
