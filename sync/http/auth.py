"""Bearer tokens for ``/v1``: any of CALSYNC_API_TOKENS, compared in constant time.

Several tokens are accepted at once so the platform can rotate without a
gap: add the new token, move the platform to it, drop the old one. With no
token configured every call is refused, never let through.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False, description="One of CALSYNC_API_TOKENS.")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def require_token(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Refuse the request (401) unless it carries a configured token."""
    given = credentials.credentials.encode() if credentials is not None else b""
    tokens = [t.get_secret_value().encode() for t in request.app.state.runtime().settings.api_tokens]
    # Compare against every token, always, so the time taken says nothing about which matched.
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(given, token)
    if not given or not matched:
        raise HTTPException(401, "missing or wrong bearer token", headers=_CHALLENGE)
