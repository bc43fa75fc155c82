"""Tables. Secrets are stored only as Fernet ciphertext; times only as UTC."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sync.store.db import UTCDateTime, utcnow

#: Named constraints so Alembic's batch mode can alter them on SQLite.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class SessionRow(Base):
    """A session as last accepted from the platform.

    ``version`` is the platform's; ``revision`` is ours and rises on every
    reason the session's calendars may have to change: an applied change
    (including a CLI cancel) and a routing change of any of its people (a token
    died, a calendar connected or disconnected), written in that change's own
    transaction. ``synced_revision`` is the revision every placement last
    settled at — the sweeper's lag signal.
    """

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    synced_revision: Mapped[int] = mapped_column(Integer, default=0)
    title: Mapped[str] = mapped_column(String(500))
    program: Mapped[str | None] = mapped_column(String(200), index=True)
    start: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    end: Mapped[datetime] = mapped_column(UTCDateTime)
    timezone: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    meeting_url: Mapped[str | None] = mapped_column(String(2048))
    location: Mapped[str | None] = mapped_column(String(500))
    agenda_html: Mapped[str] = mapped_column(Text, default="")
    view_url: Mapped[str | None] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Person(Base):
    """Someone who takes part in sessions; integrations hang off the person."""

    __tablename__ = "people"

    user_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(320))
    timezone: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ParticipantRow(Base):
    """Who is in the current version of a session, with what they were sent as."""

    __tablename__ = "participants"

    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("people.user_id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(64))
    timezone: Mapped[str | None] = mapped_column(String(64))


class Integration(Base):
    """A person's connected calendar. ``credentials`` is Fernet ciphertext only."""

    __tablename__ = "integrations"
    __table_args__ = (UniqueConstraint("user_id", "provider"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("people.user_id"), index=True)
    provider: Mapped[str] = mapped_column(String(16))
    account_email: Mapped[str | None] = mapped_column(String(320))
    calendar_id: Mapped[str | None] = mapped_column(String(1024))
    credentials: Mapped[bytes] = mapped_column(LargeBinary)
    #: A :class:`sync.core.states.Link`: active | needs_reconnect | disconnecting | disconnected
    status: Mapped[str] = mapped_column(String(32), default="active", index=True)
    status_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    #: When the person was last emailed a reconnect link (at most one a day).
    reconnect_mailed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def _address_of(ctx: Any) -> str:
    """Default identity address for rows inserted without one (bulk inserts, old callers)."""
    from sync.core.plan import address_of

    values = ctx.get_current_parameters()
    return address_of(values.get("channel") or "", values.get("recipient_email") or "")


class Placement(Base):
    """One session on one person's calendar through one channel at one address.

    The identity is person × channel × address: ``address`` is the email
    address an emailed invite goes to ("" for calendar channels), so a changed
    address is a new copy and the old one is withdrawn (a CANCEL to the old
    address). ``live`` says a copy may exist out there (an event, or an invite
    not yet cancelled). ``state`` follows :mod:`sync.core.states`.

    The lease makes two attempts on one placement impossible: an action runs
    only after a compare-and-set claim that stores a token unique to that one
    reconcile run, and only the holder of the token records an outcome.
    ``generation`` rises each time calsync withdraws the copy, so the next
    copy gets fresh provider ids; ``in_doubt`` says an earlier attempt's outcome
    is unknown (its answer was lost), so another copy may exist.
    ``attempt_revision`` is the session revision of the latest attempt: a newer
    revision re-arms a placement that failed.
    """

    __tablename__ = "placements"
    __table_args__ = (
        UniqueConstraint("session_id", "user_id", "channel", "address"),
        Index("ix_placements_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(String(200), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(320), default=lambda ctx: _address_of(ctx))
    recipient_email: Mapped[str] = mapped_column(String(320))
    recipient_name: Mapped[str | None] = mapped_column(String(320))
    recipient_timezone: Mapped[str | None] = mapped_column(String(64))
    external_id: Mapped[str | None] = mapped_column(String(1024))
    uid: Mapped[str] = mapped_column(String(255))
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    material_hash: Mapped[str | None] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(Integer, default=0)
    live: Mapped[bool] = mapped_column(Boolean, default=False)
    #: a :class:`sync.core.states.State`
    state: Mapped[str] = mapped_column(String(16), default="pending")
    generation: Mapped[int] = mapped_column(Integer, default=0)
    in_doubt: Mapped[bool] = mapped_column(Boolean, default=False)
    attempt_revision: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    #: Indexed: the sweeper looks for due retries on every run.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class OutboxRow(Base):
    """One send attempt of an invite, claimed before it goes out, so a redelivered
    message does not mail the same attempt again.

    The key is the attempt (placement, session revision, SEQUENCE, METHOD), not
    the content: an edit reverted A → B → A is a third revision and is mailed.
    ``dtstamp`` is kept so the next send to this placement stamps a later one.
    """

    __tablename__ = "outbox"
    __table_args__ = (UniqueConstraint("placement_id", "revision", "sequence", "method"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    placement_id: Mapped[int] = mapped_column(ForeignKey("placements.id", ondelete="CASCADE"), index=True)
    uid: Mapped[str] = mapped_column(String(255))
    revision: Mapped[int] = mapped_column(Integer, default=0)
    sequence: Mapped[int] = mapped_column(Integer)
    dtstamp: Mapped[datetime | None] = mapped_column(UTCDateTime)
    method: Mapped[str] = mapped_column(String(16))
    content_hash: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str] = mapped_column(String(320))
    message_id: Mapped[str | None] = mapped_column(String(255))
    #: claimed | sent
    state: Mapped[str] = mapped_column(String(16), default="claimed")
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SyncLog(Base):
    """Append-only record of every action taken: what, to whom, when, with what result."""

    __tablename__ = "sync_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    session_id: Mapped[str] = mapped_column(String(200), index=True)
    user_id: Mapped[str | None] = mapped_column(String(200), index=True)
    channel: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))
    result: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict | None] = mapped_column(JSON)


class OAuthFlow(Base):
    """A consent in progress, bound to the person by its signed state.

    MSAL's auth-code flow carries the PKCE verifier and nonce, so it must be
    kept server-side between the consent URL and the callback; it is sealed
    like any credential and removed once used.
    """

    __tablename__ = "oauth_flows"

    state: Mapped[str] = mapped_column(String(512), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(16))
    flow: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ConnectLink(Base):
    """A signed, single-use, expiring link a person opens to connect their calendar.

    The URL carries ``id`` and a signature over it; the row says whose link it is,
    where to send the browser afterwards, whether it was used, and which OAuth
    ``state`` the consent it started carries (so the callback finds its link).
    """

    __tablename__ = "connect_links"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(200), index=True)
    #: google | outlook, or None to let the person choose.
    provider: Mapped[str | None] = mapped_column(String(16))
    return_to: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    state: Mapped[str | None] = mapped_column(String(512), index=True)


class WebhookEvent(Base):
    """An event for the platform, written in the transaction of its cause, delivered at least once."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: pending | delivered | dead
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
