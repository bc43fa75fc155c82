"""Dramatiq's dead letters in Redis: list, show, retry and purge them.

Dramatiq parks a message whose retries ran out in the queue's dead-letter
sorted set (``redis_message_id`` scored by death time in ms) with its payload
beside it (:mod:`sync.engine.queues`), keeps it 7 days, and ships no tool to
look at it or put it back. This is that tool.

A dead letter has two ids: the Redis one it is filed under (new on every
enqueue, so a retried message gets a fresh one) and Dramatiq's
``message_id``, which stays with the message for life and is the one the
worker's log lines print ("Retries exceeded for message '…'"). Looking one up
accepts either, so an operator can go from a log line straight to the letter.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import q_name
from dramatiq.errors import DecodeError
from dramatiq.message import Message

from sync.engine.queues import KEYS, QueueKeys
from sync.errors import FieldError, InvalidInput, NotFound

#: Options that described the dead attempt, not the work: a retry starts clean.
_SPENT_OPTIONS = ("eta", "traceback", "redis_message_id")

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


#: Longest age a duration may name: Dead letters are kept for days, and the cutoff must stay a date.
MAX_AGE = timedelta(days=36_500)


def parse_duration(text: str, option: str = "--older-than") -> timedelta:
    """``30m``, ``12h``, ``7d``; anything else is rejected rather than guessed at,
    because the value decides what gets deleted."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise InvalidInput([FieldError(option, f"{text!r} is not a duration; use a number and s, m, h, d or w, "
                                               "e.g. 7d, 12h, 30m")])
    try:
        age = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        age = MAX_AGE + MAX_AGE
    if age > MAX_AGE:
        # Also keeps ``now - age`` inside the calendar.
        raise InvalidInput([FieldError(option, f"{text!r} is longer than 100 years")])
    return age


def last_line(text: str | None) -> str | None:
    """The last non-empty line of a traceback: the exception and its message."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else None


@dataclass(frozen=True)
class DeadLetter:
    """One dead message. ``message`` is None when the payload is gone or does not decode,
    so one corrupt entry cannot hide the others."""

    id: str
    died_at: datetime
    message: Message | None
    raw: bytes | None = None

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.message.options) if self.message else {}

    @property
    def last_error(self) -> str | None:
        """The error of the last attempt that was *retried*.

        Dramatiq dead-letters the payload as it was last enqueued, so the final
        attempt's own traceback is never stored; with calsync's retry budget
        the attempts before it almost always failed the same way. A message
        that died on its first attempt has none.
        """
        if self.message is None:
            return "payload missing" if self.raw is None else "payload does not decode"
        return last_line(self.options.get("traceback"))

    def summary(self) -> dict[str, Any]:
        m = self.message
        return {
            "id": self.id,
            "message_id": m.message_id if m else None,
            "actor": m.actor_name if m else None,
            "args": list(m.args) if m else [],
            "kwargs": dict(m.kwargs) if m else {},
            "died_at": self.died_at.isoformat(),
            "retries": self.options.get("retries", 0),
            "last_error": self.last_error,
        }

    def detail(self) -> dict[str, Any]:
        m = self.message
        data = {**self.summary(), "queue": m.queue_name if m else None,
                "enqueued_at": _from_ms(m.message_timestamp).isoformat() if m else None,
                "options": {k: v for k, v in self.options.items() if k != "traceback"},
                "traceback": self.options.get("traceback")}
        if m is None and self.raw is not None:
            data["raw"] = self.raw.decode("utf-8", "replace")
        return data


@dataclass(frozen=True)
class Retried:
    """A dead letter put back on its queue, and the id Redis knows it by now."""

    id: str
    new_id: str
    actor: str
    args: list[Any]
    #: False when someone else retried or purged it between our enqueue and our removal.
    removed: bool = True

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class DeadLetters:
    """The dead-letter queue of one Dramatiq queue in Redis."""

    def __init__(self, client: redis.Redis, keys: QueueKeys = KEYS, broker: RedisBroker | None = None) -> None:
        self.client = client
        self.namespace = keys.namespace
        self.queue = keys.queue
        self.key = keys.dead
        self.payloads = keys.dead_payloads
        self._broker = broker

    @property
    def broker(self) -> RedisBroker:
        """Enqueues through Dramatiq itself, so the payload and the enqueue middleware
        are exactly what ``actor.send`` would produce."""
        if self._broker is None:
            self._broker = RedisBroker(client=self.client, namespace=self.namespace)
        return self._broker

    def count(self) -> int:
        return int(self.client.zcard(self.key))

    def list(self) -> list[DeadLetter]:
        """Oldest death first: the order they will expire in."""
        entries = self.client.zrange(self.key, 0, -1, withscores=True)
        return self._load(entries)

    def get(self, dead_id: str) -> DeadLetter:
        """The dead letter filed under Redis id ``dead_id``, or else the one whose Dramatiq
        ``message_id`` it is (what worker logs print).

        The Redis id is one lookup; the message id needs a pass over the
        payloads, which is fine for a queue Dramatiq empties after 7 days.
        Two dead copies of one message (a retried letter that died again
        while its old copy stayed) are refused rather than guessed between.
        """
        score = self.client.zscore(self.key, dead_id)
        if score is not None:
            return self._load([(dead_id.encode(), score)])[0]
        matches = self._by_message_id(dead_id)
        if not matches:
            raise NotFound(f"no dead letter {dead_id!r}, by Redis id or message id (see `calsync dead-letters list`)")
        if len(matches) > 1:
            raise InvalidInput([FieldError(dead_id, f"message id of {len(matches)} dead letters: "
                                                    f"{', '.join(sorted(matches))}; give one of those ids")])
        [redis_id] = matches
        score = self.client.zscore(self.key, redis_id)
        if score is None:  # purged or retried since we looked
            raise NotFound(f"no dead letter {dead_id!r} (see `calsync dead-letters list`)")
        return self._load([(redis_id.encode(), score)])[0]

    def _by_message_id(self, message_id: str) -> list[str]:
        """Redis ids of the dead payloads carrying this Dramatiq message id.

        A cheap byte search first (the id appears verbatim in the JSON), then a
        decode to be sure it is the message's own id and not, say, an argument.
        """
        needle = message_id.encode()
        found = []
        for redis_id, raw in self.client.hscan_iter(self.payloads, count=500):
            if needle not in raw:
                continue
            try:
                if Message.decode(raw).message_id == message_id:
                    found.append(_text(redis_id))
            except DecodeError:
                continue
        return found

    def retry(self, dead_ids: Iterable[str]) -> list[Retried]:
        """Put each message back on its queue with its retry budget reset, then drop the dead copy.

        Enqueue first, remove second: a crash between the two leaves a
        duplicate (reconcile is idempotent, so harmless), never a lost
        message. Unknown ids raise NotFound before anything is enqueued.
        """
        letters = [self.get(i) for i in dead_ids]
        for letter in letters:
            if letter.message is None:
                raise InvalidInput([FieldError(letter.id, f"cannot be retried: {letter.last_error}; purge it")])
        return [self._requeue(letter) for letter in letters]

    def retry_all(self) -> list[Retried]:
        """Every dead letter that decodes; one that does not is left for ``purge`` (nothing could run it)."""
        return [self._requeue(letter) for letter in self.list() if letter.message is not None]

    def older_than(self, age: timedelta, now: datetime | None = None) -> list[DeadLetter]:
        """The dead letters ``purge`` would delete, oldest first: what ``purge --dry-run``
        lists and what a purge without ``--yes`` counts."""
        cutoff = (now or datetime.now(timezone.utc)) - age
        return self._load(self.client.zrangebyscore(self.key, "-inf", f"({_to_ms(cutoff)}", withscores=True))

    def purge(self, older_than: timedelta, now: datetime | None = None) -> list[str]:
        """Delete dead letters that died before ``now - older_than``; returns their ids."""
        cutoff = (now or datetime.now(timezone.utc)) - older_than
        ids = [_text(i) for i in self.client.zrangebyscore(self.key, "-inf", f"({_to_ms(cutoff)}")]
        if ids:
            self._remove(ids)
        return ids

    def _requeue(self, letter: DeadLetter) -> Retried:
        assert letter.message is not None
        m = letter.message
        options = {k: v for k, v in m.options.items() if k not in _SPENT_OPTIONS}
        # A message that died on the delay queue names it; it goes back to the real queue.
        fresh = dataclasses.replace(m, queue_name=q_name(m.queue_name), options={**options, "retries": 0})
        sent = self.broker.enqueue(fresh)
        removed = self._remove([letter.id])
        return Retried(letter.id, sent.options["redis_message_id"], m.actor_name, list(m.args), removed)

    def _remove(self, ids: list[str]) -> bool:
        """ZREM and HDEL in one MULTI, so no reader sees an id without its payload."""
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(self.key, *ids)
        pipe.hdel(self.payloads, *ids)
        zremoved, _ = pipe.execute()
        return zremoved == len(ids)

    def _load(self, entries: list[tuple[bytes | str, float]]) -> list[DeadLetter]:
        if not entries:
            return []
        ids = [_text(i) for i, _ in entries]
        raws = self.client.hmget(self.payloads, ids)
        letters = []
        for (dead_id, (_, score)), raw in zip(zip(ids, entries, strict=True), raws, strict=True):
            message = None
            if raw is not None:
                try:
                    message = Message.decode(raw)
                except DecodeError:
                    pass
            letters.append(DeadLetter(dead_id, _from_ms(score), message, raw))
        return letters


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _from_ms(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def _to_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)
