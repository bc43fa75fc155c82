"""Connecting a Google account: consent URL, code exchange, revocation (Google's connector).

Scope ``calendar.events.owned`` is the narrowest that writes events into the
person's own calendars; ``openid email`` tells us which account they chose.
``access_type=offline`` with ``prompt=consent`` is what makes Google hand out a
refresh token on every connect, including a reconnect.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any
from urllib.parse import urlencode

import requests

from sync.config import Settings
from sync.errors import AuthError, TransientError
from sync.providers.connector import Grant
from sync.providers.google import SCOPES


def challenge(verifier: str) -> str:
    """The S256 code_challenge for a PKCE verifier (RFC 7636 §4.2)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def consent_url(settings: Settings, state: str, verifier: str, login_hint: str | None = None) -> str:
    params = {
        "client_id": settings.require("google_client_id"),
        "redirect_uri": settings.google_redirect_uri,
        "response_type": "code",
        "scope": " ".join(SCOPES),
        "access_type": "offline",
        "prompt": "consent",
        "include_granted_scopes": "true",
        "state": state,
        "code_challenge": challenge(verifier),
        "code_challenge_method": "S256",
    }
    if login_hint:
        params["login_hint"] = login_hint
    return f"{settings.google_auth_url}?{urlencode(params)}"


def _email_from_id_token(id_token: str | None) -> str | None:
    # Received straight from the token endpoint over TLS, so (OIDC Core §3.1.3.7)
    # the signature need not be checked to read which account was chosen.
    if not id_token or id_token.count(".") != 2:
        return None
    payload = id_token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None
    email = claims.get("email")
    return email if isinstance(email, str) else None


def exchange_code(settings: Settings, code: str, verifier: str) -> Grant:
    try:
        resp = requests.post(settings.google_token_url, data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": settings.google_redirect_uri,
            "client_id": settings.require("google_client_id"),
            "client_secret": settings.require("google_client_secret"), "code_verifier": verifier,
        }, timeout=settings.io_timeout_seconds)
    except requests.RequestException as exc:
        raise TransientError(f"Google token endpoint unreachable: {type(exc).__name__}") from None
    try:
        body = resp.json()
    except ValueError:
        raise TransientError(f"Google token endpoint answered {resp.status_code} without JSON") from None
    if resp.status_code != 200:
        raise AuthError(f"Google refused the code: {body.get('error', resp.status_code)}", status=resp.status_code)
    if not body.get("refresh_token"):
        raise AuthError("Google returned no refresh token; remove calsync's access in the Google account "
                        "and connect again")
    email = _email_from_id_token(body.get("id_token")) or _userinfo_email(settings, body.get("access_token"))
    return Grant({"refresh_token": body["refresh_token"]}, email)


def _userinfo_email(settings: Settings, access_token: str | None) -> str | None:
    if not access_token:
        return None
    try:
        resp = requests.get(settings.google_userinfo_url, headers={"Authorization": f"Bearer {access_token}"},
                            timeout=settings.io_timeout_seconds)
        email = resp.json().get("email") if resp.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None
    return email if isinstance(email, str) else None


def revoke(settings: Settings, refresh_token: str) -> bool:
    """Best effort: a token that is already dead cannot be revoked, and that is fine."""
    try:
        resp = requests.post(settings.google_revoke_url, data={"token": refresh_token},
                             timeout=settings.io_timeout_seconds)
    except requests.RequestException:
        return False
    return resp.status_code == 200


class GoogleConnector:
    """Google's OAuth for :mod:`sync.accounts`: nothing is kept between consent and callback,
    because the PKCE verifier is derived from the signed state."""

    provider = "google"
    keeps_flow = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def start(self, state: str, verifier: str, login_hint: str | None) -> tuple[str, dict[str, Any] | None]:
        return consent_url(self.settings, state, verifier, login_hint), None

    def finish(self, flow: dict[str, Any] | None, callback: dict[str, str], verifier: str) -> Grant:
        return exchange_code(self.settings, callback["code"], verifier)

    def import_token(self, refresh_token: str) -> Grant:
        # A Google refresh token is used as is; which account it is shows on first use.
        return Grant({"refresh_token": refresh_token}, None)

    def revoke(self, secret: dict[str, Any]) -> bool:
        token = secret.get("refresh_token")
        return bool(token) and revoke(self.settings, token)
