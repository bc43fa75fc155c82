"""The connect flow over real HTTP: a link from the API, the person's pages, the provider's consent, the callback.

The app is served on a loopback port (tests.support.http.serving) over a runtime on SQLite and
PostgreSQL; the provider is its emulator (Google on http, Graph on https with its own CA). A
``requests.Session`` is one browser: it keeps the ``calsync_connect`` cookie the link page sets,
and a second session is another browser. Every refusal is checked three ways: its status and
page, nothing stored (the integrations table, the link unspent), and no token, code or state in
any log line written while serving.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import update

from sync import accounts
from sync.http.pages import CSP
from sync.store.db import utcnow
from sync.store.models import ConnectLink
from tests.http.connect_rig import MENTEE, MENTOR, RETURN_HOST, TITLE, Rig, connect_rig, leaks

PROVIDERS = ["google", "outlook"]
COOKIE = "calsync_connect"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log line at the level ``calsync serve`` runs (INFO), and calsync's and uvicorn's own at DEBUG.

    Libraries are not raised to DEBUG: msal's DEBUG lines quote the (already exchanged) authorization
    code, and ``calsync serve`` configures INFO for that reason among others.
    """
    caplog.set_level(logging.INFO)
    for name in ("sync", "uvicorn", "fastapi", "starlette"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


@pytest.fixture(params=PROVIDERS)
def rig(request: pytest.FixtureRequest, db_url: str, tmp_path: Path):
    with connect_rig(db_url, tmp_path, request.param) as r:
        yield r


@pytest.fixture
def google(db_url: str, tmp_path: Path):
    """For refusals that do not depend on the provider: Google only, on SQLite and PostgreSQL."""
    with connect_rig(db_url, tmp_path, "google") as r:
        yield r


def token_of(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[1]


def assert_strict_page(answer: requests.Response) -> None:
    """An HTML page that runs and loads nothing: the CSP forbids everything, and the page has no script."""
    assert answer.headers["Content-Security-Policy"] == CSP
    policy = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    for directive in ("default-src", "script-src", "style-src", "img-src", "base-uri", "form-action",
                      "frame-ancestors"):
        assert policy[directive] == "'none'", directive
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["Content-Type"].startswith("text/html")
    lowered = answer.text.lower()
    assert "<script" not in lowered and "<form" not in lowered and "<style" not in lowered
    assert re.search(r"<[^>]*\son[a-z]+\s*=", lowered) is None  # no event handler attribute


def start(rig: Rig, browser: requests.Session, url: str, provider: str | None = None) -> str:
    """The person opens their link and picks the provider: the consent URL the app sends them to."""
    answer = browser.get(url, params={"provider": provider or rig.provider.name}, allow_redirects=False,
                         timeout=10)
    assert answer.status_code == 303, answer.text
    assert answer.headers["Content-Security-Policy"] == CSP
    return answer.headers["Location"]


def back(browser: requests.Session, callback: str) -> requests.Response:
    return browser.get(callback, allow_redirects=False, timeout=10)


def secrets_in(*urls: str) -> list[str]:
    """The link tokens, codes and states in ``urls``: what no log line may hold."""
    found = []
    for url in urls:
        parts = urlsplit(url)
        if "/connect/" in parts.path:
            found.append(token_of(url))
        query = parse_qs(parts.query)
        found += query.get("code", []) + query.get("state", [])
    return found


def assert_nothing_connected(rig: Rig) -> None:
    assert rig.integrations() == []
    assert all(link.used_at is None for link in rig.links())


# -- the whole flow ----------------------------------------------------------------------------------


def test_a_link_connects_the_person_and_their_invite_is_cancelled_once(rig: Rig, logs):
    # Given a session the mentor was mailed an invite for, because nobody is connected
    rig.book()
    assert rig.invites(MENTOR) == [("REQUEST", 0)]
    # When the platform asks for a connect link and the mentor opens it
    url = rig.new_link("u-1")
    browser = requests.Session()
    choice = browser.get(url, timeout=10)
    # Then they see the provider choice: a plain page, no JavaScript, under a CSP that allows nothing
    assert choice.status_code == 200
    assert_strict_page(choice)
    assert f'href="/connect/{token_of(url)}?provider={rig.provider.name}"' in choice.text
    # When they pick their provider, they are sent to its consent page, and this browser is remembered
    consent_url = start(rig, browser, url)
    [cookie] = [c for c in browser.cookies if c.name == COOKIE]
    assert cookie.path == "/oauth/" and cookie.has_nonstandard_attr("HttpOnly")
    # When they agree there, and the provider sends the browser back to calsync
    callback = rig.consent(consent_url)
    assert callback.startswith(f"{rig.base}/oauth/{rig.provider.name}/callback?")
    done = back(browser, callback)
    # Then the "connected" page, and the person is connected with the account they consented with
    assert done.status_code == 200, done.text
    assert_strict_page(done)
    assert "Connected" in done.text
    assert rig.integrations() == [("u-1", rig.provider.name, MENTOR, "active")]
    assert COOKIE not in browser.cookies
    # And their session was queued; once the worker ran it, the event is on their calendar and the
    # old emailed invite got a CANCEL: one copy, never two
    assert "sess-42" in rig.drain()
    assert rig.provider.titles(MENTOR) == [TITLE]
    assert rig.invites(MENTOR) == [("REQUEST", 0), ("CANCEL", 1)]
    assert rig.invites(MENTEE) == [("REQUEST", 0)]
    # And running it again changes nothing
    rig.drain()
    from tests.support.factories import reconcile_due

    reconcile_due(rig.rt, "sess-42")
    assert rig.provider.titles(MENTOR) == [TITLE]
    assert rig.invites(MENTOR) == [("REQUEST", 0), ("CANCEL", 1)]
    # And the link is spent: opening it again is a 410 page, and so is picking a provider on it
    again = browser.get(url, timeout=10)
    assert again.status_code == 410 and "already used" in again.text
    assert_strict_page(again)
    assert browser.get(url, params={"provider": rig.provider.name}, allow_redirects=False,
                       timeout=10).status_code == 410
    # And replaying the callback connects nothing more
    assert back(browser, callback).status_code == 404
    assert rig.integrations() == [("u-1", rig.provider.name, MENTOR, "active")]
    # And no log line written while serving holds the link's token, the code or the state
    assert leaks(logs.records, *secrets_in(url, callback)) == []
    assert any(r.name == "sync.http.access" for r in logs.records)  # the logs were captured at all


def test_a_link_naming_its_provider_goes_straight_to_consent_and_back_to_return_to(google: Rig, logs):
    # Given a link for Google that sends the browser back to the platform
    rig = google
    rig.book()
    back_to = f"https://{RETURN_HOST}/settings/calendar?done=1"
    url = rig.new_link("u-1", provider="google", return_to=back_to)
    browser = requests.Session()
    # When the mentor opens it: no choice, straight to Google
    opened = browser.get(url, allow_redirects=False, timeout=10)
    assert opened.status_code == 303 and opened.headers["Location"].startswith(rig.provider.emu.auth_url)
    # And after consenting, the callback sends them back where the platform asked
    done = back(browser, rig.consent(opened.headers["Location"]))
    assert done.status_code == 303 and done.headers["Location"] == back_to
    assert done.headers["Content-Security-Policy"] == CSP
    assert rig.integrations() == [("u-1", "google", MENTOR, "active")]
    rig.drain()
    assert rig.invites(MENTOR) == [("REQUEST", 0), ("CANCEL", 1)]


# -- refused -------------------------------------------------------------------------------------------


def test_a_replayed_link_is_a_410_page_and_starts_no_consent(google: Rig, logs):
    # Given a link that already connected the mentor
    rig = google
    url = rig.new_link("u-1")
    browser = requests.Session()
    assert back(browser, rig.consent(start(rig, browser, url))).status_code == 200
    # When it is opened again, in another browser, to connect someone else's account
    rig.provider.emu.consent_user = MENTEE
    replay = requests.Session()
    answer = replay.get(url, params={"provider": "google"}, allow_redirects=False, timeout=10)
    # Then a 410 page, no consent started and no cookie handed out
    assert answer.status_code == 410 and "already used" in answer.text
    assert_strict_page(answer)
    assert COOKIE not in replay.cookies
    [link] = rig.links()
    assert link.state is None
    assert rig.integrations() == [("u-1", "google", MENTOR, "active")]
    assert leaks(logs.records, *secrets_in(url)) == []


def test_an_expired_link_is_a_410_page(google: Rig, logs):
    rig = google
    url = rig.new_link("u-1")
    with rig.rt.store.tx() as db:
        db.execute(update(ConnectLink).values(expires_at=utcnow()))
    browser = requests.Session()
    for params in ({}, {"provider": "google"}):
        answer = browser.get(url, params=params, allow_redirects=False, timeout=10)
        assert answer.status_code == 410 and "expired" in answer.text
        assert_strict_page(answer)
    assert COOKIE not in browser.cookies
    assert [link.state for link in rig.links()] == [None]
    assert_nothing_connected(rig)
    assert leaks(logs.records, *secrets_in(url)) == []


def test_a_link_that_expires_during_the_consent_connects_nobody(google: Rig, logs):
    # Given the mentor opened the link in time and is on Google's page
    rig = google
    url = rig.new_link("u-1")
    browser = requests.Session()
    callback = rig.consent(start(rig, browser, url))
    # When the link expires before they come back
    with rig.rt.store.tx() as db:
        db.execute(update(ConnectLink).values(expires_at=utcnow()))
    answer = back(browser, callback)
    # Then a 410 page, and nobody is connected
    assert answer.status_code == 410 and "expired" in answer.text
    assert_nothing_connected(rig)
    assert leaks(logs.records, *secrets_in(url, callback)) == []


def forgeries(rig: Rig, token: str) -> dict[str, str]:
    """Tokens that are not a link calsync handed out, each a different way."""
    from sync.accounts.links import _keys, _sign

    link_id, mac = token.split(".")
    flipped = mac[:-1] + ("0" if mac[-1] != "0" else "1")
    other_id = link_id[:-1] + ("A" if link_id[-1] != "A" else "B")
    return {
        "altered signature": f"{link_id}.{flipped}",
        "altered id": f"{other_id}.{mac}",
        "no signature": link_id,
        "empty signature": f"{link_id}.",
        "signed under another key": f"{link_id}.{_sign(b'k' * 32, link_id)}",
        # Signed with calsync's own key, but no such link was ever handed out.
        "unknown id": f"{other_id}.{_sign(_keys(rig.rt)[0], other_id)}",
        "the signature alone": mac,
    }


def test_a_forged_or_altered_link_is_a_404_page(google: Rig, logs):
    rig = google
    url = rig.new_link("u-1")
    for name, forged in forgeries(rig, token_of(url)).items():
        browser = requests.Session()
        for params in ({}, {"provider": "google"}):
            answer = browser.get(f"{rig.base}/connect/{forged}", params=params, allow_redirects=False, timeout=10)
            assert answer.status_code == 404, (name, answer.status_code)
            assert "not valid" in answer.text, name
            assert_strict_page(answer)
        assert COOKIE not in browser.cookies, name
    # Nothing started: the genuine link has no consent in progress, and nobody is connected
    assert [link.state for link in rig.links()] == [None]
    assert_nothing_connected(rig)
    assert leaks(logs.records, *secrets_in(url)) == []


@pytest.mark.parametrize("return_to", [
    "https://evil.example/phish",
    f"https://{RETURN_HOST}.evil.example/",
    f"https://evil.example/?next=https://{RETURN_HOST}/",
    f"javascript://{RETURN_HOST}/%0aalert(1)",
    f"//{RETURN_HOST}/relative",
    f"https://{RETURN_HOST}/\r\nSet-Cookie: x=1",
])
def test_the_api_refuses_a_return_to_off_the_allowed_hosts_and_stores_no_link(google: Rig, return_to: str):
    rig = google
    answer = rig.api("POST", "/v1/people/u-1/connect-links", json={"return_to": return_to})
    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["errors"]] == ["return_to"]
    assert rig.links() == []


def test_a_callback_in_another_browser_or_for_another_person_connects_nobody(rig: Rig, logs):
    # Given the mentor and the mentee each opened their own link in their own browser
    mentor_url, mentee_url = rig.new_link("u-1"), rig.new_link("u-2")
    mentors, mentees = requests.Session(), requests.Session()
    mentor_consent = start(rig, mentors, mentor_url)
    start(rig, mentees, mentee_url)
    # And the mentor agreed at the provider: their callback carries their code and state
    callback = rig.consent(mentor_consent)
    # When that callback arrives in the mentee's browser (holding the mentee's link cookie),
    # or in a browser that opened no link at all, or one whose cookie was forged to the mentor's link id
    strangers = {"another person's browser": mentees, "a browser without the cookie": requests.Session()}
    forged = requests.Session()
    forged.cookies.set(COOKIE, "not-the-link-id", domain=urlsplit(rig.base).hostname, path="/oauth/")
    strangers["a browser with a made-up cookie"] = forged
    for name, browser in strangers.items():
        answer = back(browser, callback)
        # Then it is refused, and nobody is connected: neither the mentor nor the mentee
        assert answer.status_code == 404, (name, answer.text)
        assert "another browser" in answer.text, name
        assert_strict_page(answer)
        assert_nothing_connected(rig)
    # And the refusals spent nothing: in the mentor's own browser the same callback still connects them
    assert back(mentors, callback).status_code == 200
    assert rig.integrations() == [("u-1", rig.provider.name, MENTOR, "active")]
    assert leaks(logs.records, *secrets_in(mentor_url, mentee_url, callback)) == []


def test_consent_refused_at_the_provider_is_a_plain_page_and_stores_nothing(rig: Rig, logs):
    # Given the mentor opened their link and says no on the provider's page
    url = rig.new_link("u-1")
    browser = requests.Session()
    rig.provider.emu.consent_decision = "deny"
    callback = rig.consent(start(rig, browser, url))
    assert parse_qs(urlsplit(callback).query)["error"] == ["access_denied"]
    # When the browser comes back
    answer = back(browser, callback)
    # Then a plain page saying nothing changed, and nothing is stored
    assert answer.status_code == 400
    assert_strict_page(answer)
    assert "did not give calsync access" in answer.text
    assert_nothing_connected(rig)
    # And the link still works: they can change their mind
    rig.provider.emu.consent_decision = "allow"
    assert back(browser, rig.consent(start(rig, browser, url))).status_code == 200
    assert rig.integrations() == [("u-1", rig.provider.name, MENTOR, "active")]
    assert leaks(logs.records, *secrets_in(url, callback)) == []


def test_a_consent_that_started_from_no_link_connects_nobody(rig: Rig, logs):
    # Given a consent for the mentor that support started at a terminal (no link), agreed to
    state_url, _ = accounts.connect_url(rig.rt, "u-1", rig.provider.name)
    callback = rig.consent(state_url)
    # And a browser that holds a genuine link cookie of the same person
    url = rig.new_link("u-1")
    browser = requests.Session()
    start(rig, browser, url)
    # When that consent's callback arrives at the web callback, in that browser or in one without a cookie
    for who in (browser, requests.Session()):
        answer = back(who, callback)
        # Then it is refused and nobody is connected
        assert answer.status_code == 404, answer.text
        assert "did not start from a connect link" in answer.text
        assert_nothing_connected(rig)
    assert leaks(logs.records, *secrets_in(url, callback)) == []


def test_a_callback_without_state_or_with_a_made_up_one_connects_nobody(google: Rig, logs):
    rig = google
    url = rig.new_link("u-1")
    browser = requests.Session()
    callback = rig.consent(start(rig, browser, url))
    code = parse_qs(urlsplit(callback).query)["code"][0]
    cb = f"{rig.base}/oauth/google/callback"
    for params in ({"code": code}, {"code": code, "state": ""}, {"code": code, "state": "made.up"}):
        answer = browser.get(cb, params=params, allow_redirects=False, timeout=10)
        assert answer.status_code == 404, (params, answer.text)
        assert_strict_page(answer)
    assert_nothing_connected(rig)
    assert leaks(logs.records, *secrets_in(url, callback)) == []


def test_a_provider_calsync_has_no_client_for_is_a_plain_page_not_json(google: Rig, logs):
    # Given a deployment with only Google set up, and links that ask for Outlook (the API may hand
    # them out before the Microsoft client is configured)
    rig = google
    named = rig.new_link("u-1", provider="outlook")
    chosen = f"{rig.new_link('u-2')}?provider=outlook"
    for url in (named, chosen):
        browser = requests.Session()
        answer = browser.get(url, allow_redirects=False, timeout=10)
        # Then the person gets a plain page saying so (it was a JSON error), no consent starts, nothing is stored
        assert answer.status_code == 503, answer.text
        assert_strict_page(answer)
        assert "cannot be connected here" in answer.text
        assert COOKIE not in browser.cookies
    assert [link.state for link in rig.links()] == [None, None]
    assert_nothing_connected(rig)
    # And the operator's log says what is missing, without the link
    assert any("CALSYNC_MS_CLIENT_ID" in r.getMessage() for r in logs.records if r.name == "sync.http.connect")
    assert leaks(logs.records, *secrets_in(named, chosen)) == []


def test_the_link_cookie_is_secure_when_people_reach_calsync_over_https(db_url: str, tmp_path: Path):
    # Given calsync behind a TLS proxy: people use https://, the proxy talks http to calsync
    with connect_rig(db_url, tmp_path, "google", public_url="https://calsync.example") as rig:
        url = rig.new_link("u-1")
        assert url.startswith("https://calsync.example/connect/")
        answer = requests.get(rig.base + urlsplit(url).path, params={"provider": "google"}, allow_redirects=False,
                              timeout=10)
    # Then the cookie that binds the consent to this browser is only ever sent over https
    assert answer.status_code == 303
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "; secure" in cookie.lower() and "httponly" in cookie.lower()
