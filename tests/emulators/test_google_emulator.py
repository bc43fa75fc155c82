"""The Google Calendar emulator, driven through the real google-api-python-client and google-auth.

What these tests pin down is that the emulator answers the way Google does (as the Calendar API
reference documents it, summarised in the emulator's docstring) for the requests calsync makes, so
provider tests written against it mean something. Raw HTTP (requests) is used only where the real
client cannot express the request.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import google_auth_httplib2
import httplib2
import pytest
import requests
from google.auth.exceptions import RefreshError
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from sync.testing.emulators import FakeClock
from sync.testing.emulators.google import GoogleEmulator

MENTOR = "mentor@example.com"
SESSION_PROP = "calsyncSession"


def make_service(emu: GoogleEmulator, refresh_token: str, *, timeout: float | None = None,
                 endpoint: str | None = None):
    creds = Credentials(token=None, refresh_token=refresh_token, token_uri=emu.token_url,
                        client_id="client-x", client_secret="secret-y")
    options = {"api_endpoint": endpoint or emu.api_endpoint}
    if timeout is None:
        return build("calendar", "v3", credentials=creds, client_options=options, static_discovery=True)
    http = google_auth_httplib2.AuthorizedHttp(creds, http=httplib2.Http(timeout=timeout))
    return build("calendar", "v3", http=http, client_options=options, static_discovery=True)


@pytest.fixture
def service(emu: GoogleEmulator):
    return make_service(emu, emu.add_user(MENTOR))


def event_body(event_id: str | None = "sess42u1v3", session: str = "sess-42", **extra) -> dict:
    body = {
        "summary": "Session 2: Setting goals",
        "start": {"dateTime": "2026-12-01T15:00:00-05:00", "timeZone": "America/New_York"},
        "end": {"dateTime": "2026-12-01T16:00:00-05:00", "timeZone": "America/New_York"},
        "location": "https://zoom.us/j/123456789",
        "description": "<p>Review the mentorship agreement</p>",
        "extendedProperties": {"private": {SESSION_PROP: session, "calsyncVersion": "3"}},
        "source": {"title": "View & edit", "url": "https://platform.example/sessions/sess-42"},
    }
    if event_id is not None:
        body["id"] = event_id
    body.update(extra)
    return body


def insert(service, body: dict, **kw):
    return service.events().insert(calendarId="primary", body=body, sendUpdates="none", **kw).execute()


def http_error(call: Callable[[], object]) -> HttpError:
    with pytest.raises(HttpError) as info:
        call()
    return info.value


# ---- URL form -------------------------------------------------------------------------------


def test_client_needs_the_service_path_in_api_endpoint(emu: GoogleEmulator) -> None:
    # Given a user, and one client pointed at the bare root and one at root + "calendar/v3"
    refresh = emu.add_user(MENTOR)
    bare = make_service(emu, refresh, endpoint=emu.url)
    no_slash = make_service(emu, refresh, endpoint=emu.url + "calendar/v3")

    # When both list the primary calendar
    err = http_error(lambda: bare.events().list(calendarId="primary").execute())
    listed = no_slash.events().list(calendarId="primary").execute()

    # Then api_endpoint replaced the whole base (servicePath not appended): the bare root hits
    # /calendars/... and 404s as on Google, while the service path works with or without "/"
    assert err.status_code == 404
    assert emu.requests(status=404)[0].path == "/calendars/primary/events"
    assert listed["items"] == []
    assert emu.api_endpoint == emu.url + "calendar/v3/"


# ---- events round trip ------------------------------------------------------------------------


def test_insert_get_update_patch_list_delete_round_trip(emu: GoogleEmulator, service) -> None:
    # Given a connected user with an empty primary calendar
    # When calsync places, reschedules (full update), edits (patch) and withdraws a session
    created = insert(service, event_body())
    got = service.events().get(calendarId="primary", eventId="sess42u1v3").execute()
    moved = event_body(start={"dateTime": "2026-12-02T15:00:00-05:00"}, end={"dateTime": "2026-12-02T16:00:00-05:00"})
    moved.pop("location")
    updated = service.events().update(calendarId="primary", eventId="sess42u1v3", body=moved,
                                      sendUpdates="none").execute()
    patched = service.events().patch(calendarId="primary", eventId="sess42u1v3",
                                     body={"description": "<p>New agenda</p>"}, sendUpdates="none").execute()
    listed = service.events().list(calendarId="primary").execute()

    # Then the event is one and the same, with Google's server fields, and update replaced
    # everything (location gone) while patch kept what it was not given
    assert created["id"] == got["id"] == "sess42u1v3" and created["status"] == "confirmed"
    assert created["iCalUID"] == "sess42u1v3@google.com" and created["organizer"]["email"] == MENTOR
    assert updated["start"]["dateTime"] == "2026-12-02T15:00:00-05:00" and "location" not in updated
    assert updated["etag"] != created["etag"] and updated["created"] == created["created"]
    assert patched["description"] == "<p>New agenda</p>" and patched["start"] == updated["start"]
    assert [e["id"] for e in listed["items"]] == ["sess42u1v3"]

    # When it is deleted
    service.events().delete(calendarId="primary", eventId="sess42u1v3", sendUpdates="none").execute()

    # Then the calendar shows nothing, get still answers with status "cancelled", and every
    # write carried sendUpdates=none and no attendees
    assert emu.events(MENTOR) == []
    assert service.events().get(calendarId="primary", eventId="sess42u1v3").execute()["status"] == "cancelled"
    assert [e["status"] for e in emu.all_events(MENTOR)] == ["cancelled"]
    writes = [r for r in emu.request_log if r.kind == "api" and r.method != "GET"]
    assert len(writes) == 4 and {r.send_updates for r in writes} == {"none"}
    assert emu.count(has_attendees=True) == 0


def test_insert_without_id_gets_a_server_id_and_attendees_are_recorded(emu: GoogleEmulator, service) -> None:
    # Given a body without id but with an attendee
    body = event_body(None, attendees=[{"email": "mentee@example.com"}])

    # When it is inserted without sendUpdates
    ev = service.events().insert(calendarId="primary", body=body).execute()

    # Then Google picks a base32hex id, and the log shows attendees and no sendUpdates
    assert len(ev["id"]) >= 5 and set(ev["id"]) <= set("abcdefghijklmnopqrstuv0123456789")
    (write,) = emu.requests(method="POST", kind="api")
    assert write.has_attendees is True and write.send_updates is None


def test_duplicate_id_is_409_even_after_delete(emu: GoogleEmulator, service) -> None:
    # Given an event that was placed
    insert(service, event_body())

    # When the same id is inserted again, and again after the event was deleted
    live = http_error(lambda: insert(service, event_body()))
    service.events().delete(calendarId="primary", eventId="sess42u1v3").execute()
    deleted = http_error(lambda: insert(service, event_body()))

    # Then both answer 409 duplicate with Google's message
    for err in (live, deleted):
        assert err.status_code == 409
        assert err.error_details[0]["reason"] == "duplicate"
        assert err.reason == "The requested identifier already exists."
    assert len(emu.all_events(MENTOR)) == 1


def test_second_delete_is_410_and_unknown_is_404(service) -> None:
    # Given a deleted event
    insert(service, event_body())
    service.events().delete(calendarId="primary", eventId="sess42u1v3").execute()

    # When it is deleted again, and an id that never existed is deleted
    gone = http_error(lambda: service.events().delete(calendarId="primary", eventId="sess42u1v3").execute())
    unknown = http_error(lambda: service.events().delete(calendarId="primary", eventId="nosuchevent").execute())

    # Then Google's 410 deleted and 404 notFound
    assert (gone.status_code, gone.error_details[0]["reason"], gone.reason) == (
        410, "deleted", "Resource has been deleted")
    assert (unknown.status_code, unknown.error_details[0]["reason"]) == (404, "notFound")


def test_updating_a_cancelled_event_is_forbidden_unless_revival_is_configured(emu: GoogleEmulator, service) -> None:
    # Given a deleted event
    insert(service, event_body())
    service.events().delete(calendarId="primary", eventId="sess42u1v3").execute()

    # When it is updated with the default (Google's documentation does not settle it)
    err = http_error(lambda: service.events().update(calendarId="primary", eventId="sess42u1v3",
                                                     body=event_body()).execute())
    # Then 403, as one report says; and with revive_cancelled the update brings it back
    assert (err.status_code, err.error_details[0]["reason"]) == (403, "forbidden")
    emu.revive_cancelled = True
    revived = service.events().update(calendarId="primary", eventId="sess42u1v3", body=event_body()).execute()
    assert revived["status"] == "confirmed" and len(emu.events(MENTOR)) == 1


def test_unknown_calendar_and_unknown_event_are_404(emu: GoogleEmulator, service) -> None:
    # Given a user whose secondary calendar was deleted
    emu.add_calendar(MENTOR, "mentoring@group.calendar.google.com")
    emu.remove_calendar(MENTOR, "mentoring@group.calendar.google.com")

    # When calsync inserts into it, or reads an event that does not exist
    cal = http_error(lambda: service.events().insert(calendarId="mentoring@group.calendar.google.com",
                                                     body=event_body()).execute())
    ev = http_error(lambda: service.events().get(calendarId="primary", eventId="nosuchevent").execute())

    # Then both are 404 notFound, and calendars.get("primary") names the account
    assert cal.status_code == ev.status_code == 404
    assert service.calendars().get(calendarId="primary").execute()["id"] == MENTOR


# ---- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", ["abc", "UPPER12345", "has-dash1", "wxyz12345", "a" * 1025])
def test_invalid_client_ids_are_400(service, bad_id: str) -> None:
    # Given an id outside base32hex or 5..1024 chars
    # When it is inserted
    err = http_error(lambda: insert(service, event_body(bad_id)))
    # Then 400 invalid
    assert (err.status_code, err.error_details[0]["reason"]) == (400, "invalid")


def test_unknown_fields_are_400_naming_the_field(emu: GoogleEmulator, service) -> None:
    # Given bodies with an unknown top-level field, an unknown nested field and a wrong type
    top = event_body(privateNotes="never send this")
    nested = event_body(start={"dateTime": "2026-12-01T15:00:00-05:00", "tz": "UTC"})
    wrong_type = event_body(extendedProperties={"private": {SESSION_PROP: 42}})

    # When each is inserted
    errors = [http_error(lambda b=b: insert(service, b)) for b in (top, nested, wrong_type)]

    # Then each is 400 invalid, the message names the field, and nothing was stored
    assert [e.status_code for e in errors] == [400, 400, 400]
    assert {e.error_details[0]["reason"] for e in errors} == {"invalid"}
    assert "privateNotes" in errors[0].reason
    assert '"tz"' in errors[1].reason and "resource.start" in errors[1].reason
    assert f"resource.extendedProperties.private.{SESSION_PROP}" in errors[2].reason
    assert emu.all_events(MENTOR) == []


def test_times_are_checked_like_google(service) -> None:
    # Given a naive dateTime without timeZone, an unknown zone, and an end before the start
    naive = event_body(start={"dateTime": "2026-12-01T15:00:00"}, end={"dateTime": "2026-12-01T16:00:00"})
    bad_zone = event_body(start={"dateTime": "2026-12-01T15:00:00", "timeZone": "Mars/Olympus"})
    backwards = event_body(end={"dateTime": "2026-12-01T14:00:00-05:00"})

    # When each is inserted
    errors = [http_error(lambda b=b: insert(service, b)) for b in (naive, bad_zone, backwards)]

    # Then required / invalid / timeRangeEmpty
    assert [e.error_details[0]["reason"] for e in errors] == ["required", "invalid", "timeRangeEmpty"]


# ---- list ----------------------------------------------------------------------------------------


def test_list_filters_by_private_extended_property_and_pages(emu: GoogleEmulator, service) -> None:
    # Given three sessions' events and one foreign event, one of calsync's deleted
    for i, sess in enumerate(["sess-1", "sess-2", "sess-2"]):
        insert(service, event_body(f"evt{i}0000", session=sess))
    emu.put_event(MENTOR, {"summary": "dentist", "start": {"date": "2026-12-03"}, "end": {"date": "2026-12-04"}})
    service.events().delete(calendarId="primary", eventId="evt20000").execute()

    # When calsync looks its events up by tag (one constraint, two ANDed, with deleted ones)
    def ids(**kw) -> list[str]:
        return [e["id"] for e in service.events().list(calendarId="primary", **kw).execute()["items"]]

    # Then only matching live events come back, unless showDeleted
    assert ids(privateExtendedProperty=f"{SESSION_PROP}=sess-2") == ["evt10000"]
    assert ids(privateExtendedProperty=f"{SESSION_PROP}=sess-2", showDeleted=True) == ["evt10000", "evt20000"]
    assert ids(privateExtendedProperty=[f"{SESSION_PROP}=sess-1", "calsyncVersion=3"]) == ["evt00000"]
    assert ids(privateExtendedProperty=[f"{SESSION_PROP}=sess-1", "calsyncVersion=4"]) == []
    assert ids(iCalUID="evt00000@google.com") == ["evt00000"]
    assert ids(timeMin="2026-12-02T00:00:00Z") == [emu.events(MENTOR)[-1]["id"]]

    # When the calendar is listed two per page
    first = service.events().list(calendarId="primary", maxResults=2).execute()
    second = service.events().list(calendarId="primary", maxResults=2, pageToken=first["nextPageToken"]).execute()

    # Then the pages cover the three live events once, and the last page carries a sync token
    assert len(first["items"]) == 2 and len(second["items"]) == 1 and "nextSyncToken" in second
    assert len({e["id"] for e in first["items"] + second["items"]}) == 3


# ---- quotas and injected faults ---------------------------------------------------------------


def test_per_user_quota_answers_403_user_rate_limit_until_the_window_slides(emu: GoogleEmulator, service) -> None:
    # Given a per-user quota of 3 per minute on a clock the test moves
    emu.clock = clock = FakeClock()
    emu.quota_per_user_per_minute = 3

    # When the user makes four calls within the minute
    for _ in range(3):
        service.events().list(calendarId="primary").execute()
    err = http_error(lambda: service.events().list(calendarId="primary").execute())

    # Then the fourth is Google's 403 userRateLimitExceeded, without Retry-After
    assert err.status_code == 403
    assert err.error_details[0] == {"domain": "usageLimits", "reason": "userRateLimitExceeded",
                                    "message": "User Rate Limit Exceeded"}
    assert "retry-after" not in err.resp
    assert emu.count(status=403) == 1

    # When 60 s have passed
    clock.advance(60)
    # Then the user is admitted again
    assert service.events().list(calendarId="primary").execute()["items"] == []


def test_project_quota_can_answer_429_with_retry_after(emu: GoogleEmulator) -> None:
    # Given two users, a project quota of 2, 429 answers and a computed Retry-After
    emu.clock = clock = FakeClock()
    emu.quota_per_project_per_minute = 2
    emu.quota_status = 429
    emu.quota_retry_after = "auto"
    a = make_service(emu, emu.add_user("a@example.com"))
    b = make_service(emu, emu.add_user("b@example.com"))

    # When the two users together make three calls, 20 s apart
    a.events().list(calendarId="primary").execute()
    clock.advance(20)
    b.events().list(calendarId="primary").execute()
    clock.advance(20)
    err = http_error(lambda: b.events().list(calendarId="primary").execute())

    # Then the third is 429 rateLimitExceeded and Retry-After says when the oldest slot frees
    assert (err.status_code, err.error_details[0]["reason"]) == (429, "rateLimitExceeded")
    assert err.resp["retry-after"] == "20"


def test_fail_next_injects_500_and_429_with_retry_after(emu: GoogleEmulator, service) -> None:
    # Given a 500 and then a 429 with Retry-After queued
    emu.fail_next(1, 500)
    emu.fail_next(1, 429, retry_after=7)

    # When calsync inserts three times
    e500 = http_error(lambda: insert(service, event_body()))
    e429 = http_error(lambda: insert(service, event_body()))
    ok = insert(service, event_body())

    # Then the faults came in order without touching state, and the header is on HttpError.resp
    assert (e500.status_code, e500.error_details[0]["reason"]) == (500, "backendError")
    assert (e429.status_code, e429.error_details[0]["reason"]) == (429, "rateLimitExceeded")
    assert e429.resp["retry-after"] == "7"
    assert ok["id"] == "sess42u1v3" and len(emu.events(MENTOR)) == 1
    assert emu.count(fault="fail") == 2


def test_fail_next_can_answer_a_non_json_page(emu: GoogleEmulator, service) -> None:
    # Given a proxy's HTML error page queued for the next insert
    emu.fail_next(1, 502, body="<html>Bad Gateway</html>", path_contains="/events")
    # When calsync inserts
    err = http_error(lambda: insert(service, event_body()))
    # Then the client sees a 502 whose body is not JSON
    assert err.status_code == 502 and err.content == b"<html>Bad Gateway</html>"


def test_revoked_refresh_token_raises_refresh_error_invalid_grant(emu: GoogleEmulator) -> None:
    # Given a user who used calsync, then revoked its access
    refresh = emu.add_user(MENTOR)
    service = make_service(emu, refresh)
    service.events().list(calendarId="primary").execute()
    emu.revoke(refresh)

    # When calsync calls again (its access token died with the grant: 401, refresh, invalid_grant)
    with pytest.raises(RefreshError) as info:
        service.events().list(calendarId="primary").execute()

    # Then google-auth reports invalid_grant, not retryable
    assert "invalid_grant" in str(info.value) and info.value.retryable is False
    assert emu.count(kind="token", status=400) == 1 and emu.count(kind="api", status=401) == 1


def test_lost_response_client_sees_connection_error_yet_event_exists(emu: GoogleEmulator, service) -> None:
    # Given the next response is lost after the insert was applied
    emu.lose_next_response(1)

    # When calsync inserts
    with pytest.raises(ConnectionError):
        insert(service, event_body())

    # Then the event exists exactly once, and a retry of the insert answers 409
    assert [e["id"] for e in emu.events(MENTOR)] == ["sess42u1v3"]
    assert http_error(lambda: insert(service, event_body())).status_code == 409


def test_cleanly_closed_lost_response_is_resent_by_httplib2_and_surfaces_as_409(emu: GoogleEmulator, service) -> None:
    # Given the next response is lost and the connection closed cleanly (FIN, not RST)
    emu.lose_next_response(1, reset=False)

    # When calsync inserts once
    err = http_error(lambda: insert(service, event_body()))

    # Then httplib2 re-sent the POST by itself, so the caller sees the duplicate's 409
    assert err.status_code == 409
    assert [r.status for r in emu.requests(kind="api")] == [200, 409]
    assert len(emu.events(MENTOR)) == 1


def test_timeout_applies_the_write_but_answers_too_late(emu: GoogleEmulator) -> None:
    # Given a client with a 0.3 s socket timeout and a 1 s delay queued
    service = make_service(emu, emu.add_user(MENTOR), timeout=0.3)
    emu.timeout_next(1, 1.0)

    # When calsync inserts
    with pytest.raises(TimeoutError):
        insert(service, event_body())

    # Then the write landed although the client gave up
    assert len(emu.events(MENTOR)) == 1


def test_expired_access_token_is_401_and_the_client_refreshes_by_itself(emu: GoogleEmulator, service) -> None:
    # Given a working client whose access token the server then forgets
    service.events().list(calendarId="primary").execute()
    emu.expire_access_tokens()

    # When it calls again
    service.events().list(calendarId="primary").execute()

    # Then it got a 401, refreshed and retried transparently
    assert [r.status for r in emu.request_log] == [200, 200, 401, 200, 200]
    assert emu.count(kind="token") == 2


def test_api_call_without_bearer_token_is_401_auth_error(emu: GoogleEmulator) -> None:
    # Given a user
    emu.add_user(MENTOR)
    # When a request carries no token
    resp = requests.get(emu.api_endpoint + "calendars/primary/events", timeout=5)
    # Then 401 authError in Google's error shape
    body = resp.json()["error"]
    assert resp.status_code == 401 and body["code"] == 401
    assert body["errors"][0]["reason"] == "authError"


def test_concurrent_inserts_of_one_id_create_one_event(emu: GoogleEmulator) -> None:
    # Given eight workers with their own clients
    refresh = emu.add_user(MENTOR)
    services = [make_service(emu, refresh) for _ in range(8)]
    results: list[int] = []

    def place(svc) -> None:
        try:
            insert(svc, event_body())
            results.append(200)
        except HttpError as e:
            results.append(e.status_code)

    # When they insert the same event at once
    threads = [threading.Thread(target=place, args=(s,)) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    # Then exactly one succeeded and the calendar holds one event
    assert sorted(results) == [200] + [409] * 7
    assert len(emu.events(MENTOR)) == 1


# ---- consent and code exchange ---------------------------------------------------------------


def consent(emu: GoogleEmulator, verifier: str, **extra: str) -> dict[str, list[str]]:
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    params = {"client_id": "client-x", "redirect_uri": "http://localhost:8080/cb", "response_type": "code",
              "scope": "https://www.googleapis.com/auth/calendar.events.owned email", "state": "signed-state",
              "code_challenge": challenge, "code_challenge_method": "S256", "login_hint": MENTOR,
              "access_type": "offline"}
    params.update(extra)
    resp = requests.get(emu.auth_url, params=params, allow_redirects=False, timeout=5)
    assert resp.status_code == 302
    location = resp.headers["Location"]
    assert location.startswith("http://localhost:8080/cb?")
    return parse_qs(urlsplit(location).query)


def exchange(emu: GoogleEmulator, code: str, verifier: str) -> requests.Response:
    return requests.post(emu.token_url, timeout=5, data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier, "client_id": "client-x",
        "client_secret": "secret-y", "redirect_uri": "http://localhost:8080/cb"})


def test_consent_redirects_with_code_and_pkce_exchange_gives_working_tokens(emu: GoogleEmulator) -> None:
    # Given a user and a PKCE verifier
    emu.add_user(MENTOR)
    verifier = secrets.token_urlsafe(48)

    # When the consent page is visited and the code exchanged with the wrong, then the right verifier
    query = consent(emu, verifier)
    wrong = exchange(emu, query["code"][0], "not-the-verifier")
    right = exchange(emu, query["code"][0], verifier)

    # Then the redirect carried code and state; the wrong verifier is invalid_grant
    assert query["state"] == ["signed-state"]
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    tokens = right.json()
    assert right.status_code == 200 and tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600
    assert "id_token" not in tokens

    # And userinfo names the account (email scope); the tokens drive the real client for events,
    # but calendar.events.owned does not cover calendars.get (discovery doc scopes), as on Google
    info = requests.get(emu.userinfo_url, headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=5)
    assert info.json()["email"] == MENTOR
    service = make_service(emu, tokens["refresh_token"])
    assert insert(service, event_body())["organizer"]["email"] == MENTOR
    denied = http_error(lambda: service.calendars().get(calendarId="primary").execute())
    assert (denied.status_code, denied.error_details[0]["reason"]) == (403, "insufficientPermissions")

    # And the code cannot be used twice
    assert exchange(emu, query["code"][0], verifier).json()["error"] == "invalid_grant"


def test_second_consent_gets_no_refresh_token_unless_prompt_consent(emu: GoogleEmulator) -> None:
    # Given a user who already granted offline access to the client
    emu.add_user(MENTOR)
    verifier = secrets.token_urlsafe(48)
    first = exchange(emu, consent(emu, verifier)["code"][0], verifier).json()

    # When they consent again, without and then with prompt=consent
    again = exchange(emu, consent(emu, verifier)["code"][0], verifier).json()
    forced = exchange(emu, consent(emu, verifier, prompt="consent")["code"][0], verifier).json()

    # Then only the first and the forced consent carry a refresh token, as on Google
    assert "refresh_token" in first and "refresh_token" not in again and "refresh_token" in forced


def test_consent_denied_redirects_with_access_denied(emu: GoogleEmulator) -> None:
    # Given a user who will press "Cancel"
    emu.add_user(MENTOR)
    emu.consent_decision = "deny"
    # When the consent page is visited
    query = consent(emu, "v" * 43)
    # Then the redirect carries error=access_denied and the state
    assert query["error"] == ["access_denied"] and query["state"] == ["signed-state"]
