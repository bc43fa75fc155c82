"""Connect links: the signed, single-use, expiring URL a person opens to connect their calendar.

The platform asks for one (``POST /v1/people/{id}/connect-links``, or support
staff with ``calsync integrations link``) and shows or mails it. The URL holds a
random id and an HMAC over it under a key derived from ``CALSYNC_SECRET_KEYS``,
so it cannot be forged or altered; the row says whose link it is, until when it
works, where the browser goes afterwards, and whether it was used. Every key in
the list verifies (rotation); the first signs.

A link is spent when a consent started from it completes. Until then it may be
opened again (a person who closed the consent tab can start over).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import update

from sync.accounts.connect import complete_connect, connect_url
from sync.core.sanitize import has_control_chars
from sync.engine.runtime import Runtime
from sync.errors import CalsyncError, FieldError, InvalidInput
from sync.providers.connector import PROVIDERS
from sync.store import connect_links
from sync.store.db import utcnow
from sync.store.models import ConnectLink


class LinkRefused(CalsyncError):
    """The link cannot be used; ``reason`` is what the person is told (expired, used, not valid)."""

    def __init__(self, reason: str, *, kind: str) -> None:
        self.kind = kind
        super().__init__(reason)


@dataclass(frozen=True)
class Link:
    url: str
    expires_at: datetime
    #: The link's id (the part of the URL before the signature).
    id: str


@dataclass(frozen=True)
class OpenLink:
    """A valid, unused link as its page needs it."""

    id: str
    user_id: str
    provider: str | None
    return_to: str | None


def _keys(rt: Runtime) -> list[bytes]:
    return connect_links.signing_keys(k.get_secret_value() for k in rt.settings.require("secret_keys"))


_sign = connect_links.sign


def check_return_to(rt: Runtime, return_to: str | None) -> str | None:
    """``return_to`` if it is an http(s) URL on a host in CALSYNC_RETURN_HOSTS.

    Raises:
      InvalidInput: naming ``return_to``; an open redirect is how phishing borrows a trusted link.
    """
    if return_to is None:
        return None
    parts = urlsplit(return_to)
    allowed = {h.lower() for h in rt.settings.return_hosts}
    if has_control_chars(return_to) or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput([FieldError("return_to", "must be an http:// or https:// URL")])
    if parts.hostname.lower() not in allowed:
        raise InvalidInput([FieldError("return_to", f"host {parts.hostname!r} is not in CALSYNC_RETURN_HOSTS")])
    return return_to


def create_link(rt: Runtime, user_id: str, provider: str | None = None, return_to: str | None = None) -> Link:
    """A new connect link for ``user_id`` (who need not be known yet: the platform may link first).

    Raises:
      InvalidInput: a bad ``user_id``, ``provider`` or ``return_to``, naming the field.
    """
    errors = []
    if not user_id or len(user_id) > 200 or has_control_chars(user_id):
        errors.append(FieldError("user_id", "must be 1-200 characters on one line"))
    if provider is not None and provider not in PROVIDERS:
        errors.append(FieldError("provider", f"must be one of {', '.join(PROVIDERS)} or null"))
    try:
        return_to = check_return_to(rt, return_to)
    except InvalidInput as exc:
        errors.extend(exc.errors)
    if errors:
        raise InvalidInput(errors)
    keys = _keys(rt)
    with rt.store.tx() as db:
        url, expires, link_id = connect_links.create(
            db, user_id=user_id, provider=provider, return_to=return_to, keys=keys, base_url=rt.settings.base_url,
            ttl=timedelta(seconds=rt.settings.connect_link_ttl_seconds))
    return Link(url, expires, link_id)


def open_link(rt: Runtime, token: str) -> OpenLink:
    """The link behind ``token``, if it is genuine, unexpired and unused.

    Raises:
      LinkRefused: ``kind`` is ``invalid`` (forged, altered, unknown), ``expired`` or ``used``.
    """
    link_id, _, mac = token.partition(".")
    if not link_id or not mac or not any(hmac.compare_digest(mac, _sign(k, link_id)) for k in _keys(rt)):
        raise LinkRefused("This link is not valid. Ask for a new one.", kind="invalid")
    with rt.store.tx() as db:
        row = db.get(ConnectLink, link_id)
        if row is None:
            raise LinkRefused("This link is not valid. Ask for a new one.", kind="invalid")
        return _usable(row)


def _usable(row: ConnectLink) -> OpenLink:
    if row.used_at is not None:
        raise LinkRefused("This link was already used to connect a calendar. Ask for a new one if you want to "
                          "connect another.", kind="used")
    if row.expires_at <= utcnow():
        raise LinkRefused("This link has expired. Ask for a new one.", kind="expired")
    return OpenLink(row.id, row.user_id, row.provider, row.return_to)


def start_consent(rt: Runtime, link: OpenLink, provider: str) -> str:
    """The provider's consent URL for this link's person; the consent's state is kept on the link."""
    if link.provider is not None and provider != link.provider:
        raise InvalidInput([FieldError("provider", f"this link is for {link.provider}")])
    if provider not in PROVIDERS:
        raise InvalidInput([FieldError("provider", f"must be one of {', '.join(PROVIDERS)}")])
    url, state = connect_url(rt, link.user_id, provider)
    with rt.store.tx() as db:
        row = db.get(ConnectLink, link.id)
        assert row is not None
        row.state = state
    return url


def finish_consent(rt: Runtime, provider: str, callback_url: str, state: str, browser_link: str | None,
                   enqueue: Callable[[str], None]) -> OpenLink:
    """Complete the consent that came back to ``/oauth/{provider}/callback`` and spend its link.

    ``browser_link`` is the link id this browser opened (its cookie): a callback
    carrying the state of a consent started in another browser, for another
    person, connects nobody.

    Raises:
      LinkRefused: no link started this consent, or it is used or expired, or another browser started it.
      InvalidInput: the provider said the consent was refused, or the callback is malformed.
      AuthError / TransientError: the code exchange failed.
    """
    with rt.store.tx() as db:
        row = db.query(ConnectLink).filter(ConnectLink.state == state).one_or_none() if state else None
        if row is None:
            raise LinkRefused("This sign-in did not start from a connect link, or a newer one replaced it. "
                              "Open your connect link again.", kind="invalid")
        link = _usable(row)
    if browser_link is None or not hmac.compare_digest(browser_link, link.id):
        raise LinkRefused("This sign-in was started in another browser. Open your connect link again here.",
                          kind="invalid")
    complete_connect(rt, callback_url, enqueue, user_id=link.user_id, provider=provider)
    with rt.store.tx() as db:
        db.execute(update(ConnectLink).where(ConnectLink.id == link.id, ConnectLink.used_at.is_(None))
                   .values(used_at=utcnow(), state=None))
    return link
