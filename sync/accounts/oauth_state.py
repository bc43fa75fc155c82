"""Signed OAuth ``state`` and the PKCE verifier derived from it.  (pure)

The state names the person and provider and is HMAC-signed with a key derived
from ``CALSYNC_SECRET_KEYS``, so a callback cannot attach someone else's
calendar to a person. The PKCE verifier is derived from the same secret and
the state's nonce, so no server-side flow table is needed between the consent
URL and the callback, and the verifier never travels through the browser.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from sync.errors import FieldError, InvalidInput

#: How long a consent URL stays valid, in seconds.
STATE_TTL = 15 * 60


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class State:
    user_id: str
    provider: str
    nonce: str
    expires: int


class StateSigner:
    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"calsync-oauth-state\0" + secret.encode()).digest()

    def sign(self, user_id: str, provider: str, *, now: float | None = None) -> str:
        payload = {"u": user_id, "p": provider, "n": secrets.token_urlsafe(16),
                   "e": int((now or time.time()) + STATE_TTL)}
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{_b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())}"

    def verify(self, state: str, *, now: float | None = None) -> State:
        body, _, mac = state.partition(".")
        expected = _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())
        if not mac or not hmac.compare_digest(mac, expected):
            raise InvalidInput([FieldError("state", "signature does not match; start the connect flow again")])
        data = json.loads(_unb64(body))
        if data["e"] < (now or time.time()):
            raise InvalidInput([FieldError("state", "expired; start the connect flow again")])
        return State(data["u"], data["p"], data["n"], data["e"])

    def verifier(self, state: State) -> str:
        """PKCE code_verifier (43 chars, RFC 7636 §4.1) bound to this state."""
        return _b64(hmac.new(self._key, f"pkce\0{state.nonce}".encode(), hashlib.sha256).digest())
