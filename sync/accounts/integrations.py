"""Connecting, importing and disconnecting people's calendars.

A change of integration changes a person's channel, so every operation here
ends by re-reconciling that person's sessions: the planner then withdraws the
old copy (a CANCEL, or an event delete) and places the new one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlparse

from cryptography.fernet import InvalidToken
from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationError, field_validator
from sqlalchemy import func, select

from sync.core.sanitize import has_control_chars
from sync.engine.runtime import Runtime
from sync.errors import AuthError, CalsyncError, FieldError, InvalidInput, NotFound
from sync.providers.oauth_state import StateSigner
from sync.store import sessions
from sync.store.crypto import CredentialBox
from sync.store.db import utcnow
from sync.store.integrations import touch_sessions_of
from sync.store.models import Integration, OAuthFlow, Person

#: Providers with a channel in this release.
PROVIDERS = ("google", "outlook")


class ImportedIntegration(BaseModel):
    """One integration a platform already holds (the contract's import JSON)."""

    model_config = ConfigDict(extra="ignore")

    user_id: str = Field(min_length=1, max_length=200)
    provider: str
    account_email: EmailStr | None = None
    calendar_id: str | None = Field(default=None, max_length=1024)
    refresh_token: str = Field(min_length=1, max_length=4096)

    @field_validator("user_id", "calendar_id")
    @classmethod
    def _single_line(cls, value: str | None) -> str | None:
        # Ids are echoed in reports and stored as text: no CR/LF/tab/NUL may forge a line.
        if value is not None and has_control_chars(value):
            raise ValueError("must be a single line without control characters (CR, LF, tab…)")
        return value


def _box(rt: Runtime) -> CredentialBox:
    return CredentialBox([k.get_secret_value() for k in rt.settings.secret_keys])


def signer(rt: Runtime) -> StateSigner:
    return StateSigner(rt.settings.require("secret_keys")[0].get_secret_value())


def _save(rt: Runtime, user_id: str, provider: str, account_email: str | None, calendar_id: str | None,
          secret: dict[str, Any]) -> int:
    sealed = _box(rt).seal(secret)
    with rt.store.tx() as db:
        # Insert-or-nothing, not get-then-add: a booking may create the same person at this
        # moment, and a known email (the platform's) must not be overwritten by the account's.
        from sqlalchemy.dialects import postgresql, sqlite

        insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[db.get_bind().dialect.name]
        db.execute(insert(Person).values(user_id=user_id, email=account_email or "", updated_at=utcnow())
                   .on_conflict_do_nothing(index_elements=[Person.user_id]))
        row = db.scalars(select(Integration).where(Integration.user_id == user_id,
                                                   Integration.provider == provider)).one_or_none()
        if row is None:
            row = Integration(user_id=user_id, provider=provider, credentials=sealed)
            db.add(row)
        # One calendar per person: connecting one provider retires the other.
        for other in db.scalars(select(Integration).where(Integration.user_id == user_id,
                                                          Integration.provider != provider,
                                                          Integration.status == "active")):
            other.status, other.status_reason = "disconnecting", f"replaced by {provider}"
        row.account_email = account_email or row.account_email
        row.calendar_id = calendar_id or row.calendar_id or ("primary" if provider == "google" else None)
        row.credentials = sealed
        row.status, row.status_reason, row.updated_at = "active", None, utcnow()
        db.flush()
        # The person's route changed: every session of theirs owes a re-plan, stored
        # with the change itself so a lost message cannot lose it.
        touch_sessions_of(db, user_id)
        return row.id


def resync_user(rt: Runtime, user_id: str, enqueue: Callable[[str], None]) -> list[str]:
    with rt.store.tx() as db:
        ids = sessions.for_user(db, user_id)
    for session_id in ids:
        enqueue(session_id)
    return ids


@dataclass(frozen=True)
class ImportResult:
    index: int
    user_id: str | None
    ok: bool
    errors: tuple[FieldError, ...] = ()


def _imported_secret(rt: Runtime, data: ImportedIntegration) -> tuple[dict[str, Any], str | None]:
    if data.provider == "outlook":
        from sync.providers import outlook_oauth

        grant = outlook_oauth.from_refresh_token(rt.settings, data.refresh_token)
        return {"token_cache": grant.token_cache}, grant.account_email
    return {"refresh_token": data.refresh_token}, None


def import_integrations(rt: Runtime, items: list[Any], enqueue: Callable[[str], None], *,
                        unqueued: dict[int, str] | None = None) -> list[ImportResult]:
    """Store tokens the platform already holds; each element stands alone.

    Storing an element also records the re-plan of the person's sessions (see
    ``_save``), so its enqueue only wakes a worker early. When a caller passes
    ``unqueued``, a broker that cannot be reached is therefore that element's
    note, not the batch's end: the element is stored and reported, its index
    maps to the broker's error, the next elements are still imported, and the
    sweeper enqueues the sessions once the broker is back. Without
    ``unqueued`` the broker error propagates, as before.
    """
    import redis.exceptions
    from dramatiq.errors import BrokerError

    results = []
    for i, item in enumerate(items):
        prefix = f"[{i}]." if len(items) > 1 else ""
        try:
            if not isinstance(item, dict):
                raise InvalidInput([FieldError("integration", f"expected a JSON object, got {type(item).__name__}")])
            try:
                data = ImportedIntegration.model_validate(item)
            except ValidationError as exc:
                raise InvalidInput([FieldError(".".join(str(p) for p in e["loc"]), e["msg"])
                                    for e in exc.errors()]) from None
            if data.provider not in PROVIDERS:
                reason = f"must be one of {', '.join(PROVIDERS)}, got {data.provider!r}"
                raise InvalidInput([FieldError("provider", reason)])
        except InvalidInput as exc:
            uid = item.get("user_id") if isinstance(item, dict) else None
            results.append(ImportResult(i, uid if isinstance(uid, str) else None, False,
                                        tuple(FieldError(prefix + e.field, e.reason) for e in exc.errors)))
            continue
        try:
            secret, account = _imported_secret(rt, data)
        except AuthError as exc:
            results.append(ImportResult(i, data.user_id, False, (FieldError(prefix + "refresh_token", str(exc)),)))
            continue
        _save(rt, data.user_id, data.provider, data.account_email or account, data.calendar_id, secret)
        try:
            resync_user(rt, data.user_id, enqueue)
        except (BrokerError, redis.exceptions.RedisError, OSError) as exc:
            if unqueued is None:
                raise
            text = str(exc).strip()
            unqueued[i] = text.splitlines()[0] if text else type(exc).__name__
        results.append(ImportResult(i, data.user_id, True))
    return results


def connect_url(rt: Runtime, user_id: str, provider: str) -> tuple[str, str]:
    """The consent URL to send the person to, and the state that identifies the flow."""
    if provider not in PROVIDERS:
        raise InvalidInput([FieldError("provider", f"must be one of {', '.join(PROVIDERS)}")])
    sign = signer(rt)
    state = sign.sign(user_id, provider)
    with rt.store.tx() as db:
        person = db.get(Person, user_id)
        hint = person.email if person and person.email else None
    if provider == "outlook":
        from sync.providers import outlook_oauth

        url, flow = outlook_oauth.start(rt.settings, state, hint)
        st = sign.verify(state)
        with rt.store.tx() as db:
            db.add(OAuthFlow(state=state, user_id=user_id, provider=provider, flow=_box(rt).seal(flow),
                             expires_at=datetime.fromtimestamp(st.expires, timezone.utc)))
        return url, state
    from sync.providers import google_oauth

    return google_oauth.consent_url(rt.settings, state, sign.verifier(sign.verify(state)), hint), state


def _callback(pasted: str, state: str | None) -> tuple[dict[str, str], str]:
    """The code and state out of what was pasted.

    A redirected URL (or its ``?query``) carries both. A bare code carries no
    state, and the state is what says whose consent this is (and derives the
    PKCE verifier), so a bare code is taken only with ``state``: the one this
    same command just issued, when the person consented to the URL it printed.
    """
    pasted = pasted.strip()
    if "://" in pasted or pasted.startswith("?"):
        query = {k: v[0] for k, v in parse_qs(urlparse(pasted).query).items()}
        if "error" in query:
            raise InvalidInput([FieldError("callback", f"consent refused: {query['error']}")])
    elif state is None:
        raise InvalidInput([FieldError("callback", "a bare code does not say whose consent it is: give the whole "
                                                   "redirected URL (its state names the person)")])
    else:
        query = {"code": pasted}
    query.setdefault("state", state or "")
    if not query.get("code") or not query["state"]:
        raise InvalidInput([FieldError("callback", "needs the code and state: give the whole redirected URL")])
    return query, query["state"]


def complete_connect(rt: Runtime, pasted: str, enqueue: Callable[[str], None], *, state: str | None = None,
                     user_id: str | None = None, provider: str | None = None) -> int:
    """Finish a connect from the redirected URL (or a bare code with the state we issued).

    ``user_id`` and ``provider`` are who the caller is connecting (the CLI
    always says): the signed state must name the same, or nothing happens. A
    redirect is a bearer of someone's consent, and without this check pasting
    another person's redirect into this person's command would connect the
    other person while reporting this one connected. The check comes before
    the code is exchanged, so a refused redirect still works for its owner.
    """
    query, state = _callback(pasted, state)
    sign = signer(rt)
    st = sign.verify(state)
    if user_id is not None and st.user_id != user_id:
        raise InvalidInput([FieldError("callback", f"this consent was given for {st.user_id!r}, not {user_id!r}; "
                                                   "nothing changed")])
    if provider is not None and st.provider != provider:
        raise InvalidInput([FieldError("callback", f"this consent is for {st.provider}, not {provider}; "
                                                   "nothing changed")])
    if st.provider == "outlook":
        from sync.providers import outlook_oauth

        with rt.store.tx() as db:
            row = db.get(OAuthFlow, state)
            if row is None:
                raise InvalidInput([FieldError("state", "no connect in progress for it (already used?)")])
            flow = _box(rt).open(row.flow)
            db.delete(row)
        grant = outlook_oauth.finish(rt.settings, flow, query)
        secret: dict[str, Any] = {"token_cache": grant.token_cache}
    else:
        from sync.providers import google_oauth

        g = google_oauth.exchange_code(rt.settings, st, query["code"], sign.verifier(st))
        grant, secret = g, {"refresh_token": g.refresh_token}
    integration_id = _save(rt, st.user_id, st.provider, grant.account_email, None, secret)
    resync_user(rt, st.user_id, enqueue)
    return integration_id


def disconnect(rt: Runtime, user_id: str, reconcile_now: Callable[[str], object]) -> dict[str, Any]:
    """Withdraw the person's calendar events, then revoke the token, and route them to email.

    The integration goes ``disconnecting`` (a route to email that may still use
    its credentials) together with the re-plan of every session of theirs, in
    one transaction; each session is then reconciled now. The credentials are
    kept until every copy is withdrawn: a copy whose delete failed (a 5xx, a
    timeout) is retried with backoff like any other, and :func:`finish_disconnects`
    — here, and on every sweep — revokes and wipes once nothing is left. A grant
    that is already dead cannot delete anything, so it settles at once.
    """
    with rt.store.tx() as db:
        rows = list(db.scalars(select(Integration).where(Integration.user_id == user_id,
                                                         Integration.status != "disconnected")))
        if not rows:
            raise NotFound(f"{user_id!r} has no connected calendar")
        for row in rows:
            if row.status == "active":
                row.status, row.status_reason = "disconnecting", "disconnect requested"
            elif row.status == "needs_reconnect":
                row.status, row.status_reason, row.credentials = "disconnected", "disconnected by support", b""
        touch_sessions_of(db, user_id)
        ids = sessions.for_user(db, user_id)
    for session_id in ids:
        reconcile_now(session_id)
    # One person may have two integrations disconnecting (one replaced earlier, one now).
    done = finish_disconnects(rt, user_id)
    remaining = sum(d["remaining"] for d in done)
    return {"user_id": user_id, "sessions": ids, "revoked": any(d["revoked"] for d in done),
            "status": "disconnecting" if remaining else "disconnected", "remaining": remaining}


def finish_disconnects(rt: Runtime, user_id: str | None = None) -> list[dict[str, Any]]:
    """Revoke and wipe every ``disconnecting`` integration whose copies are all withdrawn.

    Returns one entry per disconnecting integration looked at: finished (with
    whether the token was revoked) or the number of copies still to withdraw.
    """
    from sync.providers import google_oauth
    from sync.store.models import Placement

    with rt.store.tx() as db:
        stmt = select(Integration).where(Integration.status == "disconnecting")
        if user_id is not None:
            stmt = stmt.where(Integration.user_id == user_id)
        pending = [(row.id, row.user_id, row.provider, row.credentials) for row in db.scalars(stmt)]
        live = {(uid, channel): n for uid, channel, n in db.execute(
            select(Placement.user_id, Placement.channel, func.count())
            .where(Placement.live.is_(True), Placement.user_id.in_([p[1] for p in pending]))
            .group_by(Placement.user_id, Placement.channel))}
    results = []
    for iid, uid, provider, sealed in pending:
        remaining = live.get((uid, provider), 0)
        if remaining:
            results.append({"user_id": uid, "provider": provider, "remaining": remaining, "revoked": False})
            continue
        try:
            token = _box(rt).open(sealed).get("refresh_token")
        except CalsyncError:  # unreadable: nothing we can revoke
            token = None
        revoked = bool(token and provider == "google" and google_oauth.revoke(rt.settings, token))
        with rt.store.tx() as db:
            row = db.get(Integration, iid)
            if row is not None and row.status == "disconnecting":
                row.status, row.status_reason, row.credentials = "disconnected", "disconnected by support", b""
        results.append({"user_id": uid, "provider": provider, "remaining": 0, "revoked": revoked})
    return results


def list_integrations(rt: Runtime, status: str | None = None) -> list[dict[str, Any]]:
    with rt.store.tx() as db:
        stmt = select(Integration).order_by(Integration.user_id)
        if status:
            stmt = stmt.where(Integration.status == status)
        return [{"user_id": r.user_id, "provider": r.provider, "account_email": r.account_email,
                 "calendar_id": r.calendar_id, "status": r.status, "reason": r.status_reason,
                 "updated_at": r.updated_at.isoformat()} for r in db.scalars(stmt)]


def rotate_keys(rt: Runtime) -> dict[str, int]:
    """Re-encrypt every stored credential under the first of CALSYNC_SECRET_KEYS.

    Run after prepending a new key; once it reports nothing unreadable, the
    old key can be dropped from the list. Rows no key opens are counted, not
    touched: their people will show up as needing a reconnect.
    """
    box = _box(rt)
    counts = {"rotated": 0, "unreadable": 0}
    with rt.store.tx() as db:
        for row in db.scalars(select(Integration).where(Integration.credentials != b"")):
            try:
                row.credentials = box.rotate(row.credentials)
                counts["rotated"] += 1
            except InvalidToken:
                counts["unreadable"] += 1
        for flow in db.scalars(select(OAuthFlow)):
            try:
                flow.flow = box.rotate(flow.flow)
            except InvalidToken:
                db.delete(flow)  # a half-finished consent under a dropped key: start it again
    return counts
