"""The Microsoft identity platform + Graph emulator, driven through the real msal and requests.

What these tests pin down is that the emulator answers the way Microsoft does (as Microsoft's
identity platform and Graph references document it, summarised in the emulator's docstring) for the
requests calsync makes, and that
the real MSAL accepts it as an authority — so Outlook provider tests written against it mean
something.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import msal
import pytest
import requests

from sync.testing.emulators import FakeClock
from sync.testing.emulators.graph import GraphEmulator

MENTEE = "mentee@contoso.com"
MENTOR = "mentor@contoso.com"
CLIENT_ID, SECRET = "calsync-client", "calsync-secret"
REDIRECT = "https://calsync.example/oauth/outlook/callback"
SESSION_PROP = "String {8ECCC264-6880-4EBE-992F-8888D2EEAA1D} Name calsyncSession"
SESSION_PROP_CANONICAL = "String {8eccc264-6880-4ebe-992f-8888d2eeaa1d} Name calsyncSession"

# MSAL's own advice (form_post) and its /common client-credentials warning are not what is tested here
pytestmark = [pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended:UserWarning"),
              pytest.mark.filterwarnings("ignore:Using /common or /organizations authority:DeprecationWarning")]


@pytest.fixture
def emu() -> Iterator[GraphEmulator]:
    with GraphEmulator() as emulator:
        yield emulator
        assert emulator.internal_errors == [], emulator.internal_errors[0]


@pytest.fixture
def http(emu: GraphEmulator) -> Iterator[requests.Session]:
    with emu.session() as session:
        yield session


def make_app(emu: GraphEmulator, http: requests.Session, tenant: str | None = None,
             cache: msal.TokenCache | None = None) -> msal.ConfidentialClientApplication:
    # instance_discovery=False: never ask login.microsoftonline.com about this host
    return msal.ConfidentialClientApplication(
        CLIENT_ID, client_credential=SECRET, authority=f"{emu.authority_url}/{tenant or emu.tenant}",
        http_client=http, instance_discovery=False, token_cache=cache)


def token_for(emu: GraphEmulator, http: requests.Session, email: str = MENTEE) -> str:
    result = make_app(emu, http).acquire_token_by_refresh_token(emu.add_user(email), scopes=["Calendars.ReadWrite"])
    return result["access_token"]


class Graph:
    """Raw Graph calls the way calsync's provider makes them: requests + Bearer."""

    def __init__(self, emu: GraphEmulator, http: requests.Session, token: str, owner: str = "me") -> None:
        self.emu, self.http, self.owner = emu, http, owner
        self.headers = {"Authorization": f"Bearer {token}", "Prefer": 'IdType="ImmutableId"'}

    def url(self, path: str) -> str:
        return f"{self.emu.graph_url}/{self.owner}/{path}"

    def create(self, body: dict, **kw) -> requests.Response:
        return self.http.post(self.url("events"), json=body, headers=self.headers, **kw)

    def get(self, event_id: str, **params) -> requests.Response:
        return self.http.get(self.url(f"events/{event_id}"), params=params, headers=self.headers)

    def list(self, **params) -> requests.Response:
        return self.http.get(self.url("events"), params=params, headers=self.headers)

    def patch(self, event_id: str, body: dict) -> requests.Response:
        return self.http.patch(self.url(f"events/{event_id}"), json=body, headers=self.headers)

    def delete(self, event_id: str) -> requests.Response:
        return self.http.delete(self.url(f"events/{event_id}"), headers=self.headers)


@pytest.fixture
def graph(emu: GraphEmulator, http: requests.Session) -> Graph:
    return Graph(emu, http, token_for(emu, http))


def event_body(session: str = "sess-42", transaction_id: str | None = "calsync-sess-42-u2", **extra) -> dict:
    body = {
        "subject": "Session 2: Setting goals",
        "start": {"dateTime": "2026-12-01T15:00:00", "timeZone": "America/New_York"},
        "end": {"dateTime": "2026-12-01T16:00:00", "timeZone": "America/New_York"},
        "location": {"displayName": "https://zoom.us/j/123456789"},
        "body": {"contentType": "html", "content": "<p>Review the mentorship agreement</p>"},
        "isReminderOn": True,
        "singleValueExtendedProperties": [{"id": SESSION_PROP, "value": session}],
    }
    if transaction_id is not None:
        body["transactionId"] = transaction_id
    body.update(extra)
    return body


def error_code(resp: requests.Response) -> str:
    return resp.json()["error"]["code"]


# ---- TLS and the authority ------------------------------------------------------------------


def test_msal_accepts_the_emulator_as_authority_from_its_openid_configuration(emu: GraphEmulator, http) -> None:
    # Given the emulator's https authority
    # When MSAL is constructed against it (it fetches the OpenID configuration at once)
    app = make_app(emu, http)
    config = http.get(emu.openid_configuration_url).json()

    # Then every endpoint points back at the emulator, and MSAL took its token endpoint from there
    assert app.authority.token_endpoint == f"{emu.authority_url}/common/oauth2/v2.0/token" == emu.token_url
    assert config["authorization_endpoint"] == emu.auth_url
    assert config["issuer"] == f"{emu.authority_url}/{{tenantid}}/v2.0"
    assert emu.count(kind="discovery", status=200) == 2
    assert emu.graph_url == f"https://127.0.0.1:{emu.port}/v1.0"


def test_unknown_tenant_is_refused_like_azure_does(emu: GraphEmulator, http) -> None:
    # Given a misconfigured tenant name
    # When MSAL is constructed with it
    with pytest.raises(ValueError, match="Unable to get authority configuration"):
        make_app(emu, http, tenant="not-our-tenant")
    # Then the discovery document was refused (AADSTS90002) while the tenant id and domain are fine
    [refused] = emu.requests(kind="discovery", status=400)
    assert refused.path == "/not-our-tenant/v2.0/.well-known/openid-configuration"
    make_app(emu, http, tenant=emu.tenant_id)
    make_app(emu, http, tenant=emu.tenant_domain)


def test_session_verify_alone_loses_to_requests_ca_bundle(emu: GraphEmulator, monkeypatch) -> None:
    # Given REQUESTS_CA_BUNDLE names the system store (as on this project's machines)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())
    plain = requests.Session()
    plain.verify = emu.ca_file

    # When a session that only sets .verify, one that also ignores the env, and emu.session() connect
    with pytest.raises(requests.exceptions.SSLError):
        plain.get(emu.openid_configuration_url)
    no_env = requests.Session()
    no_env.verify, no_env.trust_env = emu.ca_file, False

    # Then requests used the env bundle for the first; the other two trust the emulator's CA
    assert no_env.get(emu.openid_configuration_url).status_code == 200
    assert emu.session().get(emu.openid_configuration_url).status_code == 200


# ---- tokens ---------------------------------------------------------------------------------


def test_refresh_token_import_keys_the_account_and_rotates_the_refresh_token(emu: GraphEmulator, http) -> None:
    # Given a refresh token the platform already holds
    refresh = emu.add_user(MENTEE, display_name="Alan Turing")
    app = make_app(emu, http)

    # When calsync migrates it into MSAL
    result = app.acquire_token_by_refresh_token(refresh, scopes=["Calendars.ReadWrite"])

    # Then MSAL gets what AAD returns and keys the account by oid.tenant (from client_info)
    assert "error" not in result, result
    assert {"access_token", "refresh_token", "expires_in", "token_type", "scope", "id_token", "client_info"} <= set(
        result)
    user = emu.user(MENTEE)
    client_info = json.loads(base64.urlsafe_b64decode(result["client_info"] + "=="))
    assert client_info == {"uid": user.oid, "utid": emu.tenant_id}
    assert result["id_token_claims"]["preferred_username"] == MENTEE
    assert result["id_token_claims"]["aud"] == CLIENT_ID
    [account] = app.get_accounts()
    assert account["home_account_id"] == f"{user.oid}.{emu.tenant_id}"
    assert account["username"] == MENTEE
    # and a new refresh token came back while the old one still works (AAD does not revoke it)
    assert result["refresh_token"] != refresh
    again = make_app(emu, http).acquire_token_by_refresh_token(refresh, scopes=["Calendars.ReadWrite"])
    assert "access_token" in again


def test_silent_call_uses_cache_then_refreshes_when_access_token_expires(emu: GraphEmulator, http) -> None:
    # Given an account whose tokens are in MSAL's cache
    app = make_app(emu, http)
    app.acquire_token_by_refresh_token(emu.add_user(MENTEE), scopes=["Calendars.ReadWrite"])
    account = app.get_accounts()[0]

    # When calsync asks silently, before and after the access token expires
    cached = app.acquire_token_silent_with_error(["Calendars.ReadWrite"], account)
    emu.expire_access_tokens(MENTEE, caches=[app.token_cache])
    refreshed = app.acquire_token_silent_with_error(["Calendars.ReadWrite"], account)

    # Then the first came from the cache, the second from the token endpoint
    assert cached["token_source"] == "cache"
    assert refreshed["token_source"] == "identity_provider"
    assert emu.count(kind="token", grant_type="refresh_token") == 2


def test_auth_code_flow_with_pkce_through_the_consent_redirect(emu: GraphEmulator, http) -> None:
    # Given a user and the auth-code flow MSAL starts (PKCE S256 and a nonce, automatically)
    emu.add_user(MENTEE)
    app = make_app(emu, http)
    flow = app.initiate_auth_code_flow(["Calendars.ReadWrite"], redirect_uri=REDIRECT, login_hint=MENTEE)

    # When the browser follows the authorize URL and comes back to the redirect URI
    consent = http.get(flow["auth_uri"], allow_redirects=False)
    location = consent.headers["Location"]
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    result = app.acquire_token_by_auth_code_flow(flow, params)

    # Then the redirect carried code and state, and MSAL redeemed it (nonce and PKCE checked)
    assert consent.status_code == 302 and location.startswith(REDIRECT + "?")
    assert emu.requests(kind="consent")[0].pkce == "S256"
    assert params["state"] == flow["state"]
    assert "error" not in result, result
    assert result["id_token_claims"]["preferred_username"] == MENTEE
    assert app.get_accounts()[0]["username"] == MENTEE
    # and the same code cannot be redeemed twice
    reused = http.post(emu.token_url, data={"grant_type": "authorization_code", "code": params["code"],
                                            "client_id": CLIENT_ID, "client_secret": SECRET,
                                            "redirect_uri": REDIRECT, "code_verifier": flow["code_verifier"]})
    assert reused.status_code == 400 and reused.json()["error_codes"] == [54005]


def test_code_exchange_with_a_wrong_pkce_verifier_is_refused(emu: GraphEmulator, http) -> None:
    # Given a code issued for a PKCE challenge
    emu.add_user(MENTEE)
    flow = make_app(emu, http).initiate_auth_code_flow(["Calendars.ReadWrite"], redirect_uri=REDIRECT)
    location = http.get(flow["auth_uri"], allow_redirects=False).headers["Location"]
    code = parse_qs(urlsplit(location).query)["code"][0]

    # When it is redeemed with another verifier
    resp = http.post(emu.token_url, data={"grant_type": "authorization_code", "code": code, "client_id": CLIENT_ID,
                                          "client_secret": SECRET, "redirect_uri": REDIRECT,
                                          "code_verifier": "x" * 43})

    # Then AAD's invalid_grant shape comes back
    body = resp.json()
    assert resp.status_code == 400 and body["error"] == "invalid_grant"
    assert body["error_codes"] == [50148] and body["error_description"].startswith("AADSTS50148: ")
    assert {"timestamp", "trace_id", "correlation_id"} <= set(body)


def test_revoked_grant_surfaces_through_acquire_token_silent_with_error(emu: GraphEmulator, http) -> None:
    # Given a connected user whose cached access token still looks valid
    app = make_app(emu, http)
    token = app.acquire_token_by_refresh_token(emu.add_user(MENTEE), scopes=["Calendars.ReadWrite"])["access_token"]
    account = app.get_accounts()[0]

    # When the user resets their password (grant revoked) and the cached access token expires
    emu.revoke(MENTEE)
    graph_status = Graph(emu, http, token).list().status_code
    emu.expire_access_tokens(caches=[app.token_cache])
    result = app.acquire_token_silent_with_error(["Calendars.ReadWrite"], account)

    # Then Graph already refuses the old token and MSAL returns AAD's error dict, not None
    assert graph_status == 401
    assert result["error"] == "invalid_grant"
    assert result["error_codes"] == [50173]
    assert result["error_description"].startswith("AADSTS50173: ")


@pytest.mark.parametrize(("kill", "error", "code", "suberror"), [
    (lambda emu, rt: emu.expire_refresh(rt), "invalid_grant", 700082, None),
    (lambda emu, rt: emu.revoke(rt), "invalid_grant", 50173, None),
    (lambda emu, rt: emu.require_interaction(MENTEE), "interaction_required", 50076, "basic_action"),
    (lambda emu, rt: emu.remove_consent(MENTEE), "invalid_grant", 65001, "consent_required"),
])
def test_token_death_answers_in_aad_shape(emu: GraphEmulator, http, kill, error, code, suberror) -> None:
    # Given a refresh token
    refresh = emu.add_user(MENTEE)

    # When it dies and calsync tries to use it
    kill(emu, refresh)
    result = make_app(emu, http).acquire_token_by_refresh_token(refresh, scopes=["Calendars.ReadWrite"])

    # Then the error, its AADSTS code and suberror are AAD's
    assert result["error"] == error
    assert result["error_codes"] == [code]
    assert result["error_description"].startswith(f"AADSTS{code}: ")
    assert result.get("suberror") == suberror


def test_reconnect_after_token_death_gets_a_healthy_grant(emu: GraphEmulator, http) -> None:
    # Given a user whose consent was removed
    refresh = emu.add_user(MENTEE)
    emu.remove_consent(MENTEE)
    app = make_app(emu, http)

    # When they consent again through the auth-code flow
    flow = app.initiate_auth_code_flow(["Calendars.ReadWrite"], redirect_uri=REDIRECT, login_hint=MENTEE)
    location = http.get(flow["auth_uri"], allow_redirects=False).headers["Location"]
    result = app.acquire_token_by_auth_code_flow(flow, {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()})

    # Then the new grant works while the old refresh token stays dead
    assert Graph(emu, http, result["access_token"]).list().status_code == 200
    old = make_app(emu, http).acquire_token_by_refresh_token(refresh, scopes=["Calendars.ReadWrite"])
    assert old["error_codes"] == [65001]


def test_client_credentials_reach_any_mailbox_but_not_me(emu: GraphEmulator, http) -> None:
    # Given an app with admin-consented Calendars.ReadWrite and two mailboxes
    emu.add_user(MENTEE)
    emu.add_user(MENTOR)
    app = make_app(emu, http, tenant=emu.tenant_id)

    # When it gets an app-only token and writes to a user's calendar by UPN, and tries /me
    result = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    as_app = Graph(emu, http, result["access_token"], owner=f"users/{MENTOR}")
    created = as_app.create(event_body())
    me = Graph(emu, http, result["access_token"]).list()

    # Then the event lands in that mailbox; /me is a delegated-only path
    assert created.status_code == 201 and len(emu.events(MENTOR)) == 1 and emu.events(MENTEE) == []
    assert me.status_code == 400
    # and client credentials need a tenant, not /common (AADSTS50059)
    common = make_app(emu, http).acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert common["error_codes"] == [50059]


def test_delegated_token_cannot_reach_another_mailbox(emu: GraphEmulator, http, graph: Graph) -> None:
    # Given a delegated token for the mentee
    emu.add_user(MENTOR)
    # When it is used on the mentor's mailbox
    resp = Graph(emu, http, graph.headers["Authorization"][7:], owner=f"users/{MENTOR}").list()
    # Then Graph refuses
    assert resp.status_code == 403 and error_code(resp) == "ErrorAccessDenied"


# ---- events ---------------------------------------------------------------------------------


def test_second_create_with_same_transaction_id_returns_the_original_event(emu: GraphEmulator, graph: Graph) -> None:
    # Given an event created with a transactionId
    first = graph.create(event_body())

    # When the same POST is sent again (a client retry)
    second = graph.create(event_body())

    # Then both answer 201 with the same event and the calendar holds one copy
    assert first.status_code == second.status_code == 201
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["transactionId"] == "calsync-sess-42-u2"
    assert len(emu.events(MENTEE)) == 1
    assert [r.get("deduplicated") for r in emu.requests(op="events.create")] == [False, True]
    assert emu.requests(op="events.create")[0].immutable_id is True


def test_lost_create_response_then_retry_leaves_one_event(emu: GraphEmulator, graph: Graph) -> None:
    # Given the response to the first create gets lost after the event was stored
    emu.lose_next_response(method="POST")

    # When calsync retries with the same transactionId
    with pytest.raises(requests.exceptions.ConnectionError):
        graph.create(event_body())
    retry = graph.create(event_body())

    # Then the retry returns the event the lost request created
    assert retry.status_code == 201
    assert [e["id"] for e in emu.events(MENTEE)] == [retry.json()["id"]]


def test_timeout_on_create_then_retry_with_transaction_id_leaves_one_event(emu: GraphEmulator, graph: Graph) -> None:
    # Given a create that is applied at once but answered only after the client gave up
    emu.timeout_next(seconds=3, method="POST")

    # When calsync times out and retries with the same transactionId
    with pytest.raises(requests.exceptions.ReadTimeout):
        graph.create(event_body(), timeout=0.3)
    retry = graph.create(event_body(), timeout=5)

    # Then the retry answers with the event the first request created
    assert retry.status_code == 201
    assert [e["id"] for e in emu.events(MENTEE)] == [retry.json()["id"]]


def test_events_in_a_secondary_calendar(emu: GraphEmulator, http, graph: Graph) -> None:
    # Given a second calendar in the mailbox
    cal = emu.add_calendar(MENTEE, "Mentoring")
    # When calsync creates an event there
    created = http.post(graph.url(f"calendars/{cal}/events"), json=event_body(), headers=graph.headers).json()
    # Then it is listed under that calendar, not under /me/events (the default calendar), yet reachable by id
    in_cal = http.get(graph.url(f"calendars/{cal}/events"), headers=graph.headers).json()["value"]
    assert [e["id"] for e in in_cal] == [created["id"]]
    assert graph.list().json()["value"] == []
    assert graph.get(created["id"]).status_code == 200
    assert [e["id"] for e in emu.events(MENTEE, cal)] == [created["id"]]


def test_transaction_id_dedup_can_be_switched_off(emu: GraphEmulator, graph: Graph) -> None:
    # Given an emulator told not to de-duplicate (to test the extended-property fallback)
    emu.dedupe_transaction_ids = False
    # When the same POST is sent twice
    graph.create(event_body())
    graph.create(event_body())
    # Then two events exist
    assert len(emu.events(MENTEE)) == 2


def test_extended_property_filter_and_expand(emu: GraphEmulator, graph: Graph) -> None:
    # Given two tagged events and one foreign event
    mine = graph.create(event_body("sess-42", "t-42")).json()
    graph.create(event_body("sess-43", "t-43"))
    emu.put_event(MENTEE, {"subject": "Dentist"})

    # When calsync looks an event up by its session tag (value in another case), expanding the tag
    flt = f"singleValueExtendedProperties/Any(ep: ep/id eq '{SESSION_PROP}' and ep/value eq 'SESS-42')"
    found = graph.list(**{"$filter": flt, "$expand": f"singleValueExtendedProperties($filter=id eq '{SESSION_PROP}')"})
    plain = graph.get(mine["id"])

    # Then only that event matches and the tag comes back only when expanded
    [item] = found.json()["value"]
    assert item["id"] == mine["id"]
    assert item["singleValueExtendedProperties"] == [{"id": SESSION_PROP_CANONICAL, "value": "sess-42"}]
    assert "singleValueExtendedProperties" not in plain.json()


def test_patch_merges_and_delete_then_404(emu: GraphEmulator, graph: Graph) -> None:
    # Given a placed event
    event_id = graph.create(event_body()).json()["id"]

    # When calsync reschedules it with a PATCH of the fields it owns, then withdraws it
    patched = graph.patch(event_id, {"start": {"dateTime": "2026-12-02T15:00:00", "timeZone": "America/New_York"},
                                     "end": {"dateTime": "2026-12-02T16:00:00", "timeZone": "America/New_York"}})
    deleted = graph.delete(event_id)
    after = graph.get(event_id)
    again = graph.delete(event_id)

    # Then the PATCH kept what it was not given, the DELETE emptied the calendar, and the id is gone
    assert patched.status_code == 200
    assert patched.json()["subject"] == "Session 2: Setting goals"
    assert patched.json()["start"] == {"dateTime": "2026-12-02T15:00:00.0000000", "timeZone": "America/New_York"}
    assert patched.json()["location"]["displayName"] == "https://zoom.us/j/123456789"
    assert deleted.status_code == 204 and emu.events(MENTEE) == []
    assert after.status_code == 404 and error_code(after) == "ErrorItemNotFound"
    assert again.status_code == 404


def test_patch_after_the_person_deleted_the_event_is_404(emu: GraphEmulator, graph: Graph) -> None:
    # Given a placed event that the person deletes in Outlook (drift)
    event_id = graph.create(event_body()).json()["id"]
    emu.delete_event(MENTEE, event_id)
    # When calsync edits the agenda
    resp = graph.patch(event_id, {"body": {"contentType": "html", "content": "<p>New agenda</p>"}})
    # Then Graph says the item is gone
    assert resp.status_code == 404 and error_code(resp) == "ErrorItemNotFound"


def test_transaction_id_cannot_change_on_patch(emu: GraphEmulator, graph: Graph) -> None:
    # Given an event created with a transactionId
    event_id = graph.create(event_body()).json()["id"]
    # When a PATCH tries to change it
    resp = graph.patch(event_id, {"transactionId": "another"})
    # Then it is refused and nothing changed
    assert resp.status_code == 400
    assert emu.event(MENTEE, event_id)["transactionId"] == "calsync-sess-42-u2"


def test_get_converts_to_utc_unless_prefer_timezone(emu: GraphEmulator, http, graph: Graph) -> None:
    # Given an event written in New York time
    created = graph.create(event_body()).json()
    # When it is read back plainly and with Prefer: outlook.timezone
    plain = graph.get(created["id"]).json()
    london = http.get(graph.url(f"events/{created['id']}"),
                      headers={**graph.headers, "Prefer": 'outlook.timezone="Europe/London"'}).json()
    # Then the POST echoed the written zone, GET uses UTC, and Prefer picks the zone
    assert created["start"] == {"dateTime": "2026-12-01T15:00:00.0000000", "timeZone": "America/New_York"}
    assert plain["start"] == {"dateTime": "2026-12-01T20:00:00.0000000", "timeZone": "UTC"}
    assert london["end"] == {"dateTime": "2026-12-01T21:00:00.0000000", "timeZone": "Europe/London"}
    assert created["body"]["content"].startswith("<html>") and created["bodyPreview"].startswith("Review")


@pytest.mark.parametrize(("body", "message"), [
    (event_body(subjct="typo"), "The property 'subjct' does not exist on type 'microsoft.graph.event'"),
    (event_body(start={"dateTime": "2026-12-01T15:00:00", "timezone": "UTC"}),
     "The property 'timezone' does not exist on type 'microsoft.graph.dateTimeTimeZone'"),
    (event_body(isReminderOn="yes"), "Edm.Boolean"),
    (event_body(showAs="away"), "Requested value 'away' was not found."),
])
def test_bodies_graph_would_reject_are_400_and_create_nothing(emu: GraphEmulator, graph: Graph, body,
                                                              message) -> None:
    # Given a body with a typo, a wrong type or a bad enum
    # When calsync posts it
    resp = graph.create(body)
    # Then Graph's OData reader refuses it and nothing is stored
    assert resp.status_code == 400 and error_code(resp) == "RequestBodyRead"
    assert message in resp.json()["error"]["message"]
    assert emu.events(MENTEE) == []


def test_bad_time_zone_and_reversed_times_are_400(emu: GraphEmulator, graph: Graph) -> None:
    # Given a body with an unknown zone and one ending before it starts
    bad_zone = event_body(start={"dateTime": "2026-12-01T15:00:00", "timeZone": "Mars/Olympus"})
    reversed_ = event_body(end={"dateTime": "2026-12-01T14:00:00", "timeZone": "America/New_York"})
    # When they are posted
    # Then both are refused with Graph's codes
    assert error_code(graph.create(bad_zone)) == "TimeZoneNotSupportedException"
    assert error_code(graph.create(reversed_)) == "ErrorCalendarEndDateIsEarlierThanStartDate"


def test_every_write_records_whether_it_had_attendees(emu: GraphEmulator, graph: Graph) -> None:
    # Given one appointment and one meeting
    appointment = graph.create(event_body(transaction_id="a")).json()
    graph.create(event_body(transaction_id="b", attendees=[
        {"emailAddress": {"address": MENTOR, "name": "Ada"}, "type": "required"}]))
    graph.patch(appointment["id"], {"subject": "Renamed"})
    # When the log is read
    # Then exactly one write carried attendees
    assert emu.count(has_attendees=True) == 1
    assert emu.count(has_attendees=False) == 2


def test_ids_that_are_not_outlook_ids_are_malformed(graph: Graph) -> None:
    # Given a Google-style id
    # When it is used against Graph
    resp = graph.get("sess42u1v3")
    # Then Graph says the id is malformed (400), not that it is missing
    assert resp.status_code == 400 and error_code(resp) == "ErrorInvalidIdMalformed"


def test_list_pages_through_next_link(emu: GraphEmulator, graph: Graph) -> None:
    # Given 12 events
    for i in range(12):
        emu.put_event(MENTEE, {"subject": f"e{i}"})
    # When calsync lists them five at a time following @odata.nextLink
    page = graph.list(**{"$top": "5"}).json()
    subjects = [e["subject"] for e in page["value"]]
    while "@odata.nextLink" in page:
        page = graph.http.get(page["@odata.nextLink"], headers=graph.headers).json()
        subjects += [e["subject"] for e in page["value"]]
    # Then it sees each once, in order
    assert subjects == [f"e{i}" for i in range(12)]


# ---- mailboxes, auth, limits, faults ---------------------------------------------------------


def test_unlicensed_mailbox_and_unknown_user_are_404(emu: GraphEmulator, http) -> None:
    # Given a user without an Exchange licence and an app-only token
    refresh = emu.add_user(MENTEE, licensed=False)
    token = make_app(emu, http).acquire_token_by_refresh_token(refresh, scopes=["Calendars.ReadWrite"])["access_token"]
    unlicensed = Graph(emu, http, token)
    app_token = emu.access_token_for(None, scopes=("Calendars.ReadWrite",))
    # When calsync places events for them and for a user who does not exist
    no_mailbox = unlicensed.create(event_body())
    nobody = Graph(emu, http, app_token, owner="users/ghost@contoso.com").create(event_body())
    # Then Graph answers 404 with the codes that tell the cases apart
    assert no_mailbox.status_code == 404 and error_code(no_mailbox) == "MailboxNotEnabledForRESTAPI"
    assert nobody.status_code == 404 and error_code(nobody) == "ErrorInvalidUser"


def test_missing_or_expired_token_is_401(emu: GraphEmulator, http, graph: Graph) -> None:
    # Given no token, and a token the emulator expired
    anonymous = http.get(graph.url("events"))
    emu.expire_access_tokens()
    expired = graph.list()
    # Then both are 401 InvalidAuthenticationToken
    for resp in (anonymous, expired):
        assert resp.status_code == 401 and error_code(resp) == "InvalidAuthenticationToken"
        assert "WWW-Authenticate" in resp.headers


def test_fifth_concurrent_request_for_a_mailbox_gets_429_with_retry_after(emu: GraphEmulator) -> None:
    # Given slow answers and five workers with their own connections to one mailbox
    with emu.session() as setup:
        token = token_for(emu, setup)
    emu.latency = 0.6
    barrier = threading.Barrier(5)
    results: list[requests.Response] = []

    def worker() -> None:
        with emu.session() as own:
            barrier.wait()
            results.append(Graph(emu, own, token).list())

    # When all five send at once
    threads = [threading.Thread(target=worker) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    # Then four are served and one is throttled for MailboxConcurrency with Retry-After
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 200, 200, 200, 429]
    throttled = next(r for r in results if r.status_code == 429)
    assert error_code(throttled) == "ApplicationThrottled"
    assert "MailboxConcurrency" in throttled.json()["error"]["message"]
    assert int(throttled.headers["Retry-After"]) >= 1
    assert emu.max_in_flight(MENTEE) == 5 and emu.in_flight(MENTEE) == 0


def test_requests_per_mailbox_window_gives_429_until_the_window_frees(emu: GraphEmulator, graph: Graph) -> None:
    # Given a small window on a clock the test moves
    emu.clock = clock = FakeClock()
    emu.expire_access_tokens()
    graph.headers["Authorization"] = "Bearer " + emu.access_token_for(MENTEE)
    emu.requests_per_mailbox_per_window, emu.mailbox_window = 3, 600

    # When a fourth request comes 100 s after the first three
    ok = [graph.list().status_code for _ in range(3)]
    clock.advance(100)
    over = graph.list()
    clock.advance(500)
    later = graph.list()

    # Then it is throttled until the first request leaves the window
    assert ok == [200, 200, 200]
    assert over.status_code == 429 and error_code(over) == "ApplicationThrottled"
    assert over.headers["Retry-After"] == "500"
    assert later.status_code == 200
    assert emu.window_used(MENTEE) == 1


def test_injected_faults_keep_graph_shapes_and_spare_the_token_endpoint(emu: GraphEmulator, http) -> None:
    # Given a 503 with Retry-After and an HTML proxy page queued for the next Graph calls
    graph = Graph(emu, http, token_for(emu, http))
    emu.fail_next(status=503, retry_after=7)
    emu.fail_next(status=502, body="<html><body>Bad gateway</body></html>")

    # When a token is fetched and two Graph calls follow
    fresh = make_app(emu, http).acquire_token_by_refresh_token(emu.add_user(MENTOR), scopes=["Calendars.ReadWrite"])
    unavailable = graph.create(event_body())
    proxy = graph.create(event_body())
    served = graph.create(event_body())

    # Then the token endpoint was untouched, the faults hit Graph, and nothing was created by them
    assert "access_token" in fresh
    assert unavailable.status_code == 503 and unavailable.headers["Retry-After"] == "7"
    assert error_code(unavailable) == "ServiceUnavailable"
    assert proxy.status_code == 502 and proxy.headers["Content-Type"].startswith("text/html")
    assert served.status_code == 201 and len(emu.events(MENTEE)) == 1


def test_token_endpoint_5xx_raises_in_msal_and_is_replayed_within_retry_after(emu: GraphEmulator, http) -> None:
    # Given a 503 with Retry-After queued for the token endpoint
    refresh = emu.add_user(MENTEE)
    emu.fail_next(status=503, path_contains="/oauth2/v2.0/token", retry_after=30)
    app = make_app(emu, http)

    # When MSAL refreshes, and at once again
    with pytest.raises(msal.exceptions.MsalServiceError, match="503"):
        app.acquire_token_by_refresh_token(refresh, scopes=["Calendars.ReadWrite"])
    with pytest.raises(msal.exceptions.MsalServiceError, match="503"):
        app.acquire_token_by_refresh_token(refresh, scopes=["Calendars.ReadWrite"])

    # Then a 5xx is an exception, not an error dict, and MSAL's throttling replayed the cached 503
    # for the second call instead of asking the server (msal/throttled_http_client.py)
    assert emu.count(kind="token") == 1 and emu.count(kind="token", fault="fail") == 1


def test_batch_runs_items_and_refuses_more_than_twenty(emu: GraphEmulator, http, graph: Graph) -> None:
    # Given a batch of two creates and one that depends on a failing GET
    body = {"requests": [
        {"id": "1", "method": "POST", "url": "/me/events", "headers": {"Content-Type": "application/json"},
         "body": event_body(transaction_id="b1")},
        {"id": "2", "method": "GET", "url": f"/me/events/{emu.make_event_id()}"},
        {"id": "3", "method": "POST", "url": "/me/events", "dependsOn": ["2"],
         "headers": {"Content-Type": "application/json"}, "body": event_body(transaction_id="b3")},
    ]}
    # When it is posted, and then a batch of 21
    resp = http.post(f"{emu.graph_url}/$batch", json=body, headers=graph.headers)
    too_big = http.post(f"{emu.graph_url}/$batch", headers=graph.headers, json={"requests": [
        {"id": str(i), "method": "GET", "url": "/me/events"} for i in range(21)]})
    # Then each item has its own status and the dependent one failed; 21 is refused
    statuses = {r["id"]: r["status"] for r in resp.json()["responses"]}
    assert resp.status_code == 200 and statuses == {"1": 201, "2": 404, "3": 424}
    assert len(emu.events(MENTEE)) == 1
    assert too_big.status_code == 400
