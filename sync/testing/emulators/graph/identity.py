"""Microsoft's side of the shared OAuth server: the identity platform (v2.0) msal talks to.

MSAL options (verified against msal 1.39, ``msal/authority.py`` and ``application.py``): the
authority must be ``https://host[:port]/tenant`` (``canonicalize`` raises otherwise, hence TLS).
``instance_discovery=False`` keeps MSAL from asking ``login.microsoftonline.com`` whether the
host is a known cloud and from looking up cloud aliases on silent calls. The constructor then
GETs ``{authority}/v2.0/.well-known/openid-configuration`` from this server; everything else
(token endpoint, authorize endpoint) comes from that document. MSAL keys its cache by the host
without the port and by the tenant in the token endpoint's path. MSAL itself (observed here): a
4xx from the token endpoint comes back as the error dict, a 5xx raises ``MsalServiceError``;
identical token POSTs that got 400 are replayed from MSAL's cache for 60 s without reaching the
server (``msal/throttled_http_client.py``).

Endpoints (``{tenant}`` = common | organizations | the tenant id | the tenant domain; anything
else answers AADSTS90002 as Azure does for an unknown tenant):

- ``/{tenant}/v2.0/.well-known/openid-configuration``, ``/{tenant}/discovery/v2.0/keys``.
- ``/{tenant}/oauth2/v2.0/authorize`` (GET): consent that redirects at once to
  ``redirect_uri?code&client_info&state&session_state``; records PKCE ``code_challenge`` and the
  OIDC ``nonce`` (echoed in the ``id_token``, which MSAL checks). ``response_mode=form_post``
  answers the auto-submitting form, ``fragment`` puts the answer after ``#``.
- ``/{tenant}/oauth2/v2.0/token`` (POST form): ``authorization_code`` (+PKCE S256/plain),
  ``refresh_token`` (a NEW refresh token every time, the old one stays valid, as Microsoft
  documents), ``client_credentials`` (scope must be ``{resource}/.default``, tenant must not be
  common/organizations: AADSTS50059). Responses carry ``access_token``, ``refresh_token``, ``expires_in``,
  ``ext_expires_in``, ``token_type``, ``scope``, ``id_token`` (HS256 JWT: iss, aud, exp, iat, nbf,
  oid, tid, sub, preferred_username, name, nonce), ``client_info`` (base64url of
  ``{"uid": oid, "utid": tenant_id}``: MSAL's ``home_account_id`` is ``oid.tenant_id``).
  Errors: ``{"error", "error_description": "AADSTS<code>: ... Trace ID ...", "error_codes": [code],
  "timestamp", "trace_id", "correlation_id", "error_uri"[, "suberror"]}``.

Token death on demand (the refresh grant answers AAD's error shape from then on):
``revoke(refresh_token | email, code=50173)`` (``invalid_grant``; also kills live access tokens),
``expire_refresh`` (AADSTS700082), ``require_interaction`` (``interaction_required``),
``remove_consent`` (AADSTS65001, suberror ``consent_required``). A new consent starts a fresh grant.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

import requests

from sync.providers.pinned_ca import session_trusting

from ..oauth import TOKEN_LIFETIME, AuthCode, Failure, Grant, OAuthError, OAuthServer
from ..server import Request, Response
from .schema import b64url

__all__ = ["DEFAULT_SCOPES", "GRAPH_APP_ID", "GRAPH_RESOURCE", "MicrosoftIdentity"]

GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
OIDC_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
DEFAULT_SCOPES = ("Calendars.ReadWrite", "User.Read", "openid", "profile", "email", "offline_access")
_GENERIC_TENANTS = ("common", "organizations", "consumers")
#: application permissions an admin consented to: what a client-credentials token carries as roles
_APP_PERMISSIONS = ("Calendars.ReadWrite", "User.Read.All")
_NO_STORE = {"Cache-Control": "no-store, no-cache"}
_MALFORMED = "Invalid request. Request is malformed or invalid."
_MUST_CONTAIN = "The request body must contain the following parameter: '{name}'."
_NOT_CONSENTED = ("The user or administrator has not consented to use the application with ID '{client}'. Send an "
                  "interactive authorization request for this user and resource.")


def short_scope(scope: str) -> str:
    """``https://graph.microsoft.com/Calendars.ReadWrite`` → ``Calendars.ReadWrite`` (Graph is the default resource)."""
    for prefix in (GRAPH_RESOURCE + "/", GRAPH_APP_ID + "/"):
        if scope.lower().startswith(prefix.lower()):
            return scope[len(prefix):]
    return scope


class MicrosoftIdentity(OAuthServer):
    """The Microsoft identity platform (login.microsoftonline.com, v2.0 endpoints) on the shared flow."""

    wording: ClassVar[dict[str, tuple[int, str, int | None, str]]] = {
        "missing_param": (400, "invalid_request", 900144, _MUST_CONTAIN),
        "unknown_client": (400, "unauthorized_client", 700016,
                           "Application with identifier '{client_id}' was not found in the directory '{tenant}'. "
                           "This can happen if the application has not been installed by the administrator of the "
                           "tenant or consented to by any user in the tenant."),
        "no_redirect": (400, "invalid_request", 900971, "No reply address provided."),
        "redirect_not_registered": (400, "invalid_request", 50011,
                                    "The redirect URI '{redirect_uri}' specified in the request does not match the "
                                    "redirect URIs configured for the application '{client_id}'."),
        "unsupported_response_type": (400, "unsupported_response_type", 70005,
                                      "AADSTS70005: response_type is not supported."),
        "access_denied": (400, "access_denied", 65004, "AADSTS65004: User declined to consent to access the app."),
        "bad_challenge_method": (400, "invalid_request", 501491, "Invalid code_challenge_method."),
        "no_users": (400, "invalid_request", 50034, "No emulated user; call add_user() first."),
        "unknown_user": (400, "invalid_request", 50034,
                         "The user account {email} does not exist in the '{tenant}' directory. To sign into this "
                         "application, the account must be added to the directory."),
        "not_post": (400, "invalid_request", 900561,
                     "The endpoint only accepts POST requests. Received a {method} request."),
        "bad_basic": (401, "invalid_client", 7000215, "Invalid client secret provided."),
        "missing_secret": (401, "invalid_client", 7000218,
                           "The request body must contain the following parameter: 'client_assertion' or "
                           "'client_secret'."),
        "bad_secret": (401, "invalid_client", 7000215,
                       "Invalid client secret provided. Ensure the secret being sent in the request is the client "
                       "secret value, not the client secret ID, for a secret added to app '{client_id}'."),
        "unsupported_grant_type": (400, "unsupported_grant_type", 70003,
                                   "The app requested an unsupported grant type '{grant_type}'."),
        "unknown_refresh": (400, "invalid_grant", 9002313, _MALFORMED),
        "refresh_other_client": (400, "invalid_grant", 70000,
                                 "The provided grant is invalid or malformed: it was issued to another client."),
        "unknown_code": (400, "invalid_grant", 9002313, _MALFORMED),
        "code_used": (400, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed, please retry "
                                                   "with a new valid code or use an existing refresh token."),
        "code_expired": (400, "invalid_grant", 70008, "The provided authorization code or refresh token has expired "
                                                      "due to inactivity. Send a new interactive authorization request "
                                                      "for this user and resource."),
        "code_other_client": (400, "invalid_grant", 70000,
                              "The provided grant is invalid or malformed: the code was issued to another client."),
        "redirect_mismatch": (400, "invalid_grant", 500112,
                              "The reply address '{redirect_uri}' does not match the reply address '{expected}' "
                              "provided when requesting Authorization code."),
        "missing_verifier": (400, "invalid_grant", 50148, "The code_verifier does not match the code_challenge "
                                                          "supplied in the authorization request for PKCE."),
        "bad_verifier": (400, "invalid_grant", 50148, "The code_verifier does not match the code_challenge "
                                                      "supplied in the authorization request for PKCE."),
    }
    authorize_required = ("client_id", "response_type", "scope")
    response_modes = ("query", "fragment", "form_post")
    require_client_id = True
    code_prefix = "0.AXkA"
    access_prefix = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.emu-graph."
    refresh_prefix = "1.AXkA"

    def __init__(self, *, tenant: str, tenant_id: str | None, tenant_domain: str, **kwargs: Any) -> None:
        self.tenant = tenant
        self.tenant_id = tenant_id or str(uuid.uuid4())
        self.tenant_domain = tenant_domain
        self._id_key = secrets.token_bytes(32)  # signs id_tokens (HS256; MSAL does not verify)
        super().__init__(**kwargs)

    # ---- URLs ------------------------------------------------------------------------------

    @property
    def authority_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def authority(self) -> str:
        """What ``msal.ClientApplication(authority=...)`` takes: ``authority_url/tenant``."""
        return f"{self.authority_url}/{self.tenant}"

    @property
    def graph_url(self) -> str:
        return f"{self.authority_url}/v1.0"

    @property
    def token_url(self) -> str:
        return f"{self.authority}/oauth2/v2.0/token"

    @property
    def auth_url(self) -> str:
        return f"{self.authority}/oauth2/v2.0/authorize"

    @property
    def openid_configuration_url(self) -> str:
        return f"{self.authority}/v2.0/.well-known/openid-configuration"

    def session(self) -> requests.Session:
        """A ``requests.Session`` that trusts the emulator's CA, whatever the env says (calsync's own pinned session).

        ``session.verify = emu.ca_file`` alone is not enough where ``REQUESTS_CA_BUNDLE`` or
        ``CURL_CA_BUNDLE`` is set (as on this project's machines): requests'
        ``merge_environment_settings`` puts the env bundle in place of a per-request ``verify=None``,
        and that beats ``Session.verify``, so the handshake fails with CERTIFICATE_VERIFY_FAILED. Either
        set ``session.trust_env = False`` as well, pass ``verify=`` per request, or use this session,
        whose adapter for ``authority_url`` pins ``verify`` to ``ca_file``. Pass it to MSAL as
        ``http_client=``.
        """
        return session_trusting(self.ca_file)

    # ---- tokens on demand, token death -----------------------------------------------------

    def issue_refresh_token(self, email: str, scopes: tuple[str, ...] = DEFAULT_SCOPES,
                            client_id: str | None = None) -> str:
        """A new delegated grant for an existing user, as if they had consented again."""
        with self.lock:
            user = self._user(email)
            return self._new_refresh(self._new_grant(user.email, client_id, tuple(scopes)))

    def access_token_for(self, email: str | None, scopes: tuple[str, ...] = ("Calendars.ReadWrite", "User.Read"),
                         client_id: str | None = "emulator-client") -> str:
        """A live access token for raw-HTTP tests; ``email=None`` gives an app-only token with ``scopes`` as roles."""
        with self.lock:
            if email is not None:
                email = self._user(email).email
            return self._new_access(email, client_id, scopes, None)

    def revoke(self, token_or_email: str, code: int = 50173) -> int:
        """Revoke grants (by refresh token, or every grant of a user); their access tokens die too.

        Answers ``invalid_grant`` with ``code`` (50173: "The provided grant has expired due to it being
        revoked..."; e.g. 50132/50133 for other revocations). Returns how many grants were hit.
        """
        desc = {
            50173: "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user "
                   "might have changed or reset their password. The grant was issued on '{issued}' and the "
                   "TokensValidFrom date (before which tokens are not valid) for this user is '{now}'.",
        }.get(code, "The session has been revoked. The user must sign in again.")
        return len(self._fail(token_or_email, Failure(400, "invalid_grant", desc, code), access_too=True))

    def expire_refresh(self, token_or_email: str) -> int:
        """The refresh token expired (inactivity): ``invalid_grant`` AADSTS700082."""
        return len(self._fail(token_or_email, Failure(
            400, "invalid_grant", "The refresh token has expired due to inactivity. The token was issued on {issued} "
                                  "and was inactive for 90.00:00:00.", 700082)))

    def require_interaction(self, email: str, code: int = 50076) -> int:
        """Conditional access / MFA now required: ``interaction_required`` (suberror ``basic_action``)."""
        return len(self._fail(email, Failure(
            400, "interaction_required",
            "Due to a configuration change made by your administrator, or because you moved to a new location, "
            f"you must use multi-factor authentication to access '{GRAPH_APP_ID}'.", code, "basic_action")))

    def remove_consent(self, email: str) -> int:
        """The user or an admin removed the app's consent: ``invalid_grant`` AADSTS65001."""
        return len(self._fail(email, Failure(400, "invalid_grant", _NOT_CONSENTED, 65001, "consent_required")))

    def expire_access_tokens(self, email: str | None = None, caches: tuple[Any, ...] | list[Any] = ()) -> None:
        """Access tokens stop working here (Graph 401) and in the given msal token caches (marked expired).

        MSAL's cache runs on the wall clock, so without ``caches`` the next ``acquire_token_silent*``
        would still hand out the dead token instead of going to the token endpoint.
        """
        with self.lock:
            target = self._user(email) if email is not None else None
        self._drop_access(target.email if target is not None else None)
        home = f"{target.oid}.{self.tenant_id}" if target is not None else None
        for cache in caches:
            kind = cache.CredentialType.ACCESS_TOKEN
            for entry in list(cache.search(kind)):
                if home is None or entry.get("home_account_id") == home:
                    cache.modify(kind, entry, {"expires_on": "0", "extended_expires_on": "0", "refresh_on": "0"})

    def _fail(self, token_or_email: str, failure: Failure, *, access_too: bool = False) -> list[Grant]:
        with self.lock:
            if token_or_email not in self._refresh:
                self._user(token_or_email)  # an unknown email is a test's mistake: KeyError
            return self._kill(self._grants_of(token_or_email), failure, access_too=access_too)

    # ---- the shared flow's hooks -----------------------------------------------------------

    def access_scopes(self, scopes: tuple[str, ...] | list[str]) -> tuple[str, ...]:
        """Graph checks short, case-insensitive names (``calendars.readwrite``)."""
        return tuple(dict.fromkeys(short_scope(s).lower() for s in scopes))

    def consent_params(self, code: str, auth: AuthCode, state: str | None, client_info: bool) -> dict[str, str | None]:
        return {"client_info": self._client_info(self._users[auth.email]) if client_info else None,
                "state": state, "session_state": str(uuid.uuid4())}

    def refresh_tokens(self, req: Request, form: dict[str, str], grant: Grant, client_id: str | None) -> Response:
        scopes = self._wanted_scopes(form, grant)
        return Response.json(200, self._tokens(grant, client_id, scopes, form), _NO_STORE)

    def code_tokens(self, req: Request, form: dict[str, str], code: AuthCode, client_id: str | None) -> Response:
        grant = self._new_grant(code.email, code.client_id, code.scopes)
        return Response.json(200, self._tokens(grant, client_id, list(code.scopes), form, nonce=code.nonce),
                             _NO_STORE)

    def oauth_response(self, e: OAuthError, req: Request) -> Response:
        """AAD's error shape: AADSTS code, trace and correlation ids; an HTML page for the browser."""
        ts = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        desc = f"AADSTS{e.code}: {e.description} Trace ID: {trace} Correlation ID: {corr} Timestamp: {ts}"
        if e.page:
            page = (f"<!doctype html><title>Sign in to your account</title><h1>Sorry, but we're having trouble "
                    f"signing you in.</h1><p>{html.escape(desc)}</p>")
            return Response.text(e.status, page)
        body: dict[str, Any] = {"error": e.error, "error_description": desc, "error_codes": [e.code],
                                "timestamp": ts, "trace_id": trace, "correlation_id": corr,
                                "error_uri": f"{self.authority_url}/error?code={e.code}"}
        if e.suberror:
            body["suberror"] = e.suberror
        return Response.json(e.status, body, {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})

    def grant_types(self) -> dict[str, Any]:
        return {**super().grant_types(), "client_credentials": self._client_credentials}

    def _client_credentials(self, req: Request, form: dict[str, str], client_id: str | None,
                            context: dict[str, str]) -> Response:
        """App-only tokens (daemon apps): scope ``{resource}/.default``, a tenant that names the directory."""
        scopes = self.normalize_scopes(form.get("scope"))
        tenant = context["tenant"]
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            raise OAuthError(400, "invalid_scope",
                             f"The provided value for scope {' '.join(scopes)} is not valid. Client credential flows "
                             "must have a scope value with /.default suffixed to the resource identifier "
                             "(application ID URI).", 1002012)
        resource = scopes[0][: -len("/.default")]
        if resource.rstrip("/").lower() not in (GRAPH_RESOURCE, GRAPH_APP_ID):
            raise OAuthError(400, "invalid_resource",
                             f"The resource principal named {resource} was not found in the tenant named {tenant}.",
                             500011)
        if tenant.lower() in _GENERIC_TENANTS:
            raise OAuthError(400, "invalid_request", "No tenant-identifying information found in either the request "
                                                     "or implied by any provided credentials.", 50059)
        out = {"token_type": "Bearer", "expires_in": TOKEN_LIFETIME, "ext_expires_in": TOKEN_LIFETIME,
               "access_token": self._new_access(None, client_id, _APP_PERMISSIONS, None)}
        return Response.json(200, out, _NO_STORE)

    # ---- identity endpoints ----------------------------------------------------------------

    def _identity(self, req: Request) -> Response:
        """Discovery, token and authorize endpoints, after the tenant in the path is checked."""
        seg = req.segments()
        tenant = seg[0]
        known = {*_GENERIC_TENANTS, self.tenant.lower(), self.tenant_id.lower(), self.tenant_domain.lower()}
        if tenant.lower() not in known:
            raise OAuthError(400, "invalid_tenant",
                             f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and "
                             "are signing into the correct cloud.", 90002, page=req.kind == "consent")
        if req.kind == "discovery":
            return self._discovery(seg)
        if req.kind == "token":
            return self._token_endpoint(req, tenant=tenant)
        return self._authorize(req, tenant=tenant)

    def _discovery(self, seg: list[str]) -> Response:
        tenant = seg[0]
        base = f"{self.authority_url}/{tenant}"
        if seg[1:] == ["discovery", "v2.0", "keys"]:
            return Response.json(200, {"keys": []})
        issuer_tenant = "{tenantid}" if tenant.lower() in _GENERIC_TENANTS else self.tenant_id
        return Response.json(200, {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{self.authority_url}/{issuer_tenant}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.graph_url.rsplit('/', 1)[0]}/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
                                 "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr",
                                 "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
            "kerberos_endpoint": f"{base}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": f"{self.host}:{self.port}",
            "rbac_url": "https://pas.windows.net",
        })

    def _wanted_scopes(self, form: dict[str, str], grant: Grant) -> list[str]:
        wanted = self.normalize_scopes(form.get("scope"))
        consented = {short_scope(s).lower() for s in grant.scopes} | OIDC_SCOPES
        out: list[str] = []
        for s in wanted:
            short = short_scope(s)
            if short.lower() == ".default":
                out.extend(x for x in grant.scopes if x not in out)
                continue
            if short.lower() not in consented:
                raise OAuthError(400, "invalid_grant", _NOT_CONSENTED.format(client=form.get("client_id") or ""),
                                 65001, "consent_required")
            out.append(s)
        return out or list(grant.scopes)

    def _tokens(self, grant: Grant, client_id: str | None, scopes: list[str], form: dict[str, str],
                nonce: str | None = None) -> dict[str, Any]:
        user = self._users[grant.email]
        lower = {s.lower() for s in scopes}
        out: dict[str, Any] = {
            "token_type": "Bearer", "scope": " ".join(scopes),
            "expires_in": TOKEN_LIFETIME, "ext_expires_in": TOKEN_LIFETIME,
            "access_token": self._new_access(user.email, client_id, [s for s in scopes if s.lower() not in OIDC_SCOPES],
                                             grant),
        }
        if "offline_access" in lower:
            out["refresh_token"] = self._new_refresh(grant)
        if "openid" in lower:
            out["id_token"] = self._id_token(user, client_id or "", nonce)
        if form.get("client_info") == "1":
            out["client_info"] = self._client_info(user)
        return out

    def _client_info(self, user: Any) -> str:
        return b64url(json.dumps({"uid": user.oid, "utid": self.tenant_id}).encode())

    def _id_token(self, user: Any, client_id: str, nonce: str | None) -> str:
        now = int(time.time())  # MSAL compares id_token times with the wall clock
        claims: dict[str, Any] = {
            "aud": client_id, "iss": f"{self.authority_url}/{self.tenant_id}/v2.0", "iat": now, "nbf": now,
            "exp": now + 3600, "name": user.display_name, "oid": user.oid, "preferred_username": user.email,
            "rh": "0.emu", "sub": b64url(hashlib.sha256(f"{user.oid}|{client_id}".encode()).digest()[:32]),
            "tid": self.tenant_id, "uti": b64url(secrets.token_bytes(16)), "ver": "2.0",
        }
        if nonce is not None:
            claims["nonce"] = nonce
        header = b64url(json.dumps({"typ": "JWT", "alg": "HS256", "kid": "emu"}).encode())
        payload = b64url(json.dumps(claims).encode())
        sig = b64url(hmac.new(self._id_key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        return f"{header}.{payload}.{sig}"
