"""Re-plan many sessions at once: what support runs after an outage or a cohort-wide edit.

Planning is done in bulk — a handful of queries per chunk of sessions, never
one per placement — so a dry run over a whole platform takes seconds. Only
sessions whose plan has something to do are enqueued, with ``retry_failed``
so placements that gave up are tried again: the session is authoritative.

:class:`Outstanding` follows the messages one resync sent through Redis, so
``resync --wait`` waits for its own work and not for whatever else is queued.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from dramatiq.errors import DecodeError
from dramatiq.message import Message
from sqlalchemy import select
from sqlalchemy.orm import Session as Db

from sync.core.plan import Kind, SessionPlan, plan_session
from sync.engine.queues import KEYS, QueueKeys
from sync.engine.runtime import Runtime
from sync.store import integrations, placements, synclog
from sync.store.db import utcnow
from sync.store.models import ParticipantRow, Placement, SessionRow
from sync.store.placements import PLANNED_COLUMNS
from sync.store.sessions import COLUMNS, to_stored

#: Sessions loaded per round trip while planning in bulk.
CHUNK = 2000


@dataclass(frozen=True)
class Selection:
    """Which sessions: exactly one of session_id, user_id, program, everything."""

    session_id: str | None = None
    user_id: str | None = None
    program: str | None = None
    everything: bool = False
    #: Only sessions starting at or after this moment.
    since: datetime | None = None


def select_ids(db: Db, sel: Selection) -> list[str]:
    stmt = select(SessionRow.id)
    if sel.session_id is not None:
        stmt = stmt.where(SessionRow.id == sel.session_id)
    elif sel.user_id is not None:
        in_now = select(ParticipantRow.session_id).where(ParticipantRow.user_id == sel.user_id)
        holds = select(Placement.session_id).where(Placement.user_id == sel.user_id, Placement.live.is_(True))
        stmt = stmt.where(SessionRow.id.in_(in_now.union(holds)))
    elif sel.program is not None:
        stmt = stmt.where(SessionRow.program == sel.program)
    elif not sel.everything:
        raise ValueError("a selection needs a session, a user, a program or everything")
    if sel.since is not None:
        stmt = stmt.where(SessionRow.start >= sel.since)
    return list(db.scalars(stmt.order_by(SessionRow.start, SessionRow.id)))


def plan_many(rt: Runtime, ids: list[str], *, retry_failed: bool = True) -> Iterator[tuple[str, SessionPlan]]:
    channels = rt.channels
    now, place_past = utcnow(), rt.settings.past_sessions == "send"
    for at in range(0, len(ids), CHUNK):
        chunk = ids[at:at + CHUNK]
        # Plain rows, not ORM objects: the planner only reads them, and building
        # identity-mapped instances would cost more than the planning itself.
        with rt.store.tx() as db:
            s_cols = [getattr(SessionRow, c) for c in ("id", "revision", *COLUMNS)]
            rows = {r.id: r for r in db.execute(select(*s_cols).where(SessionRow.id.in_(chunk)))}
            parts: dict[str, list[Any]] = defaultdict(list)
            for p in db.execute(select(ParticipantRow.__table__).where(ParticipantRow.session_id.in_(chunk))):
                parts[p.session_id].append(p)
            recs: dict[str, list[Any]] = defaultdict(list)
            p_cols = [Placement.session_id, *(getattr(Placement, c) for c in PLANNED_COLUMNS)]
            for sid, *values in db.execute(select(*p_cols).where(Placement.session_id.in_(chunk))):
                recs[sid].append(placements.recorded_from(values))
            people = {p.user_id for ps in parts.values() for p in ps} | {p.user_id for ps in recs.values() for p in ps}
            usable_by_user = defaultdict(list)
            for u in integrations.usable(db, people):
                usable_by_user[u.user_id].append(u)
            loaded = [(sid, rows[sid].revision, to_stored(rows[sid], parts[sid]),
                       recs[sid]) for sid in chunk if sid in rows]
        for sid, revision, session, recorded in loaded:
            users = {p.user_id for p in session.participants} | {r.user_id for r in recorded}
            usable = [u for uid in users for u in usable_by_user.get(uid, ())]
            yield sid, plan_session(session, recorded, usable, channels, revision=revision,
                                    retry_failed=retry_failed, now=now, place_past=place_past)


@dataclass
class ResyncResult:
    sessions: int = 0
    placements: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    enqueued: list[str] = field(default_factory=list)
    #: (session, user, channel, action, reason) for every planned step, for --dry-run.
    steps: list[tuple[str, str, str, str, str]] = field(default_factory=list)


def resync(rt: Runtime, sel: Selection, *, dry_run: bool, enqueue: Callable[[str], None],
           keep_steps: bool = True) -> ResyncResult:
    with rt.store.tx() as db:
        ids = select_ids(db, sel)
    result = ResyncResult(sessions=len(ids))
    for sid, planned in plan_many(rt, ids):
        busy = False
        for a in planned.actions:
            result.placements += 1
            result.counts[a.kind.value] += 1
            busy = busy or a.kind is not Kind.NOTHING
            if keep_steps:
                result.steps.append((sid, a.user_id, a.channel, a.kind.value, a.reason))
        if busy:
            result.enqueued.append(sid)
            if not dry_run:
                enqueue(sid)
    return result


#: Dramatiq's own message id inside an encoded payload. Arguments are JSON strings, so a
#: quote inside one is escaped and cannot fake this; a match is confirmed by decoding anyway.
_MESSAGE_ID = re.compile(rb'"message_id":\s*"([^"\\]+)"')


def outcomes_since(rt: Runtime, log_mark: int, sessions: set[str], planned: Counter[str]) -> dict[str, int]:
    """What the workers did for these sessions, from the sync log written since the resync started.

    Each placement counts once, by its latest step: a copy that was retried
    and then placed is ``created``; one whose latest attempt was a transient
    failure, a throttle or a hold is ``retrying``, because a later message the
    worker scheduled will try again (--wait does not wait for those).
    """
    done = {"created": 0, "updated": 0, "withdrawn": 0, "unchanged": planned.get("nothing", 0), "failed": 0,
            "retrying": 0}
    names = {"create": "created", "update": "updated", "withdraw": "withdrawn"}
    with rt.store.tx() as db:
        rows = synclog.steps_since(db, log_mark)
    latest: dict[tuple[str, str | None, str | None], tuple[str, str]] = {}
    for sid, user_id, channel, action, result in rows:
        if sid in sessions and action in names:  # "reconcile" rows are repair_drift's notes, not steps
            latest[(sid, user_id, channel)] = (action, result)
    for action, result in latest.values():
        if result == "ok":
            done[names[action]] += 1
        elif result in ("failed", "drift"):  # drift: the copy vanished under an update; not placed
            done["failed"] += 1
        elif result in ("retrying", "throttled", "held"):
            done["retrying"] += 1
    return done


class Outstanding:
    """Which of the messages one command sent are still queued, delayed or in flight in Redis.

    Dramatiq keeps every message's payload in the queue's payload hash (queued or
    fetched but not yet acked) or the delay queue's (delayed) until it is acked,
    and moves it to the dead letters' when it dies (:mod:`sync.engine.queues`).
    Those hashes are keyed by a Redis id that changes on every
    enqueue, and a crashed message is re-enqueued (delayed) under a new one, so
    each message is followed by its lifelong ``message_id``:

    - a poll checks only the Redis id each message was last seen under (one
      HEXISTS per message, however long the queue is);
    - a message gone from there is looked for in the delay queue (where a crash
      retry goes; it stays there at least the actor's backoff, 5 s by default,
      far longer than a poll), then, if it was last in the delay queue, in the
      queue (where it hops once due), then in the dead letters.

    A message found nowhere is done: acked after its run. What the run did is
    the sync log's to say, not this class's.
    """

    def __init__(self, client: redis.Redis, messages: Iterable[Message], keys: QueueKeys = KEYS) -> None:
        self.client = client
        self.queue_key = keys.payloads
        self.delay_key = keys.delayed_payloads
        self.dead_key = keys.dead_payloads
        #: message_id -> (hash it was last seen in, its Redis id there)
        self._where: dict[str, tuple[str, str]] = {
            m.message_id: (self.delay_key if m.queue_name == keys.delay_queue else self.queue_key,
                           m.options["redis_message_id"]) for m in messages}
        #: message ids that ended in the dead-letter queue, in the order they were found there.
        self.dead: list[str] = []

    def poll(self) -> int:
        """How many of the messages are not done yet."""
        if not self._where:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for key, redis_id in self._where.values():
            pipe.hexists(key, redis_id)
        gone = [mid for mid, present in zip(list(self._where), pipe.execute(), strict=True) if not present]
        if gone:
            self._relocate(gone)
        return len(self._where)

    def _relocate(self, gone: list[str]) -> None:
        """Find where each message that left its last place went: retried, hopped, dead, or done."""
        found = {mid: (self.delay_key, rid) for mid, rid in self._find(self.delay_key, gone).items()}
        was_delayed = [m for m in gone if m not in found and self._where[m][0] == self.delay_key]
        if was_delayed:
            found.update({mid: (self.queue_key, rid) for mid, rid in self._find(self.queue_key, was_delayed).items()})
        rest = [m for m in gone if m not in found]
        dead = self._find(self.dead_key, rest) if rest else {}
        for mid in gone:
            if mid in found:
                self._where[mid] = found[mid]
                continue
            del self._where[mid]
            if mid in dead:
                self.dead.append(mid)

    def _find(self, key: str, message_ids: list[str]) -> dict[str, str]:
        """Redis ids, in hash ``key``, of the payloads carrying these message ids."""
        wanted, found = set(message_ids), {}
        for redis_id, raw in self.client.hscan_iter(key, count=1000):
            if not any(m.decode() in wanted for m in _MESSAGE_ID.findall(raw)):
                continue
            try:
                mid = Message.decode(raw).message_id
            except DecodeError:
                continue
            if mid in wanted:
                found[mid] = redis_id.decode() if isinstance(redis_id, bytes) else redis_id
        return found
