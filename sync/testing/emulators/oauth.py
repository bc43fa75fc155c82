"""The OAuth 2.0 authorization server both emulators run: one flow, two providers' wording.

Google's and Microsoft's sign-in follow the same RFC 6749 authorization-code flow with PKCE
(RFC 7636) and refresh tokens, and calsync's channels drive both the same way: a consent URL,
a redirect with ``code`` and ``state``, a code exchange, refreshes until the grant dies. So the
flow — client checks, the consent page that redirects at once, code expiry and one-time use,
redirect-URI binding, PKCE, refresh grants, token death — is written once here, in
:class:`OAuthServer`. A provider subclass says only what differs:

- its wording: :attr:`OAuthServer.wording` maps each failure the flow can meet to the
  provider's status, ``error``, error code (AADSTS number on Microsoft) and description;
- what a token response carries (:meth:`OAuthServer.refresh_tokens`,
  :meth:`OAuthServer.code_tokens`) and what the redirect after consent carries
  (:meth:`OAuthServer.consent_params`);
- how an :class:`OAuthError` is rendered (:meth:`OAuthServer.oauth_response`).

Tests set the consent outcome with ``consent_decision`` ("allow" / "deny") and whose browser
consents with ``consent_user`` (else the ``login_hint``, else the first user).
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import unquote, urlencode, urlsplit

from .server import EmulatorServer, Request, Response

__all__ = ["AccessToken", "AuthCode", "Failure", "Grant", "OAuthError", "OAuthServer", "pkce_matches"]

#: Lifetime of access tokens and of authorization codes, in seconds on the emulator's ``clock``.
TOKEN_LIFETIME = 3600
CODE_LIFETIME = 600.0


class OAuthError(Exception):
    """A failure of the flow: ``error`` is the OAuth error; ``code`` the provider's number (AADSTS), if any.

    ``page`` marks failures of the browser-facing consent endpoint, answered as an HTML page
    because there is no redirect URI to send them to (or it cannot be trusted).
    """

    def __init__(self, status: int, error: str, description: str, code: int | None = None,
                 suberror: str | None = None, page: bool = False) -> None:
        super().__init__(description)
        self.status, self.error, self.description, self.code = status, error, description, code
        self.suberror, self.page = suberror, page


@dataclass(frozen=True)
class Failure:
    """Why a grant died: what its refresh answers from then on.

    ``description`` may name ``{issued}``, ``{now}`` and ``{client}``, filled in when it is raised
    (Microsoft's messages quote the grant's issue time and the client id).
    """

    status: int
    error: str
    description: str
    code: int | None = None
    suberror: str | None = None


@dataclass
class Grant:
    """What a user consented to for a client; refresh tokens point at it."""

    email: str
    client_id: str | None  # None: usable by any client (tokens a platform imported)
    scopes: tuple[str, ...]
    refresh_token: str | None = None  # the first one issued (Google issues only that one)
    failure: Failure | None = None  # set: the grant is dead, its refresh answers this
    issued_at: float = field(default_factory=time.time)  # wall clock: it is quoted in error text


@dataclass
class AccessToken:
    email: str | None  # None: an app-only token
    client_id: str | None
    scopes: tuple[str, ...]
    expires_at: float  # on the emulator's clock
    grant: Grant | None = None


@dataclass
class AuthCode:
    email: str
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    challenge: str | None
    challenge_method: str
    expires_at: float
    nonce: str | None = None  # OIDC: echoed in the id_token (Microsoft)
    offline: bool = True  # Google: access_type=offline, else no refresh token
    force_consent: bool = False  # Google: prompt=consent
    used: bool = False


def pkce_matches(verifier: str | None, challenge: str, method: str) -> bool:
    """RFC 7636 §4.6: does the token request's verifier answer the consent's challenge?"""
    if not verifier:
        return False
    if method == "S256":
        verifier = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return secrets.compare_digest(verifier.encode(), challenge.encode())


_AUTHORIZE_PARAMS = ("client_id", "redirect_uri", "response_type", "scope", "state", "nonce", "code_challenge",
                     "code_challenge_method", "login_hint", "prompt", "access_type", "client_info", "response_mode")


class OAuthServer(EmulatorServer):
    """An :class:`EmulatorServer` that is also an OAuth authorization server (see the module docstring)."""

    #: failure -> (status, error, code or None, description); descriptions may name {client_id},
    #: {name}, {email}, {tenant}, {method}, {grant_type}, {redirect_uri}, {expected}.
    wording: ClassVar[dict[str, tuple[int, str, int | None, str]]] = {}
    #: parameters the consent endpoint cannot do without (answered as an error page).
    authorize_required: ClassVar[tuple[str, ...]] = ("client_id", "redirect_uri", "response_type", "scope")
    #: how the consent endpoint may answer (``response_mode``); the first is the default.
    response_modes: ClassVar[tuple[str, ...]] = ("query",)
    #: a token request must name its client even where no client is registered (Microsoft).
    require_client_id: ClassVar[bool] = False
    code_prefix: ClassVar[str] = "code-"
    access_prefix: ClassVar[str] = "access-"
    refresh_prefix: ClassVar[str] = "refresh-"

    def __init__(self, **kwargs: Any) -> None:
        #: Registered OAuth clients; empty means any client id and secret is accepted.
        self.clients: dict[str, dict[str, Any]] = {}
        #: "allow", "deny" (redirect back with error=access_denied), or "ask": a page with Allow and
        #: Deny links for a real browser to click (the browser tests' consent screen).
        self.consent_decision: str = "allow"
        self.consent_user: str | None = None  # who consents when no login_hint is given
        self._users: dict[str, Any] = {}  # lower-case email -> the provider's user record
        self._grants: list[Grant] = []
        self._refresh: dict[str, Grant] = {}
        self._access: dict[str, AccessToken] = {}
        self._codes: dict[str, AuthCode] = {}
        super().__init__(**kwargs)

    def add_client(self, client_id: str, client_secret: str | None = None,
                   redirect_uris: tuple[str, ...] | None = None) -> None:
        """Register an OAuth client; once any is registered, unknown clients are refused."""
        with self.lock:
            self.clients[client_id] = {"secret": client_secret, "redirect_uris": redirect_uris}

    # ---- provider hooks --------------------------------------------------------------------

    def normalize_scopes(self, scope: str | None) -> tuple[str, ...]:
        """The scopes a ``scope`` parameter names, deduplicated, in order."""
        out: list[str] = []
        for s in (scope or "").split():
            if s not in out:
                out.append(s)
        return tuple(out)

    def access_scopes(self, scopes: tuple[str, ...] | list[str]) -> tuple[str, ...]:
        """What an access token records of the scopes it was issued for."""
        return tuple(scopes)

    def refresh_tokens(self, req: Request, form: dict[str, str], grant: Grant, client_id: str | None) -> Response:
        raise NotImplementedError

    def code_tokens(self, req: Request, form: dict[str, str], code: AuthCode, client_id: str | None) -> Response:
        raise NotImplementedError

    def consent_params(self, code: str, auth: AuthCode, state: str | None, client_info: bool) -> dict[str, str | None]:
        """What the redirect after a granted consent carries besides ``code``."""
        return {"state": state}

    def grant_types(self) -> dict[str, Callable[[Request, dict[str, str], str | None, dict[str, str]], Response]]:
        """Token endpoint grants: ``grant_type`` -> handler(req, form, client_id, context)."""
        return {"refresh_token": self._refresh_grant, "authorization_code": self._code_grant}

    def oauth_response(self, e: OAuthError, req: Request) -> Response:
        """The provider's shape of an OAuth error (JSON, or an HTML page for ``page`` errors)."""
        raise NotImplementedError

    # ---- tokens ----------------------------------------------------------------------------

    def fail(self, situation: str, **context: Any) -> OAuthError:
        """The provider's error for a failure of the flow, in its wording."""
        status, error, code, description = self.wording[situation]
        return OAuthError(status, error, description.format(**context), code)

    def _new_refresh(self, grant: Grant, token: str | None = None) -> str:
        rt = token or self.refresh_prefix + secrets.token_urlsafe(32)
        self._refresh[rt] = grant
        if grant.refresh_token is None:
            grant.refresh_token = rt
        return rt

    def _new_grant(self, email: str, client_id: str | None, scopes: tuple[str, ...]) -> Grant:
        grant = Grant(email, client_id, scopes)
        self._grants.append(grant)
        return grant

    def _new_access(self, email: str | None, client_id: str | None, scopes: tuple[str, ...] | list[str],
                    grant: Grant | None) -> str:
        tok = self.access_prefix + secrets.token_urlsafe(32)
        self._access[tok] = AccessToken(email, client_id, self.access_scopes(scopes),
                                        self.clock() + TOKEN_LIFETIME, grant)
        return tok

    def _bearer(self, req: Request) -> AccessToken | None:
        """The live access token of an ``Authorization: Bearer`` header, if any."""
        auth = req.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return None
        return self._live_access(auth[7:].strip())

    def _live_access(self, token: str) -> AccessToken | None:
        at = self._access.get(token)
        if at is None or at.expires_at <= self.clock():
            return None
        return at

    def _kill(self, grants: list[Grant], failure: Failure, *, access_too: bool) -> list[Grant]:
        """The grants die with ``failure``; with ``access_too`` their live access tokens stop working at once."""
        with self.lock:
            for grant in grants:
                grant.failure = failure
            if access_too:
                for tok, at in list(self._access.items()):
                    if any(at.grant is g for g in grants):
                        del self._access[tok]
            return grants

    def _grants_of(self, token_or_email: str) -> list[Grant]:
        """The grant behind a refresh or access token, else every grant of the user with that email."""
        grant = self._refresh.get(token_or_email)
        if grant is None and token_or_email in self._access:
            grant = self._access[token_or_email].grant
        if grant is not None:
            return [grant]
        email = token_or_email.lower()
        return [g for g in self._grants if g.email == email]

    def _drop_access(self, email: str | None) -> None:
        """Access tokens (of one user, or all) stop working; refresh tokens stay valid."""
        with self.lock:
            for tok, at in list(self._access.items()):
                if email is None or at.email == email:
                    del self._access[tok]

    # ---- consent ---------------------------------------------------------------------------

    def _authorize(self, req: Request, **context: str) -> Response:
        """The consent page: decides at once (``consent_decision``) and redirects back with a code."""
        p = {k: req.param(k) for k in _AUTHORIZE_PARAMS}
        for name in self.authorize_required:
            if not p[name]:
                raise self._page("missing_param", name=name, **context)
        with self.lock:
            client = self.clients.get(p["client_id"] or "")
            if self.clients and client is None:
                raise self._page("unknown_client", client_id=p["client_id"], **context)
            redirect = p["redirect_uri"]
            if not redirect:
                raise self._page("no_redirect", **context)
            uris = client.get("redirect_uris") if client else None
            if uris is not None and redirect not in uris:
                raise self._page("redirect_not_registered", redirect_uri=redirect, client_id=p["client_id"],
                                 **context)
            mode = p["response_mode"] if p["response_mode"] in self.response_modes else self.response_modes[0]

            def back(**params: str | None) -> Response:
                return _redirect(redirect, mode, {k: v for k, v in params.items() if v is not None})

            if p["response_type"] != "code":
                return back(error="unsupported_response_type",
                            error_description=self._description("unsupported_response_type"), state=p["state"])
            method = p["code_challenge_method"] or "plain"
            if p["code_challenge"] and method not in ("S256", "plain"):
                raise self._page("bad_challenge_method", **context)
            email = (p["login_hint"] or self.consent_user or next(iter(self._users), None) or "").lower()
            if not email:
                raise self._page("no_users", **context)
            if email not in self._users:
                raise self._page("unknown_user", email=email, **context)
            req.account = email
            req.info.update(pkce=method if p["code_challenge"] else None, scope=p["scope"], app_id=p["client_id"])
            decision = self.consent_decision
            if decision == "ask":
                decision = req.param("decision") or "ask"
            if decision == "ask":
                return _consent_screen(req.raw_path, email, p["client_id"] or "")
            if decision != "allow":
                return back(error="access_denied", error_description=self._description("access_denied"),
                            state=p["state"])
            code = self.code_prefix + secrets.token_urlsafe(32)
            auth = self._codes[code] = AuthCode(
                email=email, client_id=p["client_id"] or "", redirect_uri=redirect,
                scopes=self.normalize_scopes(p["scope"]), challenge=p["code_challenge"], challenge_method=method,
                expires_at=self.clock() + CODE_LIFETIME, nonce=p["nonce"], offline=p["access_type"] == "offline",
                force_consent="consent" in (p["prompt"] or "").split())
            return back(code=code, **self.consent_params(code, auth, p["state"], p["client_info"] == "1"))

    def _page(self, situation: str, **context: Any) -> OAuthError:
        e = self.fail(situation, **context)
        e.page = True
        return e

    def _description(self, situation: str) -> str | None:
        """The ``error_description`` a redirect carries for ``situation``, if the provider sends one."""
        entry = self.wording.get(situation)
        return entry[3] if entry else None

    # ---- token endpoint --------------------------------------------------------------------

    def _token_endpoint(self, req: Request, **context: str) -> Response:
        if req.method != "POST":
            raise self.fail("not_post", method=req.method)
        form = req.form()
        grant_type = form.get("grant_type")
        client_id, secret = self._client_from(req, form)
        req.info.update(grant_type=grant_type, app_id=client_id)
        handler = self.grant_types().get(grant_type or "")
        with self.lock:
            self._check_client(client_id, secret, context)
            if handler is not None:
                return handler(req, form, client_id, context)
        if not grant_type:
            raise self.fail("missing_param", name="grant_type")
        raise self.fail("unsupported_grant_type", grant_type=grant_type)

    def _client_from(self, req: Request, form: dict[str, str]) -> tuple[str | None, str | None]:
        """Client credentials from the form, or from HTTP Basic (RFC 6749 §2.3.1: form-encoded)."""
        client_id, secret = form.get("client_id"), form.get("client_secret")
        basic = req.headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            try:
                cid, _, sec = base64.b64decode(basic[6:]).decode().partition(":")
            except ValueError:
                raise self.fail("bad_basic") from None
            client_id, secret = unquote(cid), unquote(sec)
        return client_id, secret

    def _check_client(self, client_id: str | None, secret: str | None, context: dict[str, str]) -> None:
        if not client_id and self.require_client_id:
            raise self.fail("missing_param", name="client_id")
        if not self.clients:
            return
        client = self.clients.get(client_id or "")
        if client is None:
            raise self.fail("unknown_client", client_id=client_id, **context)
        if client.get("secret") is not None:
            if not secret:
                raise self.fail("missing_secret", client_id=client_id)
            if not secrets.compare_digest(secret.encode(), client["secret"].encode()):
                raise self.fail("bad_secret", client_id=client_id)

    def _refresh_grant(self, req: Request, form: dict[str, str], client_id: str | None,
                       context: dict[str, str]) -> Response:
        rt = form.get("refresh_token")
        if not rt:
            raise self.fail("missing_param", name="refresh_token")
        grant = self._refresh.get(rt)
        if grant is None:
            raise self.fail("unknown_refresh")
        req.account = grant.email
        if grant.client_id is not None and grant.client_id != client_id:
            raise self.fail("refresh_other_client")
        if grant.failure is not None:
            f = grant.failure
            stamp = "%Y-%m-%dT%H:%M:%S.0000000Z"
            description = f.description.format(issued=time.strftime(stamp, time.gmtime(grant.issued_at)),
                                               now=time.strftime(stamp, time.gmtime()), client=client_id or "")
            raise OAuthError(f.status, f.error, description, f.code, f.suberror)
        return self.refresh_tokens(req, form, grant, client_id)

    def _code_grant(self, req: Request, form: dict[str, str], client_id: str | None,
                    context: dict[str, str]) -> Response:
        code = self._codes.get(form.get("code") or "")
        if code is None:
            raise self.fail("unknown_code")
        req.account = code.email
        if code.used:
            raise self.fail("code_used")
        if code.expires_at <= self.clock():
            raise self.fail("code_expired")
        if client_id != code.client_id:
            raise self.fail("code_other_client")
        if form.get("redirect_uri") != code.redirect_uri:
            raise self.fail("redirect_mismatch", redirect_uri=form.get("redirect_uri"), expected=code.redirect_uri)
        if code.challenge is not None:
            verifier = form.get("code_verifier")
            if not verifier:
                raise self.fail("missing_verifier")
            if not pkce_matches(verifier, code.challenge, code.challenge_method):
                raise self.fail("bad_verifier")
        code.used = True
        return self.code_tokens(req, form, code, client_id)


def _consent_screen(raw_path: str, email: str, client_id: str) -> Response:
    """The screen a person sees at the provider: who is signing in, for which app, Allow or Deny.

    Each button is a link back to this same request with the choice added, so it works
    without JavaScript and a browser test clicks it like a person would.
    """
    def choice(value: str) -> str:
        joiner = "&" if "?" in raw_path else "?"
        return html.escape(f"{raw_path}{joiner}{urlencode({'decision': value})}")

    page = (f"<html><head><title>Sign in</title></head><body><h1>Sign in</h1><p>{html.escape(email)} is asked "
            f"to let <b>{html.escape(client_id)}</b> manage events on their calendar.</p>"
            f'<p><a id="allow" href="{choice("allow")}">Allow</a> <a id="deny" href="{choice("deny")}">Deny</a></p>'
            "</body></html>")
    return Response.text(200, page)


def _redirect(redirect: str, mode: str, params: dict[str, str]) -> Response:
    """Back to the client: query string, fragment, or an auto-submitting form (``form_post``)."""
    if mode == "form_post":
        inputs = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}"/>'
                         for k, v in params.items())
        return Response.text(200, f'<html><body onload="document.forms[0].submit()"><form method="POST" '
                                  f'action="{html.escape(redirect)}">{inputs}</form></body></html>')
    sep = "#" if mode == "fragment" else ("&" if urlsplit(redirect).query else "?")
    return Response.redirect(redirect + sep + urlencode(params))
