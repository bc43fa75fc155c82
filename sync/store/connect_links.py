"""Connect-link rows and their one signer, below every layer that hands links out.

``sync.accounts.links`` creates and opens links for the platform and support;
the engine creates one when an integration needs a reconnect (the webhook and
the reconnect email carry it). Both sign here, so there is one signer and one
key derivation: a link id plus an HMAC over it under a key derived from each
``CALSYNC_SECRET_KEYS`` entry (the first signs, every one verifies).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session as Db

from sync.store.db import utcnow
from sync.store.models import ConnectLink

_CONTEXT = b"calsync-connect-link\0"


def signing_keys(secret_keys: Iterable[str]) -> list[bytes]:
    """One link-signing key per secret key, in order (derived, so links never reveal a credential key)."""
    return [hashlib.sha256(_CONTEXT + k.encode()).digest() for k in secret_keys]


def sign(key: bytes, link_id: str) -> str:
    return hmac.new(key, link_id.encode(), hashlib.sha256).hexdigest()[:32]


def create(db: Db, *, user_id: str, provider: str | None, return_to: str | None, keys: list[bytes],
           base_url: str, ttl: timedelta) -> tuple[str, datetime, str]:
    """Add a link row in the caller's transaction; returns (url, expires_at, id). Inputs are the caller's to check."""
    link_id = secrets.token_urlsafe(18)
    expires = utcnow() + ttl
    db.add(ConnectLink(id=link_id, user_id=user_id, provider=provider, return_to=return_to, expires_at=expires))
    return f"{base_url.rstrip('/')}/connect/{link_id}.{sign(keys[0], link_id)}", expires, link_id
