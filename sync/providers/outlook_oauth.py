"""Connecting an Outlook mailbox through MSAL: auth-code flow with PKCE, and imported refresh tokens.

What is kept is MSAL's token cache, never a bare refresh token: MSAL rotates
refresh tokens on use and knows which account they belong to.
"""

from __future__ import annotations

from typing import Any

import msal
import requests

from sync.config import Settings
from sync.errors import AuthError, TransientError
from sync.providers.connector import Grant
from sync.providers.outlook import SCOPES, auth_failure, http_session, new_app


def _grant(cache: msal.SerializableTokenCache, result: dict[str, Any] | None, what: str) -> Grant:
    if not result or "access_token" not in result:
        raise auth_failure(result, what)
    claims = result.get("id_token_claims") or {}
    email = claims.get("preferred_username") or claims.get("email")
    return Grant({"token_cache": cache.serialize()}, email if isinstance(email, str) else None)


def _app(settings: Settings, cache: msal.SerializableTokenCache | None = None) -> msal.ConfidentialClientApplication:
    try:
        return new_app(settings, http_session(settings), {}, cache)
    except (requests.RequestException, ValueError) as exc:
        raise TransientError(f"Microsoft identity platform unreachable: {type(exc).__name__}") from None


def start(settings: Settings, state: str, login_hint: str | None) -> tuple[str, dict[str, Any]]:
    """The consent URL and the flow to keep server-side until the callback."""
    flow = _app(settings).initiate_auth_code_flow(SCOPES, redirect_uri=settings.ms_redirect_uri, state=state,
                                                  login_hint=login_hint)
    if "auth_uri" not in flow:
        raise AuthError(f"Microsoft refused to start the flow: {flow.get('error', 'unknown')}")
    return flow["auth_uri"], flow


def finish(settings: Settings, flow: dict[str, Any], auth_response: dict[str, str]) -> Grant:
    cache = msal.SerializableTokenCache()
    try:
        result = _app(settings, cache).acquire_token_by_auth_code_flow(flow, auth_response, scopes=SCOPES)
    except ValueError as exc:  # MSAL's own state/nonce mismatch checks
        raise AuthError(f"the Microsoft callback does not match the flow: {exc}") from None
    return _grant(cache, result, "exchanging the code")


def from_refresh_token(settings: Settings, refresh_token: str) -> Grant:
    """For platforms that already hold refresh tokens: MSAL's documented migration path."""
    cache = msal.SerializableTokenCache()
    result = _app(settings, cache).acquire_token_by_refresh_token(refresh_token, scopes=SCOPES)
    return _grant(cache, result, "importing the refresh token")


class OutlookConnector:
    """Microsoft's OAuth for :mod:`sync.accounts`: MSAL makes its own PKCE pair and keeps it in
    the flow, which calsync seals and stores until the callback."""

    provider = "outlook"
    keeps_flow = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def start(self, state: str, verifier: str, login_hint: str | None) -> tuple[str, dict[str, Any] | None]:
        return start(self.settings, state, login_hint)

    def finish(self, flow: dict[str, Any] | None, callback: dict[str, str], verifier: str) -> Grant:
        if flow is None:
            raise AuthError("no Microsoft flow was kept for this consent; start the connect again")
        return finish(self.settings, flow, callback)

    def import_token(self, refresh_token: str) -> Grant:
        return from_refresh_token(self.settings, refresh_token)

    def revoke(self, secret: dict[str, Any]) -> bool:
        # Microsoft has no endpoint that revokes one refresh token; the stored cache is wiped instead.
        return False
