"""Google's side of the shared OAuth server: its wording, scopes, token answers, userinfo and revoke.

What is Google's own (each as its OAuth 2.0 reference documents it):

- Consent: ``access_type=offline`` is needed for a refresh token, and a second consent for the
  same user and client while the first grant is alive gets NO refresh token unless
  ``prompt=consent``. PKCE ``S256`` and ``plain`` are checked at the code exchange (in
  :mod:`..oauth`). Errors on the consent page are an HTML page, not a redirect.
- No ``id_token`` is issued: the account email comes from ``userinfo`` (``/oauth2/v3/userinfo``,
  v1/v2 too, and ``/oauth2/v3/tokeninfo``), which needs the ``email`` scope, as on Google.
- A refresh token that was revoked (:meth:`GoogleIdentity.revoke`, the revoke endpoint) or never
  issued answers 400 ``invalid_grant`` "Token has been expired or revoked."; revoking also kills
  the grant's access tokens.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from ..oauth import TOKEN_LIFETIME, AuthCode, Failure, Grant, OAuthError, OAuthServer
from ..server import Request, Response

__all__ = ["DEFAULT_SCOPES", "EMAIL_SCOPE", "GoogleIdentity"]

SCOPE_PREFIX = "https://www.googleapis.com/auth/"
EMAIL_SCOPE = SCOPE_PREFIX + "userinfo.email"
DEFAULT_SCOPES = (
    SCOPE_PREFIX + "calendar",
    SCOPE_PREFIX + "calendar.events",
    SCOPE_PREFIX + "calendar.events.owned",
    EMAIL_SCOPE,
    "openid",
)
_SCOPE_ALIASES = {"email": EMAIL_SCOPE, "profile": SCOPE_PREFIX + "userinfo.profile"}
_REVOKED = Failure(400, "invalid_grant", "Token has been expired or revoked.")
_NO_CACHE = {"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate"}


class GoogleIdentity(OAuthServer):
    """Google OAuth 2.0 (accounts.google.com / oauth2.googleapis.com) on the shared flow."""

    wording: ClassVar[dict[str, tuple[int, str, int | None, str]]] = {
        "missing_param": (400, "invalid_request", None, "Missing required parameter: {name}"),
        "unknown_client": (401, "invalid_client", None, "The OAuth client was not found."),
        "no_redirect": (400, "invalid_request", None, "Missing required parameter: redirect_uri"),
        "redirect_not_registered": (400, "redirect_uri_mismatch", None, "redirect_uri not registered for this client"),
        "bad_challenge_method": (400, "invalid_request", None, "Invalid code_challenge_method"),
        "no_users": (400, "invalid_request", None, "No emulated Google user; call add_user() first."),
        "unknown_user": (400, "invalid_request", None, "No emulated Google user {email}; call add_user()."),
        "not_post": (405, "invalid_request", None, "Method not allowed; POST the form."),
        "bad_basic": (401, "invalid_client", None, "Unauthorized"),
        "missing_secret": (401, "invalid_client", None, "Unauthorized"),
        "bad_secret": (401, "invalid_client", None, "Unauthorized"),
        "unsupported_grant_type": (400, "unsupported_grant_type", None, "Invalid grant_type: {grant_type}"),
        "unknown_refresh": (400, "invalid_grant", None, _REVOKED.description),
        "refresh_other_client": (401, "unauthorized_client", None, "Unauthorized"),
        "unknown_code": (400, "invalid_grant", None, "Malformed auth code."),
        "code_used": (400, "invalid_grant", None, "Bad Request"),
        "code_expired": (400, "invalid_grant", None, "Bad Request"),
        "code_other_client": (401, "unauthorized_client", None, "Unauthorized"),
        "redirect_mismatch": (400, "redirect_uri_mismatch", None, "Bad Request"),
        "missing_verifier": (400, "invalid_grant", None, "Missing code verifier."),
        "bad_verifier": (400, "invalid_grant", None, "Invalid code verifier."),
        "bad_scope": (400, "invalid_scope", None, "Bad Request"),
    }
    code_prefix = "4/0emu-"
    access_prefix = "ya29.emu-"
    refresh_prefix = "1//emu-"

    # ---- URLs ------------------------------------------------------------------------------

    @property
    def token_url(self) -> str:
        return self.url + "token"

    @property
    def auth_url(self) -> str:
        return self.url + "o/oauth2/v2/auth"

    @property
    def revoke_url(self) -> str:
        return self.url + "revoke"

    @property
    def userinfo_url(self) -> str:
        return self.url + "oauth2/v3/userinfo"

    # ---- tokens on demand ------------------------------------------------------------------

    def issue_refresh_token(self, email: str, scopes: tuple[str, ...] = DEFAULT_SCOPES,
                            client_id: str | None = None) -> str:
        """A new grant for an existing user, as if they had consented again (skips the browser)."""
        with self.lock:
            self._user(email)
            return self._new_refresh(self._new_grant(email.lower(), client_id, tuple(scopes)))

    def access_token_for(self, email: str, scopes: tuple[str, ...] = DEFAULT_SCOPES) -> str:
        """A live access token for raw-HTTP tests (bypasses the token endpoint)."""
        with self.lock:
            self._user(email)
            grant = self._new_grant(email.lower(), None, tuple(scopes))
            return self._new_access(grant.email, None, grant.scopes, grant)

    def revoke(self, token: str) -> bool:
        """Revoke the grant behind a refresh or access token (its refresh → ``invalid_grant``)."""
        with self.lock:
            if token not in self._refresh and token not in self._access:
                return False
            self._kill(self._grants_of(token), _REVOKED, access_too=True)
            return True

    def revoke_user(self, email: str) -> None:
        """The user removes the app's access: every grant for the account dies."""
        with self.lock:
            self._kill(self._grants_of(email.lower()), _REVOKED, access_too=True)

    def expire_access_tokens(self, email: str | None = None) -> None:
        """Access tokens stop working (401) while refresh tokens stay valid."""
        self._drop_access(email.lower() if email is not None else None)

    # ---- the shared flow's hooks -----------------------------------------------------------

    def normalize_scopes(self, scope: str | None) -> tuple[str, ...]:
        """Google accepts ``email`` and ``profile`` for the userinfo scopes."""
        return tuple(dict.fromkeys(_SCOPE_ALIASES.get(s, s) for s in (scope or "").split()))

    def consent_params(self, code: str, auth: AuthCode, state: str | None, client_info: bool) -> dict[str, str | None]:
        return {"state": state, "scope": " ".join(auth.scopes)}

    def refresh_tokens(self, req: Request, form: dict[str, str], grant: Grant, client_id: str | None) -> Response:
        wanted = self.normalize_scopes(form.get("scope"))
        if wanted and not set(wanted) <= set(grant.scopes):
            raise self.fail("bad_scope")
        scopes = wanted or grant.scopes
        return Response.json(200, self._token_answer(grant, scopes), _NO_CACHE)

    def code_tokens(self, req: Request, form: dict[str, str], code: AuthCode, client_id: str | None) -> Response:
        live = [g for g in self._grants if g.email == code.email and g.client_id == code.client_id
                and g.failure is None and g.refresh_token is not None]
        grant = self._new_grant(code.email, code.client_id, code.scopes)
        out = self._token_answer(grant, code.scopes)
        if code.offline and (not live or code.force_consent):
            out["refresh_token"] = self._new_refresh(grant)
        return Response.json(200, out)

    def _token_answer(self, grant: Grant, scopes: tuple[str, ...]) -> dict[str, Any]:
        return {"access_token": self._new_access(grant.email, grant.client_id, scopes, grant),
                "expires_in": TOKEN_LIFETIME, "scope": " ".join(scopes), "token_type": "Bearer"}

    def oauth_response(self, e: OAuthError, req: Request) -> Response:
        if e.page:
            page = (f"<!doctype html><title>Error {e.status}: {e.error}</title>"
                    f"<h1>Error {e.status}: {e.error}</h1><p>{e.description}</p>")
            return Response.text(e.status, page)
        return Response.json(e.status, {"error": e.error, "error_description": e.description})

    # ---- userinfo, tokeninfo, revoke -------------------------------------------------------

    def _userinfo(self, req: Request) -> Response:
        tokeninfo = "tokeninfo" in req.path
        with self.lock:
            at = self._bearer(req)
            if at is None and tokeninfo:
                at = self._live_access(req.param("access_token") or req.form().get("access_token") or "")
            if at is None or at.email is None:
                if tokeninfo:
                    raise OAuthError(400, "invalid_token", "Invalid Value")
                raise OAuthError(401, "invalid_request", "Invalid Credentials")
            email = at.email
            sub = str(int(hashlib.sha256(email.encode()).hexdigest()[:15], 16))
            has_email = EMAIL_SCOPE in at.scopes
            if tokeninfo:
                out: dict[str, Any] = {"azp": at.client_id or "", "aud": at.client_id or "",
                                       "sub": sub, "scope": " ".join(at.scopes),
                                       "expires_in": str(int(at.expires_at - self.clock()))}
                if has_email:
                    out.update(email=email, email_verified="true")
            elif "/v3/" in req.path:
                out = {"sub": sub}
                if has_email:
                    out.update(email=email, email_verified=True)
            else:
                out = {"id": sub}
                if has_email:
                    out.update(email=email, verified_email=True)
            return Response.json(200, out)

    def _revoke_endpoint(self, req: Request) -> Response:
        token = req.param("token") or req.form().get("token")
        if token and self.revoke(token):
            return Response.json(200, {})
        raise OAuthError(400, "invalid_token", "Token expired or revoked")
