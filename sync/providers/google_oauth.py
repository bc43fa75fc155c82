"""Connecting a Google account: consent URL, code exchange, revocation.

Scope ``calendar.events.owned`` is the narrowest that writes events into the
person's own calendars; ``openid email`` tells us which account they chose.
``access_type=offline`` with ``prompt=consent`` is what makes Google hand out a
refresh token on every connect, including a reconnect.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from urllib.parse import urlencode

import requests

from sync.config import Settings
from sync.errors import AuthError, TransientError
from sync.providers.google import SCOPES
from sync.providers.oauth_state import State, challenge


@dataclass(frozen=True)
class Grant:
    refresh_token: str
    account_email: str | None


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


def exchange_code(settings: Settings, state: State, code: str, verifier: str) -> Grant:
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
    return Grant(body["refresh_token"], email)


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
